"""The inspection node on a real rclpy graph over Fast DDS: stamps, content, drops, health."""
from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from zsg_ros_testkit import WAIT_S, diag_values, good_part, header
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
    # a queue that holds every frame: on a slow host the worker must not drop one as
    # queue_full: this test plants bad inputs, not back-pressure
    g = make_graph({"allow_missing_modalities": True, "missing_timeout_s": 1.0,
                    "queue_size": 16})
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
    g.publish(6.0, rgb, sensor, no_xyz)                           # depth: lacks z (refused)
    # good again. Its cloud goes in first: once part 6 has waited missing_timeout_s for its
    # refused cloud, parts are no longer held for one (by design) until a cloud arrives, and
    # on a loaded host that can happen before part 7's messages are taken in
    g.publish(7.0, points=points)
    g.publish(7.0, rgb, sensor)
    r7 = _check_outputs_share_stamp(g, 7.0, (64, 64))
    g.publish(0.5, rgb, sensor, points)                           # late but complete: served
    g.publish(8.0, rgb, sensor, points, rgb_encoding="bgr8")      # good, bgr8 input

    r8, r05 = g.wait_report(8.0), g.wait_report(0.5)
    r4, r5 = g.wait_report(4.0), g.wait_report(5.0)
    r6 = g.wait_report(6.0)  # after missing_timeout_s, without the refused cloud
    present = lambda r: {m.name: m.present for m in r.modality_scores}  # noqa: E731
    assert present(r4) == {"rgb": True, "sensor": True, "geometry": False}
    assert present(r5) == {"rgb": True, "sensor": False, "geometry": True}
    assert present(r6) == {"rgb": True, "sensor": True, "geometry": False}
    assert present(r7) == {"rgb": True, "sensor": True, "geometry": True}
    assert all(present(r8).values()) and all(present(r05).values())
    acc = g.settle()
    drops = g.node.drop_counts()
    assert drops["frames"] == {"rgb:unsupported_encoding": 1, "rgb:truncated": 1}
    assert drops["inputs"] == {"geometry:missing_xyz_fields": 1}
    assert drops["degraded"] == {"geometry:no_finite_points": 1, "sensor:resolution_mismatch": 1}
    assert acc["frames_received"] == 9
    assert acc["frames_processed"] == 7 and acc["frames_dropped"] == 2
    assert acc["frames_received"] == acc["frames_processed"] + acc["frames_dropped"]
    # the same totals reach /diagnostics
    assert g.wait(lambda: g.messages("diagnostics") and diag_values(
        g.messages("diagnostics")[-1]).get("pipeline/frames_processed") == "7", 5.0)
    d = diag_values(g.messages("diagnostics")[-1])
    assert d["pipeline/frames_received"] == "9" and d["pipeline/frames_dropped"] == "2"
    assert d["pipeline/drop.rgb:truncated"] == "1"
    assert d["inputs/drop.geometry:missing_xyz_fields"] == "1"
    assert d["modalities/rgb"] == "ok"


def test_a_slow_detector_drops_the_oldest_queued_frames_and_counts_them(
        detector, make_graph, monkeypatch):
    """Back-pressure: while the detector is busy, frames beyond `queue_size` are dropped
    oldest first as `queue_full`, counted, and the newest frame is still served."""
    entered, release = threading.Event(), threading.Event()
    real = detector.detect

    def slow_detect(frame):
        entered.set()
        assert release.wait(WAIT_S), "the test never released the detector"
        return real(frame)

    monkeypatch.setattr(detector, "detect", slow_detect)
    g = make_graph({"queue_size": 1})
    rgb, sensor, points, _ = good_part(64)
    g.publish(1.0, rgb, sensor, points)
    assert entered.wait(WAIT_S), "the worker never took the first frame"
    for t in (2.0, 3.0, 4.0):  # the queue holds one: 2.0 and 3.0 are pushed out
        g.publish(t, rgb, sensor, points)
    assert g.wait(lambda: g.node.drop_counts()["frames"].get("queue_full") == 2)
    release.set()
    _check_outputs_share_stamp(g, 1.0, (64, 64))
    _check_outputs_share_stamp(g, 4.0, (64, 64))
    acc = g.settle()
    assert g.node.drop_counts()["frames"] == {"queue_full": 2}
    assert acc["frames_received"] == 4
    assert acc["frames_processed"] == 2 and acc["frames_dropped"] == 2
    assert not g.at("report", 2.0) and not g.at("report", 3.0)
    assert g.wait(lambda: g.messages("diagnostics") and diag_values(
        g.messages("diagnostics")[-1]).get("pipeline/drop.queue_full") == "2", 5.0)


def test_cloud_curvature_reaches_the_detector_as_the_scan_curvature(detector):
    """A cloud with a `curvature` field (the scanner's own) reaches the detector as
    `Frame.extra_maps[SCAN_CURVATURE]`, on the cloud's grid; a plain cloud carries none."""
    from zsg_iad_ros.core.frame import SCAN_CURVATURE
    from zsg_ros_testkit import Graph

    seen = []

    class Recording:
        def __getattr__(self, name):
            return getattr(detector, name)

        def detect(self, frame, update_memory=True):
            seen.append(frame)
            return detector.detect(frame, update_memory)

    g = Graph(Recording(), {})
    try:
        rgb, sensor, points, _ = good_part(64)
        rec = np.zeros(points.shape[:2], [("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                          ("curvature", "<f4")])
        curv = np.linspace(0, 1, rec.size, dtype=np.float32).reshape(rec.shape)
        rec["x"], rec["y"], rec["z"], rec["curvature"] = (points[..., 0], points[..., 1],
                                                          points[..., 2], curv)
        g.publish(1.0, rgb, sensor, conv.array_to_pointcloud2(rec, header(1.0)))
        g.wait_report(1.0)
        g.publish(2.0, rgb, sensor, points)
        g.wait_report(2.0)
    finally:
        g.close()
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0].extra_maps[SCAN_CURVATURE], curv)
    assert seen[0].points.shape == points.shape
    assert SCAN_CURVATURE not in seen[1].extra_maps


def _unmatched_then_complete_part(g):
    rgb, sensor, points, _ = good_part(64)
    g.pub["rgb"].publish(conv.numpy_to_image(rgb, "rgb8", header(10.0)))
    g.pub["sensor"].publish(conv.numpy_to_image(sensor, "32FC1", header(10.2)))
    g.pub["depth"].publish(conv.xyz_to_pointcloud2(points, header(10.2)))
    assert g.wait(lambda: g.node.accounting()["frames_received"] == 1)
    assert not g.wait(lambda: g.messages("report"), 1.0)  # 0.2 s apart > slop: no set
    assert g.node.accounting()["frames_pending"] == 1
    g.publish(11.0, rgb, sensor, points)
    g.wait_report(11.0)
    return rgb, sensor, points


def test_unmatched_messages_wait_as_in_message_filters(make_graph):
    # waiting for every modality: the unmatched rgb@10.0 stays pending behind the newer set
    # (it could still pair with a late partner) and is counted as such
    g = make_graph({"sync_slop_s": 0.05, "allow_missing_modalities": False})
    rgb, sensor, points = _unmatched_then_complete_part(g)
    assert g.wait(lambda: g.node.accounting()["frames_processed"] == 1)
    acc = g.node.accounting()
    assert acc["frames_received"] == 2 and acc["frames_pending"] == 1
    assert acc["sync_waiting"] == 1 and acc["frames_dropped"] == 0
    assert g.node.drop_counts() == {"frames": {}, "inputs": {}, "degraded": {}}
    # stamps far from the node clock are refused once max_stamp_skew_s is set
    assert g.node.set_parameters([Parameter("max_stamp_skew_s", value=5.0)])[0].successful
    g.publish(12.0, rgb, sensor, points)
    assert g.node.drop_counts()["frames"]["rgb:stamp_skew"] == 1
    assert g.node.accounting()["frames_processed"] == 1


def test_sync_drop_stale_drops_what_a_newer_set_overtook(make_graph):
    g = make_graph({"sync_slop_s": 0.05, "allow_missing_modalities": False,
                    "sync_drop_stale": True})
    _unmatched_then_complete_part(g)
    acc = g.settle()
    assert [conv.stamp_to_ns(r.header.stamp) for r in g.messages("report")] == [11 * 10**9]
    drops = g.node.drop_counts()
    assert drops["frames"] == {"rgb:unsynchronized": 1}
    assert drops["inputs"] == {"sensor:unsynchronized": 1, "geometry:unsynchronized": 1}
    assert acc["frames_received"] == 2 and acc["frames_processed"] == 1


def test_missing_modality_is_reported_per_part_and_comes_back(make_graph):
    g = make_graph({"allow_missing_modalities": True, "missing_timeout_s": 1.0})
    rgb, sensor, points, _ = good_part(64)
    present = lambda r: {m.name: m.present for m in r.modality_scores}  # noqa: E731
    g.publish(1.0, rgb, sensor, points)
    assert all(present(g.wait_report(1.0)).values())
    assert g.node.modality_health() == {"rgb": "ok", "sensor": "ok", "geometry": "ok"}
    g.publish(2.0, rgb, None, points)  # thermal stops: the part waits missing_timeout_s
    assert present(g.wait_report(2.0))["sensor"] is False
    assert g.wait(lambda: g.node.modality_health()["sensor"] == "missing")
    assert g.wait(lambda: any(diag_values(a).get("modalities/sensor") == "missing"
                              for a in g.messages("diagnostics")))
    g.publish(3.0, rgb, None, points)
    assert present(g.wait_report(3.0))["sensor"] is False
    g.publish(4.0, rgb, sensor, points)  # back: it arrives before the RGB image and is waited for
    assert all(present(g.wait_report(4.0)).values())
    assert g.wait(lambda: g.node.modality_health()["sensor"] == "ok")
    acc = g.settle()
    assert acc["frames_processed"] == 4 and acc["frames_dropped"] == 0


def test_parts_seconds_apart_keep_every_modality_and_read_ok_between(make_graph):
    # real pauses three times missing_timeout_s long between parts: nothing goes missing
    g = make_graph({"allow_missing_modalities": True, "missing_timeout_s": 0.5,
                    "diagnostics_period_s": 0.1})
    rgb, sensor, points, _ = good_part(64)
    for k in range(3):
        t = 1.0 + k
        g.publish(t, rgb, sensor, points)
        assert all(m.present for m in g.wait_report(t).modality_scores)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # the pause; diagnostics keep coming
            time.sleep(0.05)
        n = len(g.messages("diagnostics"))
        assert g.wait(lambda: len(g.messages("diagnostics")) > n)
        d = diag_values(g.messages("diagnostics")[-1])
        assert [d[f"modalities/{m}"] for m in ("rgb", "sensor", "geometry")] == ["ok"] * 3
        assert _level(g.messages("diagnostics")[-1], "modalities") == DiagnosticStatus.OK
    acc = g.settle()
    assert acc["frames_processed"] == 3 and acc["frames_dropped"] == 0
    assert g.node.drop_counts() == {"frames": {}, "inputs": {}, "degraded": {}}


def _level(arr, suffix):
    return next(s.level for s in arr.status if s.name.endswith(f": {suffix}"))


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
    auto = node.detector.threshold_for(g.ns)
    ok = node.set_parameters([Parameter("threshold", value=0.7)])[0]
    assert ok.successful and node.detector.threshold_for(g.ns) == 0.7
    for bad_value in (1.5, -0.5, "high", True):
        bad = node.set_parameters([Parameter("threshold", value=bad_value)])[0]
        assert not bad.successful and "[0, 1] or -1" in bad.reason, bad_value
    assert node.detector.threshold_for(g.ns) == 0.7
    ro = node.set_parameters([Parameter("device", value="cuda")])[0]
    assert not ro.successful
    rgb, sensor, points, _ = good_part(64)
    g.publish(1.0, rgb, sensor, points)
    assert abs(g.wait_report(1.0).threshold - 0.7) < 1e-6
    assert g.wait(lambda: g.messages("model_info") and
                  '"threshold": 0.7' in g.messages("model_info")[-1].data, 5.0)
    # integers as `ros2 param set ... threshold 1` sends them, and -1 back to automatic
    assert node.set_parameters([Parameter("threshold", value=1)])[0].successful
    assert node.detector.threshold_for(g.ns) == 1.0
    assert node.set_parameters([Parameter("threshold", value=-1)])[0].successful
    assert node.detector.threshold_for(g.ns) == auto
    assert g.wait(lambda: g.messages("model_info") and json.loads(
        g.messages("model_info")[-1].data)["threshold_mode"] == "calibrated", 5.0)


def test_threshold_fixed_at_start_can_return_to_automatic(detector, make_graph, monkeypatch):
    auto = detector.threshold_for("any")
    # as a node that built its detector from `threshold: 0` (an integer) in its file
    monkeypatch.setattr(detector, "config", dataclasses.replace(detector.config, threshold=0.0))
    g = make_graph({"threshold": 0})
    assert g.node.detector.threshold_for(g.ns) == 0.0
    assert g.node.set_parameters([Parameter("threshold", value=-1.0)])[0].successful
    assert g.node.detector.threshold_for(g.ns) == auto
    assert g.wait(lambda: g.messages("model_info") and json.loads(
        g.messages("model_info")[-1].data)["threshold_mode"] == "calibrated", 5.0)
    g.close()  # before the detector's config is restored
    detector.set_threshold(None)


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


def test_warm_up_parts_get_a_revised_report_with_their_own_stamp(make_graph):
    """Without references a stream's first 7 parts are reported unknown (the gate holds them);
    once its history calibrates it each gets a second report, mask and map with its own header,
    marked as a revision and decided: the defective first part is flagged, the others pass."""
    from zsg_iad_ros.msg import PartDecision

    g = make_graph(with_gate=True)
    for i in range(8):
        rgb, sensor, points, _ = good_part(64, seed=100 + i, defect=(i == 0))
        g.publish(1.0 + i, rgb, sensor, points)
        g.wait_report(1.0 + i)
    g.settle()
    assert g.wait(lambda: all(len(g.reports_at(1.0 + i)) == 2 for i in range(7)))
    assert g.wait(lambda: all(len(g.at("mask", 1.0 + i)) == 2 for i in range(7)))
    for i in range(7):
        first, revised = g.reports_at(1.0 + i)
        assert first.status == AnomalyReport.STATUS_UNKNOWN and not first.revision
        assert revised.revision and revised.header.frame_id == "cam_optical"
        assert revised.status == (AnomalyReport.STATUS_ANOMALOUS if i == 0
                                  else AnomalyReport.STATUS_NORMAL), (i, revised.pred_score)
    last = g.reports_at(8.0)
    assert len(last) == 1 and not last[0].revision
    assert last[0].status == AnomalyReport.STATUS_NORMAL
    assert g.wait(lambda: len(g.at("decision", 1.0)) == 2)
    held, decided = g.at("decision", 1.0)
    assert held.decision == PartDecision.DECISION_HOLD
    assert decided.decision in (PartDecision.DECISION_REJECT, PartDecision.DECISION_REPAIR)
    counts = g.node.warm_up_counts()  # the detector is shared with other tests' streams
    assert counts["revised"] == 7 and g.node.detector.held_parts(g.ns) == 0
    assert counts["held"] == g.node.detector.held_parts()
    assert g.node.accounting()["frames_processed"] == 8  # revisions are not frames


def test_reference_bag_gives_good_and_defective_parts_per_stream(tmp_path):
    from zsg_iad_ros.data.bags import write_bag
    from zsg_iad_ros.data.synthetic import generate_sample
    from zsg_iad_ros.ros.inspection_node import _load_reference_frames
    samples = [generate_sample(c, d, k, size=32) for c in ("gear", "capsule")
               for d, k in (("good", 1), ("crack", 2), ("good", 3))]
    write_bag(tmp_path / "ref", samples)
    good, defective = _load_reference_frames(str(tmp_path / "ref"), "default", limit=8)
    assert {s: len(f) for s, f in good.items()} == {"gear": 2, "capsule": 2}
    assert {s: len(f) for s, f in defective.items()} == {"gear": 1, "capsule": 1}
    assert all(f.stream == s for s, frames in good.items() for f in frames)
    assert len(_load_reference_frames(str(tmp_path / "ref"), "default", limit=1)[0]["gear"]) == 1
    with pytest.raises(FileNotFoundError, match="reference_path"):
        _load_reference_frames(str(tmp_path / "none"), "default")
    write_bag(tmp_path / "bad", [generate_sample("gear", "crack", 2, size=32)])
    with pytest.raises(ValueError, match="no good part"):
        _load_reference_frames(str(tmp_path / "bad"), "default")


def test_limit_samples_in_the_reference_bag_set_the_miss_rate_operating_point(tmp_path):
    """`target_miss_rate` with known-defective parts in the reference bag: the node teaches
    them after the good parts; the stream's threshold drops to the weakest of them and the
    operating point is published; without defective parts the stream keeps its threshold."""
    from zsg_iad_ros.data.bags import write_bag
    from zsg_iad_ros.data.synthetic import generate_sample
    from zsg_iad_ros.ros.inspection_node import InspectionNode

    refs = tmp_path / "refs"
    write_bag(refs, [generate_sample("gear", "good", s, size=128, design=7)
                     for s in range(100, 104)]
              + [generate_sample("gear", "void", s, size=128, design=7) for s in range(300, 304)]
              + [generate_sample("capsule", "good", s, size=128, design=7) for s in (1, 2)])
    node = InspectionNode(parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("sensor_type", value="xray"),
        Parameter("reference_path", value=str(refs)), Parameter("target_miss_rate", value=0.2)])
    try:
        det = node.detector
        assert det.config.target_miss_rate == 0.2
        gear, capsule = det.operating_point("gear"), det.operating_point("capsule")
        assert gear["limit_samples"] == 4 and gear["threshold"] < gear["false_alarm_threshold"]
        assert det.threshold_for("gear") == gear["threshold"]
        assert capsule["limit_samples"] == 0
        assert det.threshold_for("capsule") == capsule["false_alarm_threshold"]
    finally:
        node.destroy_node()


def test_variation_says_per_taught_stream_whether_parts_are_compared_in_register(tmp_path):
    """`variation: true` with a reference bag: the node teaches each stream and keeps, per
    stream, whether the aligned comparison is on (an object of one design) or why not (a
    texture has no pose to align)."""
    from zsg_iad_ros.data.bags import write_bag
    from zsg_iad_ros.data.synthetic import generate_sample
    from zsg_iad_ros.ros.inspection_node import InspectionNode

    refs = tmp_path / "refs"
    write_bag(refs, [generate_sample("gear", "good", s, size=128, design=3) for s in (1, 2, 3)]
              + [generate_sample("cast_metal", "good", s, size=128) for s in (1, 2, 3)])
    node = InspectionNode(parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("sensor_type", value="xray"),
        Parameter("reference_path", value=str(refs)), Parameter("variation", value=True)])
    try:
        assert node.detector.config.variation
        status = node.detector.variation_status
        assert status["gear"] == "on", status
        assert status["cast_metal"].startswith("off: a texture"), status
    finally:
        node.destroy_node()
