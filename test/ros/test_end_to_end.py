"""Sensor topics -> inspection_node -> reject_gate: a planted defect is found where it was
planted and rejected, a good part passes, every output carries the RGB stamp and frame."""
from __future__ import annotations

import json

import numpy as np
from zsg_ros_testkit import diag_values

from zsg_iad_ros.data.synthetic import generate_sample
from zsg_iad_ros.msg import AnomalyReport, PartDecision
from zsg_iad_ros.ros import conversions as conv

CATEGORY, SIZE = "brushed_metal", 128


def _send(g, t, sample):
    f = sample.frame
    info = conv.intrinsics_to_camera_info(f.intrinsics)
    g.publish(t, f.rgb, f.sensor, f.points, camera_info=info, cloud_frame_id="depth_optical")
    return g.wait_report(t, timeout=60.0)


def test_planted_defect_rejected_where_planted_and_good_part_passes(make_graph):
    # A long missing_timeout_s: the health check at the end must not depend on how long the
    # machine took to get there (no input arrives after the last part).
    g = make_graph({"allow_missing_modalities": False, "missing_timeout_s": 120.0},
                   with_gate=True)
    # A few good parts fill the stream memory and score history (the detector is unsure on a
    # cold start: it needs min_history scored parts, each against at least 2 memory parts).
    for k in range(8):
        _send(g, 1.0 + k, generate_sample(CATEGORY, "good", 100 + k, size=SIZE))
    defect = generate_sample(CATEGORY, "hole", 8, size=SIZE)
    good = generate_sample(CATEGORY, "good", 200, size=SIZE)
    r_def, r_good = _send(g, 10.0, defect), _send(g, 11.0, good)

    # defective part: anomalous, mask and regions where the hole was planted
    assert r_def.status == AnomalyReport.STATUS_ANOMALOUS
    assert r_def.pred_score >= r_def.threshold
    mask = conv.image_to_numpy(g.at("mask", 10.0)[0]) > 0
    assert mask[defect.gt_mask].mean() > 0.8  # the planted hole lies inside the predicted mask
    assert abs(mask.mean() - r_def.mask_area_fraction) < 1e-6
    gv, gu = np.argwhere(defect.gt_mask).mean(axis=0)
    hit = [r for r in r_def.regions if r.bbox.x_offset <= gu < r.bbox.x_offset + r.bbox.width
           and r.bbox.y_offset <= gv < r.bbox.y_offset + r.bbox.height]
    assert hit, "no reported region covers the planted defect"
    assert hit[0].has_centroid_3d and hit[0].centroid_3d.header.frame_id == "depth_optical"
    z = defect.frame.points[..., 2]
    assert np.nanmin(z) - 1e-3 <= hit[0].centroid_3d.point.z <= np.nanmax(z) + 1e-3
    report = json.loads(r_def.report_json)
    assert report["schema_version"] == r_def.report_schema_version
    assert report["decision"] == "anomalous" and len(report["defects"]) == len(r_def.regions)
    assert r_def.report_valid == all(c.passed for c in r_def.rule_checks) and r_def.rule_checks
    amap = conv.image_to_numpy(g.at("anomaly_map", 10.0)[0])
    assert amap.dtype == np.float32 and amap[defect.gt_mask].mean() > amap[~mask].mean()

    # good part: normal, nothing masked
    assert r_good.status == AnomalyReport.STATUS_NORMAL and not r_good.regions
    assert not (conv.image_to_numpy(g.at("mask", 11.0)[0]) > 0).any()

    # every output carries the RGB header
    for key in ("mask", "anomaly_map", "overlay"):
        for t in (10.0, 11.0):
            (m,) = g.at(key, t)
            assert m.header.frame_id == "cam_optical"
    assert r_def.header.frame_id == "cam_optical"

    # reject_gate: the hole (non-repairable) rejects the part, the good one passes
    assert g.wait(lambda: g.at("decision", 10.0) and g.at("decision", 11.0), 10.0)
    d_def, d_good = g.at("decision", 10.0)[0], g.at("decision", 11.0)[0]
    assert d_def.decision == PartDecision.DECISION_REJECT and d_def.regions
    assert d_def.header.frame_id == "cam_optical"
    assert d_good.decision == PartDecision.DECISION_PASS and not d_good.regions

    acc = g.settle()
    assert acc["frames_received"] == acc["frames_processed"] == 10 and acc["frames_dropped"] == 0
    assert g.wait(lambda: g.messages("diagnostics") and diag_values(
        g.messages("diagnostics")[-1]).get("pipeline/frames_processed") == "10", 5.0)
    assert diag_values(g.messages("diagnostics")[-1])["modalities/geometry"] == "ok"
