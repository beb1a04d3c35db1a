"""The inspection node: synchronized RGB + thermal/X-ray + depth in, AnomalyReport out.

Callbacks only validate, count and synchronize; a worker thread behind a bounded drop-oldest
queue converts messages into a core `Frame`, runs the `Detector` and publishes. Every RGB frame
received is processed, dropped with a counted reason, or still pending:
    frames_received = frames_processed + frames_dropped + frames_pending
and /diagnostics shows each term.
"""
from __future__ import annotations

import collections
import copy
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from zsg_iad_ros.core.frame import GEOMETRY, RGB, SCAN_CURVATURE, SENSOR, Frame
from zsg_iad_ros.core.report import report_to_json
from zsg_iad_ros.msg import AnomalyReport, RuleCheck, StageLatency
from zsg_iad_ros.ros import conversions as conv
from zsg_iad_ros.ros.message_filters_sync import MessageFiltersSync
from zsg_iad_ros.ros.overlay import render_overlay
from zsg_iad_ros.ros.params import (INSPECTION_PARAMS, ParamError, detector_config_dict,
                                    parse_threshold)
from zsg_iad_ros.ros.parts import MISSING, RELEASED, RESUMED, PartAssembler
from zsg_iad_ros.ros.spin import run_node
from zsg_iad_ros.ros.synchronizer import ApproximateTimeSynchronizer, stamp_ns

try:  # a ROS install provides it; the PyPI wheels do not
    import message_filters
except ImportError:  # pragma: no cover - depends on the install
    message_filters = None

#: synchronizer input index of each modality; RGB first (its header is the output header).
INPUTS = (RGB, SENSOR, GEOMETRY)


@dataclass
class _Job:
    msgs: tuple  # (rgb Image, sensor Image or None, PointCloud2 or None)
    camera_info: Optional[CameraInfo]
    stream: str  # production stream in force when the set was formed
    enqueued: float  # time.monotonic()


@dataclass
class _Stats:
    """Counters behind /diagnostics; guarded by the node's stats lock."""

    received: Dict[str, int] = field(default_factory=lambda: {m: 0 for m in INPUTS})
    arrivals: Dict[str, collections.deque] = field(
        default_factory=lambda: {m: collections.deque(maxlen=50) for m in INPUTS})
    frame_drops: collections.Counter = field(default_factory=collections.Counter)
    input_drops: collections.Counter = field(default_factory=collections.Counter)
    degraded: collections.Counter = field(default_factory=collections.Counter)
    processed: int = 0
    in_flight: int = 0
    #: reports published again for parts held through their stream's warm-up
    revised: int = 0
    #: revision rounds that failed in the node (the parts' first reports stand)
    revision_errors: int = 0
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))
    done_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))


class InspectionNode(Node):
    """Zero-shot multimodal anomaly inspection of synchronized RGB, thermal/X-ray and depth.

    `detector` may be given to share an already loaded core `Detector` (demo, tests); otherwise
    one is built from the parameters. Raises the detector's `ModelLoadError` when the model
    cannot be loaded.
    """

    def __init__(self, node_name: str = "inspection_node", *, detector=None, **kwargs):
        super().__init__(node_name, **kwargs)
        for spec in INSPECTION_PARAMS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.p = {spec.name: self.get_parameter(spec.name).value for spec in INSPECTION_PARAMS}
        self._check_startup_params()
        log = self.get_logger()

        self._stats = _Stats()
        self._stats_lock = threading.Lock()
        self._last_warn: Dict[str, float] = {}
        self._camera_info: Optional[CameraInfo] = None
        #: modalities present in the last inspected part (None before the first one)
        self._last_present: Optional[Dict[str, bool]] = None
        #: production stream of the parts now arriving; `stream` parameter at start, then
        #: whatever is published on inspection/stream (e.g. by the cell's PLC bridge)
        self.stream: str = self.p["stream"]

        self.detector = detector if detector is not None else self._build_detector()
        if detector is not None:  # a shared detector follows this node's threshold parameter
            threshold = parse_threshold(self.p["threshold"])
            self.detector.set_threshold(threshold, calibrated=threshold is None)
        self.narrator = None
        if self.p["narrator_model"]:
            from zsg_iad_ros.core.backbones import checkpoint_source
            from zsg_iad_ros.core.narrator import Narrator
            checkpoint_source(self.p["narrator_model"], "narrator_model")
            self.narrator = Narrator(self.p["narrator_model"],
                                     device=None if self.p["device"] == "auto"
                                     else self.p["device"])
            log.info(f"narrator {self.p['narrator_model']} on {self.narrator.device}")

        # Subscriptions (below) come after the model is loaded: waiting for modalities starts
        # with the first part, never during the load.
        self._sync = self._make_sync()
        self._parts = PartAssembler(
            self._sync, missing_timeout_s=self.p["missing_timeout_s"],
            allow_missing=self.p["allow_missing_modalities"],
            drop_stale=self.p["sync_drop_stale"],
            optional=[INPUTS.index(SENSOR), INPUTS.index(GEOMETRY)])
        self._parts.register_callback(self._on_synced)

        # Work queue: bounded, drop-oldest, so callbacks never wait for inference.
        self._queue: collections.deque = collections.deque()
        self._queue_cv = threading.Condition()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="inspection_worker", daemon=True)

        in_qos = self._input_qos()
        self.create_subscription(Image, self.p["rgb_topic"],
                                 lambda m: self._on_input(0, m), in_qos)
        self.create_subscription(Image, self.p["sensor_topic"],
                                 lambda m: self._on_input(1, m), in_qos)
        self.create_subscription(PointCloud2, self.p["depth_topic"],
                                 lambda m: self._on_input(2, m), in_qos)
        self.create_subscription(CameraInfo, self.p["camera_info_topic"], self._on_camera_info,
                                 in_qos)
        out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        self.pub_report = self.create_publisher(AnomalyReport, "inspection/report", out_qos)
        self.pub_mask = self.create_publisher(Image, "inspection/mask", out_qos)
        self.pub_map = self.create_publisher(Image, "inspection/anomaly_map", out_qos)
        self.pub_overlay = self.create_publisher(Image, "inspection/overlay", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", out_qos)
        self.pub_narrated = self.create_publisher(AnomalyReport, "inspection/report_narrated",
                                                  out_qos)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_info = self.create_publisher(String, "inspection/model_info", latched)
        self.create_subscription(String, "inspection/stream", self._on_stream, latched)
        log.info(f"input QoS: {self._qos_str(in_qos)}; output QoS: {self._qos_str(out_qos)}")
        log.info(f"inputs: rgb={self.p['rgb_topic']} sensor({self.p['sensor_type']})="
                 f"{self.p['sensor_topic']} depth={self.p['depth_topic']} "
                 f"camera_info={self.p['camera_info_topic']}; sync={self._sync_backend} "
                 f"slop={self.p['sync_slop_s']} s")

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics)
        self.create_timer(0.1, self._close_overdue_parts)
        self._publish_model_info()
        self._worker.start()

    # ----------------------------------------------------------------------------- set-up
    def _check_startup_params(self):
        for spec in INSPECTION_PARAMS:
            if spec.choices and self.p[spec.name] not in spec.choices:
                raise ValueError(f"parameter {spec.name}={self.p[spec.name]!r} is not one of "
                                 f"{', '.join(spec.choices)}")
        parse_threshold(self.p["threshold"])

    def _build_detector(self):
        from zsg_iad_ros.core.detector import Detector, DetectorConfig
        config = DetectorConfig.from_dict(detector_config_dict(self.p))
        detector = Detector(config)
        self.get_logger().info(f"model {detector.model_id} on {detector.device}")
        if self.p["reference_path"]:
            good, defective = _load_reference_frames(self.p["reference_path"],
                                                     self.p["stream"])
            for stream, frames in good.items():
                detector.teach(frames)
                self.get_logger().info(f"taught {len(frames)} good parts of stream '{stream}' "
                                       f"from {self.p['reference_path']}")
                if config.target_miss_rate is not None and defective.get(stream):
                    detector.teach_defects(defective[stream])
                    self._log_operating_point(detector, stream)
                status = detector.variation_status.get(stream)
                # one call site per severity: rclpy refuses to change it between calls
                if status == "on":
                    self.get_logger().info(
                        f"stream '{stream}': aligned comparison on, parts registered on the "
                        f"{detector.registered_on(stream)} image, model grid up to "
                        f"{detector.aligned_grid(stream)} px")
                elif status is not None:  # variation: true, but this stream cannot have it
                    self.get_logger().warning(f"stream '{stream}': aligned comparison {status}")
                if detector.symmetry_compared(stream):
                    self.get_logger().info(
                        f"stream '{stream}': parts symmetric, each also compared with itself "
                        f"turned by its pitch or mirrored across its axis")
            if config.target_miss_rate is not None:
                for stream in sorted(set(good) - set(defective)):
                    self.get_logger().warning(
                        f"stream '{stream}': target_miss_rate is set but the reference bag "
                        f"holds no defective part of it: its threshold follows "
                        f"target_false_alarm_rate")
        elif config.target_miss_rate is not None:
            self.get_logger().warning("target_miss_rate is set but reference_path is empty: "
                                      "no limit samples, the threshold follows "
                                      "target_false_alarm_rate")
        return detector

    def _log_operating_point(self, detector, stream: str) -> None:
        op = detector.operating_point(stream)
        self.get_logger().info(
            f"stream '{stream}': {op['limit_samples']} limit samples; threshold "
            f"{op['threshold']:.3f} (target_false_alarm_rate alone: "
            f"{op['false_alarm_threshold']:.3f}); misses at most {op['miss_rate_bound']:.2f} of "
            f"defects like them; nominal false-alarm rate {op['false_alarm_rate']:.3f}")

    def _make_sync(self):
        backend = self.p["sync_backend"]
        args = (len(INPUTS), self.p["sync_queue_size"], self.p["sync_slop_s"])
        if backend == "message_filters" and message_filters is None:
            raise ValueError("sync_backend=message_filters but message_filters is not installed")
        if backend in ("message_filters", "auto") and message_filters is not None:
            try:
                sync = MessageFiltersSync(message_filters, *args, on_drop=self._on_sync_drop)
                self._sync_backend = "message_filters"
                return sync
            except RuntimeError as e:
                if backend == "message_filters":
                    raise ValueError(f"sync_backend=message_filters: {e}") from e
                self.get_logger().warning(f"{e}: using the builtin synchronizer")
        self._sync_backend = "builtin"
        return ApproximateTimeSynchronizer(*args, on_drop=self._on_sync_drop)

    def _input_qos(self) -> QoSProfile:
        qos = QoSProfile(depth=self.p["input_qos_depth"],
                         history=qos_profile_sensor_data.history,
                         durability=qos_profile_sensor_data.durability,
                         reliability=qos_profile_sensor_data.reliability)
        if self.p["input_qos_reliability"] == "reliable":
            qos.reliability = ReliabilityPolicy.RELIABLE
        return qos

    @staticmethod
    def _qos_str(qos: QoSProfile) -> str:
        return (f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}, "
                f"{qos.history.name.lower()} depth {qos.depth}")

    # ----------------------------------------------------------------------------- callbacks
    def _warn(self, key: str, text: str):
        """Warning throttled per key (one line per key per log_throttle_s)."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e18) >= self.p["log_throttle_s"]:
            self._last_warn[key] = now
            self.get_logger().warning(text)

    def _drop_input(self, index: int, reason: str, detail: str = ""):
        name = INPUTS[index]
        with self._stats_lock:
            if index == 0:
                self._stats.frame_drops[f"{name}:{reason}"] += 1
            else:
                self._stats.input_drops[f"{name}:{reason}"] += 1
        self._warn(f"{name}:{reason}",
                   f"dropped {name} message ({reason})" + (f": {detail}" if detail else ""))

    def _on_input(self, index: int, msg):
        name = INPUTS[index]
        now = time.monotonic()
        with self._stats_lock:
            self._stats.received[name] += 1
            self._stats.arrivals[name].append(now)
        try:
            if index == 2:
                conv.check_pointcloud2(msg)
            else:
                conv.check_image(msg, conv.RGB_ENCODINGS if index == 0 else conv.SENSOR_ENCODINGS)
        except conv.ConversionError as e:
            self._drop_input(index, e.reason, e.detail)
            return
        stamp = stamp_ns(msg)
        skew = self.p["max_stamp_skew_s"]
        if skew > 0:
            offset = abs(self.get_clock().now().nanoseconds - stamp) * 1e-9
            if offset > skew:
                self._drop_input(index, "stamp_skew",
                                 f"stamp is {offset:.3f} s from the node clock (> {skew} s)")
                return
        self._log_part_events(self._parts.offer(msg, index, now))

    def _on_camera_info(self, msg: CameraInfo):
        try:
            conv.camera_info_to_intrinsics(msg)
        except conv.ConversionError as e:
            with self._stats_lock:
                self._stats.input_drops[f"camera_info:{e.reason}"] += 1
            self._warn("camera_info", f"ignored CameraInfo: {e}")
            return
        self._camera_info = msg

    def _on_stream(self, msg: String):
        name = msg.data.strip()
        if not name:
            self._warn("stream", "ignored an empty stream name on inspection/stream")
            return
        if name != self.stream:
            self.get_logger().info(f"stream: '{self.stream}' -> '{name}'")
            self.stream = name

    def _on_sync_drop(self, reason: str, index: int, msg):
        self._drop_input(index, reason)

    def _on_synced(self, *msgs):
        job = _Job(msgs=tuple(msgs), camera_info=self._camera_info, stream=self.stream,
                   enqueued=time.monotonic())
        with self._queue_cv:
            self._queue.append(job)
            while len(self._queue) > self.p["queue_size"]:
                self._queue.popleft()
                with self._stats_lock:
                    self._stats.frame_drops["queue_full"] += 1
                self._warn("queue_full", "inference is slower than the input: dropped the "
                           "oldest queued frame (queue_full)")
            self._queue_cv.notify()

    def _close_overdue_parts(self):
        self._log_part_events(self._parts.expire(time.monotonic()))

    def _log_part_events(self, events):
        log = self.get_logger()
        for ev in events:
            if ev.kind == MISSING:
                name = INPUTS[ev.index]
                topic = self.p["sensor_topic" if name == SENSOR else "depth_topic"]
                log.warning(f"{name} ({topic}) sent nothing for a part waiting "
                            f"{ev.waited_s:.1f} s: inspecting without it and reporting it "
                            "missing; parts are not held for it until it arrives again")
            elif ev.kind == RESUMED:
                why = "is arriving again" if ev.reason == "arrived" else \
                    f"absent from no part for {self.p['missing_timeout_s']} s"
                log.info(f"{INPUTS[ev.index]} {why}: parts wait for it again")
            elif ev.kind == RELEASED and ev.without:
                names = ", ".join(INPUTS[i] for i in ev.without)
                self._warn(f"released:{names}",
                           f"part at {ev.stamp * 1e-9:.3f} s inspected without {names}: "
                           f"nothing of it within sync_slop_s after {ev.waited_s:.1f} s")
            # DROPPED parts are counted and logged through _on_sync_drop

    # ----------------------------------------------------------------------------- worker
    def _work(self):
        while not self._stop.is_set():
            with self._queue_cv:
                if not self._queue:
                    self._queue_cv.wait(timeout=0.1)
                    continue
                job = self._queue.popleft()
                with self._stats_lock:
                    self._stats.in_flight = 1
            try:
                self._process(job)
            except Exception as e:  # never let one frame kill the worker
                with self._stats_lock:
                    self._stats.frame_drops["internal_error"] += 1
                self.get_logger().error(f"frame dropped (internal_error): {type(e).__name__}: {e}")
            finally:
                with self._stats_lock:
                    self._stats.in_flight = 0

    def _frame_drop(self, reason: str, detail: str):
        with self._stats_lock:
            self._stats.frame_drops[reason] += 1
        self._warn(reason, f"frame dropped ({reason}): {detail}")

    def _degrade(self, name: str, reason: str, detail: str) -> bool:
        """A modality of a synchronized set is unusable: go on without it when allowed.

        Returns False when the whole frame must be dropped instead.
        """
        if not self.p["allow_missing_modalities"]:
            self._frame_drop(f"{name}:{reason}", detail)
            return False
        with self._stats_lock:
            self._stats.degraded[f"{name}:{reason}"] += 1
        self._warn(f"degraded:{name}:{reason}",
                   f"{name} unusable ({reason}): {detail}; inspecting without it")
        return True

    def _to_frame(self, job: _Job) -> Optional[Frame]:
        rgb_msg, sensor_msg, cloud_msg = job.msgs
        if job.camera_info is None:  # it may have arrived while the frame was queued
            job.camera_info = self._camera_info
        try:
            rgb = conv.image_to_rgb(rgb_msg)
        except conv.ConversionError as e:
            self._frame_drop(f"rgb:{e.reason}", e.detail)
            return None
        shape = rgb.shape[:2]
        registered = self.p["registered"]
        sensor = points = intrinsics = None
        extra = {}
        cloud_frame = rgb_msg.header.frame_id or self.p["default_frame_id"]
        if sensor_msg is not None:
            try:
                sensor = conv.image_to_sensor(sensor_msg)
                if registered and sensor.shape != shape:
                    raise conv.ConversionError(
                        "resolution_mismatch", f"sensor is {sensor.shape}, rgb is {shape}")
            except conv.ConversionError as e:
                sensor = None
                if not self._degrade(SENSOR, e.reason, e.detail):
                    return None
        if cloud_msg is not None:
            try:
                points = conv.pointcloud2_to_xyz(cloud_msg)
                if points.ndim == 3 and registered and points.shape[:2] != shape:
                    raise conv.ConversionError(
                        "resolution_mismatch", f"cloud is {points.shape[:2]}, rgb is {shape}")
                curvature = conv.pointcloud2_curvature(cloud_msg)
                if curvature is not None:  # the scanner's own: the detector reads it instead
                    extra[SCAN_CURVATURE] = curvature
                if points.ndim == 2:
                    if job.camera_info is None:
                        raise conv.ConversionError(
                            "no_camera_info", "an unorganized cloud needs CameraInfo on "
                            f"{self.p['camera_info_topic']} to be projected")
                    intrinsics = conv.camera_info_to_intrinsics(job.camera_info)
                cloud_frame = cloud_msg.header.frame_id or cloud_frame
            except conv.ConversionError as e:
                points = intrinsics = None
                extra = {}
                if not self._degrade(GEOMETRY, e.reason, e.detail):
                    return None
        if intrinsics is None and job.camera_info is not None:
            try:
                intrinsics = conv.camera_info_to_intrinsics(job.camera_info)
            except conv.ConversionError:
                intrinsics = None
        return Frame(rgb=rgb, sensor=sensor, sensor_type=self.p["sensor_type"], points=points,
                     intrinsics=intrinsics, stamp_ns=stamp_ns(rgb_msg),
                     frame_id=rgb_msg.header.frame_id or self.p["default_frame_id"],
                     cloud_frame_id=cloud_frame, registered=registered,
                     stream=job.stream, extra_maps=extra)

    def _process(self, job: _Job):
        t0 = time.monotonic()
        frame = self._to_frame(job)
        if frame is None:
            return
        t1 = time.monotonic()
        self._last_present = {RGB: True, SENSOR: frame.sensor is not None,
                              GEOMETRY: frame.points is not None}
        try:
            det = self.detector.detect(frame)
        except Exception as e:
            self._frame_drop("detector_error", f"{type(e).__name__}: {e}")
            return
        t2 = time.monotonic()
        header = job.msgs[0].header
        if not header.frame_id:
            header.frame_id = self.p["default_frame_id"]
        self._publish(frame, det, header, job.enqueued,
                      {"queue": (t0 - job.enqueued) * 1e3, "conversion": (t1 - t0) * 1e3,
                       "detect": (t2 - t1) * 1e3})
        try:  # before the part counts as processed: a lockstep player waits for them too
            self._publish_revisions(frame.stream)
        except Exception as e:  # the held parts' first reports stand; counted
            with self._stats_lock:
                self._stats.revision_errors += 1
            self._warn("revision", f"warm-up revision failed: {type(e).__name__}: {e}")
        with self._stats_lock:
            self._stats.processed += 1

    def _publish_revisions(self, stream: str):
        """Reports of the parts of `stream` held through its warm-up, once it can calibrate
        them, with the header of the part's first report (same stamp and frame, which the
        frame carries: `_to_frame`), so they replace it."""
        revise = getattr(self.detector, "revise_held", None)
        for frame, det in (revise(stream) if revise is not None else []):
            header = conv.header_of(frame.stamp_ns, frame.frame_id)
            self._publish(frame, det, header, time.monotonic(), {}, count_latency=False)
            with self._stats_lock:
                self._stats.revised += 1

    def _publish(self, frame: Frame, det, header, since: float, latencies: Dict[str, float],
                 count_latency: bool = True):
        """Report, mask, anomaly map (and overlay) of one detection, all with `header`."""
        report = conv.detection_to_report(
            det, header, self.p["sensor_type"], frame.stream, frame.cloud_frame_id, latencies)
        self.pub_mask.publish(conv.mask_to_image(det.pred_mask, header))
        self.pub_map.publish(conv.anomaly_map_to_image(det.anomaly_map, header))
        if self.p["publish_overlay"]:
            overlay = render_overlay(frame.rgb, det.anomaly_map, det.pred_mask)
            self.pub_overlay.publish(conv.numpy_to_image(overlay, "rgb8", header))
        done = time.monotonic()
        total_ms = (done - since) * 1e3
        report.latencies.append(StageLatency(stage="total", milliseconds=total_ms))
        self.pub_report.publish(report)
        if count_latency:
            with self._stats_lock:
                self._stats.latencies_ms.append(total_ms)
                self._stats.done_times.append(done)
        if self.narrator is not None and det.report is not None:
            # Narration is slow and optional: it runs on its own worker and, when its text
            # passes every rule, a narrated copy of the report follows on its own topic.
            try:
                self.narrator.submit_detection(
                    frame, det, callback=lambda res, msg=report: self._on_narration(res, msg),
                    min_region_area_px=self.p["min_region_area_px"])
            except RuntimeError as e:  # narrator closed during shutdown
                self._warn("narrator", f"narration not submitted: {e}")

    def _on_narration(self, result, report: AnomalyReport):
        if not result.accepted:
            return
        msg = copy.deepcopy(report)
        msg.report_json = report_to_json(result.report)
        msg.rule_checks = [RuleCheck(name=str(r["name"]), passed=bool(r["passed"]),
                                     reason=str(r.get("reason", "") or ""),
                                     score=float(r.get("score", 0.0)))
                           for r in result.rule_results]
        msg.report_valid = all(c.passed for c in msg.rule_checks)
        self.pub_narrated.publish(msg)

    # ----------------------------------------------------------------------------- parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "threshold":
                try:
                    parse_threshold(prm.value)
                except ParamError as e:
                    return SetParametersResult(successful=False, reason=str(e))
        for prm in params:
            self.p[prm.name] = prm.value
            if prm.name == "threshold":
                threshold = parse_threshold(prm.value)
                self.detector.set_threshold(threshold, calibrated=threshold is None)
                self.get_logger().info(
                    "threshold: " + ("calibrated automatically" if threshold is None
                                     else f"fixed at {threshold}"))
                self._publish_model_info()
            elif prm.name == "missing_timeout_s":
                self._parts.missing_timeout_s = float(prm.value)
            elif prm.name == "allow_missing_modalities":
                self._parts.allow_missing = bool(prm.value)
        return SetParametersResult(successful=True)

    def _publish_model_info(self):
        det = self.detector
        info = {
            "model_id": det.model_id,
            "threshold": float(det.threshold_for(self.stream)),
            "operating_point": det.operating_point(self.stream),
            "threshold_mode": "calibrated" if parse_threshold(self.p["threshold"]) is None
            else "fixed",
            "sensor_type": self.p["sensor_type"], "device": str(det.device),
            "labels": list(getattr(det, "region_types", []) or []),
            "stream": self.stream,
            "inputs": {"rgb": self.p["rgb_topic"], "sensor": self.p["sensor_topic"],
                       "depth": self.p["depth_topic"]},
        }
        self.pub_info.publish(String(data=json.dumps(info, sort_keys=True, default=str)))

    # ----------------------------------------------------------------------------- diagnostics
    def accounting(self) -> Dict[str, int]:
        """Frame accounting: received = processed + dropped + pending."""
        waiting = self._sync.pending()[0]  # RGB images (parts) waiting for partners
        with self._stats_lock, self._queue_cv:
            s = self._stats
            received = s.received[RGB]
            dropped = sum(s.frame_drops.values())
            queued = len(self._queue)
            in_flight = s.in_flight
            processed = s.processed
        return {"frames_received": received, "frames_processed": processed,
                "frames_dropped": dropped, "frames_pending": waiting + queued + in_flight,
                "sync_waiting": waiting, "queue_depth": queued, "in_flight": in_flight}

    def warm_up_counts(self) -> Dict[str, int]:
        """Parts of untaught streams' warm-ups: held (reported unknown, awaiting a revision),
        revised (a second report published for them) and let go unrevised by the detector
        (their unknown report stands: the hold was full, their stream was reset, or their
        second scoring failed); revision_errors: rounds of revisions that failed to publish."""
        det = self.detector
        held = getattr(det, "held_parts", None)
        with self._stats_lock:
            revised, errors = self._stats.revised, self._stats.revision_errors
        return {"held": held() if held is not None else 0, "revised": revised,
                "unrevised": sum(getattr(det, "unrevised", {}).values()),
                "revision_errors": errors}

    def drop_counts(self) -> Dict[str, Dict[str, int]]:
        with self._stats_lock:
            return {"frames": dict(self._stats.frame_drops),
                    "inputs": dict(self._stats.input_drops),
                    "degraded": dict(self._stats.degraded)}

    def latency_ms(self) -> Dict[str, float]:
        """End-to-end latency (synchronized set -> report published) over the last 100 frames."""
        with self._stats_lock:
            lat = np.array(self._stats.latencies_ms, dtype=float)
        if not lat.size:
            return {}
        return {"last": float(lat[-1]), "mean": float(lat.mean()),
                "p95": float(np.percentile(lat, 95))}

    def modality_health(self) -> Dict[str, str]:
        """Per modality: `ok` / `missing` in the last inspected part, `waiting` before the first
        one. Time between parts changes nothing."""
        present = self._last_present
        if present is None:
            return {m: "waiting" for m in INPUTS}
        return {m: "ok" if present[m] else "missing" for m in INPUTS}

    def _publish_diagnostics(self):
        now = time.monotonic()
        acc = self.accounting()
        drops = self.drop_counts()
        health = self.modality_health()
        with self._stats_lock:
            s = self._stats
            rates = {m: _rate(s.arrivals[m], now) for m in INPUTS}
            received = dict(s.received)
            proc_rate = _rate(s.done_times, now)
        kv = lambda k, v: KeyValue(key=k, value=str(v))  # noqa: E731
        name = self.get_fully_qualified_name()

        pipe = DiagnosticStatus(name=f"{name}: pipeline", hardware_id=name)
        pipe.values = [kv(k, v) for k, v in acc.items()]
        pipe.values += [kv("queue_size", self.p["queue_size"]),
                        kv("processing_rate_hz", f"{proc_rate:.2f}"),
                        kv("sync_backend", self._sync_backend)]
        pipe.values += [kv(f"latency_ms_{k}", f"{v:.1f}") for k, v in self.latency_ms().items()]
        pipe.values += [kv(f"drop.{k}", v) for k, v in sorted(drops["frames"].items())]
        pipe.values += [kv(f"warm_up.{k}", v) for k, v in self.warm_up_counts().items()]
        if self.narrator is not None:
            pipe.values += [kv(f"narrator.{k}", v) for k, v in sorted(self.narrator.stats.items())]
        pipe.level = DiagnosticStatus.WARN if drops["frames"] else DiagnosticStatus.OK
        pipe.message = (f"{acc['frames_processed']} processed, {acc['frames_dropped']} dropped "
                        f"of {acc['frames_received']} frames")

        inputs = DiagnosticStatus(name=f"{name}: inputs", hardware_id=name)
        for m in INPUTS:
            inputs.values += [kv(f"{m}.received", received[m]),
                              kv(f"{m}.rate_hz", f"{rates[m]:.2f}")]
        inputs.values += [kv(f"drop.{k}", v) for k, v in sorted(drops["inputs"].items())]
        inputs.values += [kv(f"degraded.{k}", v) for k, v in sorted(drops["degraded"].items())]
        inputs.values.append(kv("camera_info", "received" if self._camera_info else "none"))
        inputs.level = DiagnosticStatus.OK
        inputs.message = ", ".join(f"{m} {rates[m]:.1f} Hz" for m in INPUTS)

        mods = DiagnosticStatus(name=f"{name}: modalities", hardware_id=name)
        mods.values = [kv(m, h) for m, h in health.items()]
        mods.values += [kv(f"{m}.waited_for", str(self._sync.is_active(i)).lower())
                        for i, m in enumerate(INPUTS) if i > 0]
        missing = [m for m, h in health.items() if h == "missing"]
        mods.level = DiagnosticStatus.WARN if missing else DiagnosticStatus.OK
        mods.message = ("no part inspected yet" if self._last_present is None
                        else ", ".join(f"{m} missing in the last part" for m in missing)
                        or "all present in the last part")

        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [pipe, inputs, mods]
        self.pub_diag.publish(arr)

    # ----------------------------------------------------------------------------- shutdown
    def destroy_node(self):
        self._stop.set()
        with self._queue_cv:
            self._queue_cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        if self.narrator is not None:
            self.narrator.close(timeout=5.0)
        return super().destroy_node()


def _rate(times, now: float, window: float = 5.0) -> float:
    """Events per second over the last `window` seconds."""
    recent = [t for t in times if now - t <= window]
    if len(recent) < 2:
        return 0.0
    return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


def _load_reference_frames(path: str, default_stream: str, limit: int = 8,
                           limit_defective: int = 16
                           ) -> Tuple[Dict[str, List[Frame]], Dict[str, List[Frame]]]:
    """(known-good parts to teach, known-defective parts: the limit samples), per stream, from
    a bag written by `zsg_iad_ros.data.bags.write_bag`: the first `limit` parts labelled good
    and the first `limit_defective` labelled defective of each stream (the ground truth's
    category; `default_stream` for a bag without ground truth)."""
    from zsg_iad_ros.data import bags
    if not Path(path).exists():
        raise FileNotFoundError(f"reference_path {path} does not exist")
    good: Dict[str, List[Frame]] = {}
    defective: Dict[str, List[Frame]] = {}
    for sample in bags.read_bag(path):
        if sample.frame.stream == "default":
            sample.frame.stream = default_stream
        into, most = (good, limit) if sample.label == 0 else (defective, limit_defective)
        frames = into.setdefault(sample.frame.stream, [])
        if len(frames) < most:
            frames.append(sample.frame)
    if not good:
        raise ValueError(f"reference_path {path} holds no good part")
    return good, defective


def main(args=None) -> int:
    """Entry point of `ros2 run zsg_iad_ros inspection_node`; returns the exit status."""
    return run_node(InspectionNode, "inspection_node", args)


if __name__ == "__main__":
    sys.exit(main())
