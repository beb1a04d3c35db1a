"""The inspection node on a real rclpy graph over Fast DDS: stamps, content, drops, health."""
from __future__ import annotations

import json

import numpy as np
import pytest
from zsg_ros_testkit import diag_values, good_part, header
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from zsg_iad_ros.msg import AnomalyReport
from zsg_iad_ros.ros import conversions as conv


def _check_outputs_share_stamp(g, t, shape):
    r = g.wait_report(t)
    assert g.wait(lambda: any(conv.stamp_to_ns(m.header.stamp) == conv.stamp_to_ns(r.header.stamp)
                              for m in g.messages("anomaly_map")))
    stamp = conv.stamp_to_ns(r.header.stamp)
    for key, enc in (("mask", "mono8"), ("anomaly_map", "32FC1"), ("overlay", "rgb8")):
        assert g.wait(lambda: [m for m in g.messages(key)
                               if conv.stamp_to_ns(m.header.stamp) == stamp]), key
        m = [m for m in g.messages(key) if conv.stamp_to_ns(m.header.stamp) == stamp][0]
        assert m.header.frame_id == r.header.frame_id == "cam_optical"
        assert m.encoding == enc and (m.height, m.width) == shape
    return r


def test_bad_inputs_are_counted_and_good_frames_still_served(make_graph):
    g = make_graph({"allow_missing_modalities": True, "missing_timeout_s": 30.0})
    rgb, sensor, points, _ = good_part(64)
    g.publish(1.0, rgb, sensor, points)
    _check_outputs_share_stamp(g, 1.0, (64, 64))

    bad_rgb = conv.numpy_to_image(rgb, "rgb8", header(2.0))
    bad_rgb.encoding = "yuv422"
    g.publish(2.0, bad_rgb, sensor, points)                       # rgb: unsupported encoding
    trunc = conv.numpy_to_image(rgb, "rgb8", header(3.0))
    trunc.data = trunc.data[:-10]
    g.publish(3.0, trunc, sensor, points)                         # rgb: truncated
    nan = np.full_like(points, np.nan)
    g.publish(4.0, rgb, sensor, nan)                              # depth: no finite point
    g.publish(5.0, rgb, np.zeros((32, 32), np.float32), points)   # sensor: other resolution
    no_xyz = conv.xyz_to_pointcloud2(points, header(6.0))
    no_xyz.fields[2].name = "w"
    g.publish(6.0, rgb, sensor, no_xyz)                           # depth: lacks z (never syncs)
    g.publish(7.0, rgb, sensor, points)                           # good again
    r7 = _check_outputs_share_stamp(g, 7.0, (64, 64))
    g.publish(0.5, rgb, sensor, points)                           # older than served: dropped
    g.publish(8.0, rgb, sensor, points, rgb_encoding="bgr8")      # good, bgr8 input

    r8 = g.wait_report(8.0)
    r4, r5 = g.wait_report(4.0), g.wait_report(5.0)
    present = lambda r: {m.name: m.present for m in r.modality_scores}  # noqa: E731
    assert present(r4) == {"rgb": True, "sensor": True, "geometry": False}
    assert present(r5) == {"rgb": True, "sensor": False, "geometry": True}
    assert present(r7) == {"rgb": True, "sensor": True, "geometry": True}
    assert all(present(r8).values())
    acc = g.settle()
    drops = g.node.drop_counts()
    assert drops["frames"]["rgb:unsupported_encoding"] == 1
    assert drops["frames"]["rgb:truncated"] == 1
    assert drops["frames"]["rgb:out_of_order"] == 1
    assert drops["frames"]["rgb:unsynchronized"] == 1  # the rgb at 6.0 whose cloud was refused
    assert drops["inputs"]["geometry:missing_xyz_fields"] == 1
    assert drops["degraded"] == {"geometry:no_finite_points": 1, "sensor:resolution_mismatch": 1}
    assert acc["frames_received"] == 9
    assert acc["frames_processed"] == 5 and acc["frames_dropped"] == 4
    assert acc["frames_received"] == acc["frames_processed"] + acc["frames_dropped"]
    # the same totals reach /diagnostics
    assert g.wait(lambda: g.messages("diagnostics") and diag_values(
        g.messages("diagnostics")[-1]).get("pipeline/frames_processed") == "5", 5.0)
    d = diag_values(g.messages("diagnostics")[-1])
    assert d["pipeline/frames_received"] == "9" and d["pipeline/frames_dropped"] == "4"
    assert d["pipeline/drop.rgb:truncated"] == "1"
    assert d["inputs/drop.geometry:missing_xyz_fields"] == "1"
    assert d["modalities/rgb"] == "ok"


def test_unsynchronized_frames_are_dropped_and_counted(make_graph):
    g = make_graph({"sync_slop_s": 0.05, "allow_missing_modalities": False})
    rgb, sensor, points, _ = good_part(64)
    h = header(10.0)
    g.pub["rgb"].publish(conv.numpy_to_image(rgb, "rgb8", h))
    g.pub["sensor"].publish(conv.numpy_to_image(sensor, "32FC1", header(10.2)))
    g.pub["depth"].publish(conv.xyz_to_pointcloud2(points, header(10.2)))
    assert not g.wait(lambda: g.messages("report"), 1.0)  # 0.2 s apart > slop: no set
    assert g.node.accounting()["frames_pending"] == 1
    g.publish(11.0, rgb, sensor, points)
    g.wait_report(11.0)
    acc = g.settle()
    assert [conv.stamp_to_ns(r.header.stamp) for r in g.messages("report")] == [11 * 10**9]
    drops = g.node.drop_counts()
    assert drops["frames"] == {"rgb:unsynchronized": 1}
    assert drops["inputs"] == {"sensor:unsynchronized": 1, "geometry:unsynchronized": 1}
    assert acc["frames_received"] == 2 and acc["frames_processed"] == 1
    # stamps far from the node clock are refused once max_stamp_skew_s is set
    assert g.node.set_parameters([Parameter("max_stamp_skew_s", value=5.0)])[0].successful
    g.publish(12.0, rgb, sensor, points)
    assert g.node.drop_counts()["frames"]["rgb:stamp_skew"] == 1
    assert g.node.accounting()["frames_processed"] == 1


def test_missing_modality_after_timeout_is_reported_and_comes_back(make_graph):
    # the timeout must exceed the time between two test parts (one detection), or the returned
    # modality would be declared missing again before its next message
    g = make_graph({"allow_missing_modalities": True, "missing_timeout_s": 2.0})
    rgb, sensor, points, _ = good_part(64)
    g.publish(1.0, rgb, sensor, points)
    g.wait_report(1.0)
    g.publish(2.0, rgb, None, points)  # thermal stops
    assert g.wait(lambda: g.node.modality_health()["sensor"] == "missing", 5.0)
    r2 = g.wait_report(2.0)
    assert {m.name: m.present for m in r2.modality_scores}["sensor"] is False
    g.publish(3.0, rgb, None, points)
    assert {m.name: m.present for m in g.wait_report(3.0).modality_scores}["sensor"] is False
    g.publish(4.0, rgb, sensor, points)  # back: it re-enters the sync when it arrives, so the
    g.wait_report(4.0)                    # part whose RGB and depth came first may lack it
    g.publish(5.0, rgb, sensor, points)
    r5 = g.wait_report(5.0)
    assert all(m.present for m in r5.modality_scores)
    assert g.node.modality_health()["sensor"] == "ok"
    assert g.wait(lambda: any(diag_values(a).get("modalities/sensor") == "missing"
                              for a in g.messages("diagnostics")), 5.0)


def test_unorganized_cloud_uses_camera_info(make_graph):
    g = make_graph({"allow_missing_modalities": True, "missing_timeout_s": 30.0})
    rgb, sensor, points, _ = good_part(64)
    flat = points.reshape(-1, 3)
    g.publish(1.0, rgb, sensor, flat)  # no CameraInfo yet: geometry unusable, frame served
    r1 = g.wait_report(1.0)
    assert {m.name: m.present for m in r1.modality_scores}["geometry"] is False
    f = 64 * 1.2
    info = conv.intrinsics_to_camera_info(conv.CameraIntrinsics(f, f, 32.0, 32.0, 64, 64))
    g.publish(2.0, rgb, sensor, flat, camera_info=info)
    r2 = g.wait_report(2.0)
    assert {m.name: m.present for m in r2.modality_scores}["geometry"] is True
    assert g.node.drop_counts()["degraded"] == {"geometry:no_camera_info": 1}


def test_threshold_changes_at_runtime_within_range_only(make_graph):
    g = make_graph()
    node = g.node
    ok = node.set_parameters([Parameter("threshold", value=0.7)])[0]
    assert ok.successful and node.detector.threshold_for(g.ns) == 0.7
    bad = node.set_parameters([Parameter("threshold", value=1.5)])[0]
    assert not bad.successful and "[0, 1]" in bad.reason
    assert node.detector.threshold_for(g.ns) == 0.7
    ro = node.set_parameters([Parameter("device", value="cuda")])[0]
    assert not ro.successful
    rgb, sensor, points, _ = good_part(64)
    g.publish(1.0, rgb, sensor, points)
    assert abs(g.wait_report(1.0).threshold - 0.7) < 1e-6
    assert g.wait(lambda: g.messages("model_info") and
                  '"threshold": 0.7' in g.messages("model_info")[-1].data, 5.0)


def test_report_message_content_is_consistent(make_graph):
    g = make_graph()
    rgb, sensor, points, _ = good_part(64)
    # the cell announces the part type; later parts are judged within that stream
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    g.probe.create_publisher(String, "inspection/stream", latched).publish(
        String(data=g.ns + "_gear"))
    assert g.wait(lambda: g.node.stream == g.ns + "_gear", 10.0)
    g.publish(1.0, rgb, sensor, points)
    r = _check_outputs_share_stamp(g, 1.0, (64, 64))
    assert r.stream == g.ns + "_gear"
    assert r.status in (AnomalyReport.STATUS_NORMAL, AnomalyReport.STATUS_ANOMALOUS,
                        AnomalyReport.STATUS_UNKNOWN)
    assert 0.0 <= r.pred_score <= 1.0 and 0.0 <= r.threshold <= 1.0
    assert r.report_schema_version and r.model_id
    stages = {s.stage for s in r.latencies}
    assert {"queue", "conversion", "detect", "total"} <= stages
    assert r.report_valid == all(c.passed for c in r.rule_checks)
    assert json.loads(r.report_json)["schema_version"] == r.report_schema_version


def test_reference_bag_gives_good_parts_per_stream(tmp_path):
    from zsg_iad_ros.data.bags import write_bag
    from zsg_iad_ros.data.synthetic import generate_sample
    from zsg_iad_ros.ros.inspection_node import _load_reference_frames
    samples = [generate_sample(c, d, k, size=32) for c in ("gear", "capsule")
               for d, k in (("good", 1), ("crack", 2), ("good", 3))]
    write_bag(tmp_path / "ref", samples)
    by_stream = _load_reference_frames(str(tmp_path / "ref"), "default", limit=8)
    assert {s: len(f) for s, f in by_stream.items()} == {"gear": 2, "capsule": 2}
    assert all(f.stream == s for s, frames in by_stream.items() for f in frames)
    assert len(_load_reference_frames(str(tmp_path / "ref"), "default", limit=1)["gear"]) == 1
    with pytest.raises(FileNotFoundError, match="reference_path"):
        _load_reference_frames(str(tmp_path / "none"), "default")
    write_bag(tmp_path / "bad", [generate_sample("gear", "crack", 2, size=32)])
    with pytest.raises(ValueError, match="no good part"):
        _load_reference_frames(str(tmp_path / "bad"), "default")
