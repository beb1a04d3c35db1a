"""Live evaluation: replay an evaluation bag onto the input topics of a running
`inspection_node` over real DDS, collect what it publishes and score it.

- The node runs in this process (default: an `InspectionNode` spun by a
  `MultiThreadedExecutor` in its own rclpy context), as a subprocess (`spawn=True`:
  `python -m zsg_iad_ros.ros.inspection_node --ros-args ...`) or is already running
  (`start_node=False`).
- Messages are published as recorded (headers and stamps unchanged) at `rate` x real time.
  Outputs are matched to inputs by header stamp. End-to-end latency: from publishing the last
  message of a part's synchronized set to receiving its report. Drops: parts with no report.
- The same metrics as offline are computed on the received reports and anomaly maps. With
  `compare_offline`, the bag is also scored offline by a fresh detector of the same
  configuration in the same order, and the score/map differences are reported: without drops
  they must agree up to float32 rounding.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Dict, Optional

import numpy as np

from zsg_iad_ros.evaluation import metrics as M
from zsg_iad_ros.evaluation.results import (SampleResult, compute_metrics, grouped_metrics)

#: Bag topic -> node input parameter holding its (relative) topic name.
INPUT_TOPICS = {"/rgb/image_raw": "rgb_topic", "/sensor/image_raw": "sensor_topic",
                "/depth/points": "depth_topic", "/rgb/camera_info": "camera_info_topic"}
_DEFAULT_TOPICS = {"rgb_topic": "rgb/image_raw", "sensor_topic": "sensor/image_raw",
                   "depth_topic": "depth/points", "camera_info_topic": "rgb/camera_info"}


def _msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclasses.dataclass
class _Received:
    report: object = None
    anomaly_map: Optional[np.ndarray] = None
    pred_mask: Optional[np.ndarray] = None
    t_report: float = float("nan")
    #: pred_score of the first report, where a revision replaced it
    first_score: Optional[float] = None


class _Collector:
    """Subscribes to the node's outputs and keeps them by stamp (thread-safe)."""

    def __init__(self, node, namespace: str):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from zsg_iad_ros.msg import AnomalyReport
        from zsg_iad_ros.ros.conversions import image_to_numpy

        self._to_numpy = image_to_numpy
        self.lock = threading.Lock()
        self.by_stamp: Dict[int, _Received] = defaultdict(_Received)
        self.last_arrival = time.monotonic()
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)
        ns = namespace.rstrip("/")
        node.create_subscription(AnomalyReport, f"{ns}/inspection/report", self._on_report, qos)
        node.create_subscription(Image, f"{ns}/inspection/anomaly_map", self._on_map, qos)
        node.create_subscription(Image, f"{ns}/inspection/mask", self._on_mask, qos)
        self.report_topic = f"{ns}/inspection/report"

    def _on_report(self, msg):
        now = time.monotonic()
        with self.lock:
            r = self.by_stamp[_stamp_ns(msg.header)]
            if r.report is None:  # a revision replaces the report, not its arrival time
                r.t_report = now
            elif r.first_score is None:
                r.first_score = float(r.report.pred_score)
            r.report = msg
            self.last_arrival = now

    def _on_map(self, msg):
        arr = self._to_numpy(msg).astype(np.float32)
        with self.lock:
            self.by_stamp[_stamp_ns(msg.header)].anomaly_map = arr
            self.last_arrival = time.monotonic()

    def _on_mask(self, msg):
        arr = self._to_numpy(msg) > 0
        with self.lock:
            self.by_stamp[_stamp_ns(msg.header)].pred_mask = arr
            self.last_arrival = time.monotonic()

    def complete(self, stamps) -> int:
        with self.lock:
            return sum(1 for s in stamps if s in self.by_stamp
                       and self.by_stamp[s].report is not None
                       and self.by_stamp[s].anomaly_map is not None
                       and self.by_stamp[s].pred_mask is not None)


def _bag_groups(path: str):
    """[(bag time ns, [(topic, rclpy msg)]), ...] of the input topics, grouped by bag time."""
    from rclpy.serialization import deserialize_message

    from zsg_iad_ros.data.bags import iter_bag_messages

    groups: Dict[int, list] = defaultdict(list)
    for topic, msgtype, t_ns, payload in iter_bag_messages(path, topics=INPUT_TOPICS, raw=True):
        cls = _msg_class(msgtype)
        if isinstance(payload, (bytes, bytearray, memoryview)):
            msg = deserialize_message(bytes(payload), cls)
        else:
            raise TypeError(f"{path}: {topic} payload {type(payload).__name__} is not raw CDR")
        groups[int(t_ns)].append((topic, msg))
    # Camera info first: the node pairs a set with the latest CameraInfo it holds.
    order = {t: i for i, t in enumerate(("/rgb/camera_info", "/sensor/image_raw",
                                         "/depth/points", "/rgb/image_raw"))}
    return [(t, sorted(g, key=lambda x: order[x[0]])) for t, g in sorted(groups.items())]


def node_parameters(samples, params: Optional[dict] = None) -> dict:
    """Node parameters for replaying these samples: sensor type, registration and stream from
    the data (a single value each); everything else stays as configured (node defaults, or
    `params`, which override), so drops of a too fast replay show as they would in the cell."""
    out = {}
    kinds = {s.frame.sensor_type for s in samples if s.frame.sensor is not None}
    if len(kinds) == 1:
        out["sensor_type"] = kinds.pop()
    out["registered"] = all(s.frame.registered for s in samples)
    cats = {s.frame.stream for s in samples}
    out["stream"] = cats.pop() if len(cats) == 1 else "default"
    out.update(params or {})
    return out


def detector_config_from_params(params: dict):
    """The `DetectorConfig` the node builds from its parameters (the node's own mapping)."""
    from zsg_iad_ros.core.detector import DetectorConfig
    from zsg_iad_ros.ros.params import INSPECTION_PARAMS, detector_config_dict

    p = {spec.name: spec.default for spec in INSPECTION_PARAMS}
    p.update(params)
    return DetectorConfig.from_dict(detector_config_dict(p))


def _load_params_file(path: Optional[str]) -> dict:
    if not path:
        return {}
    import yaml
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    for key, value in data.items():  # {node_name or /**: {ros__parameters: {...}}}
        if isinstance(value, dict) and "ros__parameters" in value:
            return dict(value["ros__parameters"])
    raise ValueError(f"{path}: no '<node>: ros__parameters:' section")


def _wait(cond, timeout_s: float, what: str, poll: float = 0.05) -> None:
    t_end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > t_end:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll)


def replay_into_node(bag: str, *, rate: float = 1.0, namespace: str = "",
                     params: Optional[dict] = None, detector=None, spawn: bool = False,
                     start_node: bool = True, params_file: Optional[str] = None,
                     timeout_s: float = 30.0, startup_timeout_s: float = 120.0,
                     progress_every: int = 10) -> dict:
    """Replay `bag` into an inspection node; returns the raw exchange.

    Returns {"published": {stamp: t_last_input}, "received": {stamp: _Received},
    "accounting": node accounting or None, "wall_s": replay duration}.
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from zsg_iad_ros.ros.spin import BackgroundSpin

    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    groups = _bag_groups(bag)
    if not groups:
        raise ValueError(f"{bag}: no message on {', '.join(INPUT_TOPICS)}")
    params = dict(params or {})
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = {t: f"{ns}/{params.get(p, _DEFAULT_TOPICS[p])}".replace("//", "/")
              for t, p in INPUT_TOPICS.items()}

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    proc = node_log = inspection = spinner = player = None
    try:
        player = rclpy.create_node(f"zsg_evaluate_live_{os.getpid()}", context=ctx)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)
        pubs = {t: player.create_publisher(_msg_class_of(groups, t), name, qos)
                for t, name in topics.items() if _msg_class_of(groups, t) is not None}
        collector = _Collector(player, ns)
        executor.add_node(player)
        if start_node and not spawn:
            from rclpy.parameter import Parameter

            from zsg_iad_ros.ros.inspection_node import InspectionNode
            overrides = [Parameter(k, value=v) for k, v in params.items()]
            inspection = InspectionNode(context=ctx, namespace=ns or "/", detector=detector,
                                        parameter_overrides=overrides)
            executor.add_node(inspection)
        elif start_node:
            cmd = [sys.executable, "-m", "zsg_iad_ros.ros.inspection_node", "--ros-args"]
            if params_file:
                cmd += ["--params-file", os.path.abspath(params_file)]
            for k, v in params.items():
                cmd += ["-p", f"{k}:={_ros_arg(v)}"]
            if ns:
                cmd += ["-r", f"__ns:={ns}"]
            # Run from a neutral folder: from the source root, `-m` would import the source
            # tree (without the generated messages) instead of the installed package.
            # Its log goes to a file: a pipe nobody reads would fill up and block the node.
            node_log = tempfile.TemporaryFile(mode="w+")
            proc = subprocess.Popen(cmd, stdout=node_log, stderr=subprocess.STDOUT, text=True,
                                    cwd=tempfile.gettempdir())
        spinner = BackgroundSpin(executor)

        def ready():
            if proc is not None and proc.poll() is not None:
                node_log.seek(0)
                raise RuntimeError(f"inspection_node exited with {proc.returncode}:\n"
                                   f"{node_log.read()[-4000:]}")
            return (all(p.get_subscription_count() > 0 for p in pubs.values())
                    and player.count_publishers(collector.report_topic) > 0)
        _wait(ready, startup_timeout_s, "the inspection node's subscriptions and publisher")

        published: Dict[int, float] = {}
        t0_bag, t0 = groups[0][0], time.monotonic()
        for i, (t_ns, msgs) in enumerate(groups):
            due = t0 + (t_ns - t0_bag) * 1e-9 / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for topic, msg in msgs:
                pubs[topic].publish(msg)
            rgb = [m for t, m in msgs if t == "/rgb/image_raw"]
            if rgb:
                published[_stamp_ns(rgb[0].header)] = time.monotonic()
            if progress_every and (i + 1) % progress_every == 0:
                print(f"[live] published {i + 1}/{len(groups)} parts", file=sys.stderr,
                      flush=True)
        wall = time.monotonic() - t0
        # Wait for every output, or until nothing new arrived for timeout_s.
        while collector.complete(published) < len(published):
            if time.monotonic() - max(collector.last_arrival, t0 + wall) > timeout_s:
                break
            time.sleep(0.05)
        accounting = inspection.accounting() if inspection is not None else None
        drops = inspection.drop_counts() if inspection is not None else None
        with collector.lock:
            received = dict(collector.by_stamp)
        return {"published": published, "received": received, "accounting": accounting,
                "drop_counts": drops, "wall_s": wall}
    finally:
        if spinner is not None:
            spinner.stop()
        else:
            executor.shutdown(timeout_sec=2.0)
        if inspection is not None:
            inspection.destroy_node()
        if player is not None:
            player.destroy_node()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            node_log.close()
        if rclpy.ok(context=ctx):
            rclpy.shutdown(context=ctx)


def _msg_class_of(groups, topic: str):
    for _, msgs in groups:
        for t, m in msgs:
            if t == topic:
                return type(m)
    return None


def _ros_arg(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _results_from_live(samples, exchange) -> tuple:
    """SampleResults of the received outputs, and the stamps that got no output."""
    from zsg_iad_ros.msg import AnomalyReport

    results, missing = [], []
    for i, s in enumerate(samples):
        stamp = int(s.frame.stamp_ns)
        got = exchange["received"].get(stamp)
        if stamp not in exchange["published"]:
            continue
        if got is None or got.report is None:
            missing.append(stamp)
            continue
        rep = got.report
        timings = {lat.stage: float(lat.milliseconds) for lat in rep.latencies}
        timings["end_to_end"] = (got.t_report - exchange["published"][stamp]) * 1e3
        usable = (s.gt_mask is not None and got.anomaly_map is not None
                  and s.frame.registered and got.anomaly_map.shape == s.gt_mask.shape)
        why = "" if usable else ("no pixel ground truth" if s.gt_mask is None else
                                 "no registered RGB-frame map published")
        results.append(SampleResult(
            index=i, sample_id=s.sample_id, category=s.category, defect_type=s.defect_type,
            label=int(s.label), pred_score=float(rep.pred_score), threshold=float(rep.threshold),
            confident=rep.status != AnomalyReport.STATUS_UNKNOWN,
            modality_scores={m.name: float(m.score) for m in rep.modality_scores if m.present},
            modalities_present={m.name: bool(m.present) for m in rep.modality_scores},
            timings_ms=timings,
            rule_results=[{"name": c.name, "passed": bool(c.passed), "reason": c.reason,
                           "score": float(c.score)} for c in rep.rule_checks],
            anomaly_map=got.anomaly_map if usable else None,
            gt_mask=s.gt_mask if usable else None,
            pred_mask=got.pred_mask if usable else None,
            pixel_skip_reason=why, rgb=s.frame.rgb,
            revised=bool(rep.revision), first_score=got.first_score if rep.revision else None))
    return results, missing


def offline_agreement(samples, exchange, node_params: dict) -> dict:
    """Score the same samples offline, in the same order, with a fresh detector configured like
    the node (same stream key and sensor type), and compare with what the node published."""
    from zsg_iad_ros.core.detector import Detector

    detector = Detector(detector_config_from_params(node_params))
    stream = node_params.get("stream", "default")
    d_score, d_map, same_decision = [], [], []
    offline: Dict[int, object] = {}  # stamp -> detection (a held part's: its revision)
    for s in samples:
        stamp = int(s.frame.stamp_ns)
        if stamp not in exchange["published"]:
            continue
        frame = dataclasses.replace(s.frame, stream=stream,
                                    sensor_type=node_params.get("sensor_type",
                                                                s.frame.sensor_type))
        offline[stamp] = detector.detect(frame)
        for held, revised in detector.revise_held():
            offline[int(held.stamp_ns)] = revised
    for stamp, det in offline.items():
        got = exchange["received"].get(stamp)
        if got is None or got.report is None:
            continue
        d_score.append(abs(float(np.clip(det.pred_score, 0, 1)) - float(got.report.pred_score)))
        if got.anomaly_map is not None and got.anomaly_map.shape == det.anomaly_map.shape:
            d_map.append(float(np.abs(got.anomaly_map - det.anomaly_map).max()))
        same_decision.append(bool(det.is_anomalous)
                             == bool(got.report.pred_score >= got.report.threshold))
    nan = float("nan")
    return {"compared": len(d_score),
            "max_abs_score_diff": max(d_score) if d_score else nan,
            "max_abs_map_diff": max(d_map) if d_map else nan,
            "decision_agreement": float(np.mean(same_decision)) if same_decision else nan}


def evaluate_live(bag: str, *, rate: float = 1.0, params_file: Optional[str] = None,
                  params: Optional[dict] = None, spawn: bool = False, start_node: bool = True,
                  timeout_s: float = 30.0, compare_offline: bool = True,
                  namespace: Optional[str] = None, n_examples: int = 4) -> dict:
    """Replay `bag` into the inspection node and score what it publishes.

    Returns an evaluation record like `offline.evaluate_samples` (configuration "all") with a
    "live" section: parts published/received, drops, end-to-end latency percentiles, rule pass
    rates, the node's frame accounting and, with compare_offline, the largest differences
    between live and offline scores and maps.
    """
    from zsg_iad_ros.data.bags import read_bag
    from zsg_iad_ros.evaluation.offline import RunOutput, per_sample_table

    samples = list(read_bag(bag))
    if not samples:
        raise ValueError(f"{bag}: no samples with ground truth")
    node_params = node_parameters(samples, {**_load_params_file(params_file), **(params or {})})
    if namespace is None:  # a node of our own gets a namespace of its own
        namespace = f"zsg_eval_{os.getpid()}" if start_node else ""
    ns = namespace
    detector = None
    if start_node and not spawn:
        from zsg_iad_ros.core.detector import Detector
        detector = Detector(detector_config_from_params(node_params))
    exchange = replay_into_node(bag, rate=rate, namespace=ns, params=node_params,
                                detector=detector, spawn=spawn, start_node=start_node,
                                params_file=params_file, timeout_s=timeout_s)
    results, missing = _results_from_live(samples, exchange)
    overall = compute_metrics(results) if results else {}
    live = {
        "parts_published": len(exchange["published"]),
        "parts_received": len(results),
        "drops": len(missing),
        "drop_rate": (M.Metric(len(missing) / len(exchange["published"]))
                      if exchange["published"] else M.Metric.nan("nothing published")),
        "rate": rate, "replay_wall_s": exchange["wall_s"],
    }
    e2e = M.latency_percentiles({"end_to_end": r.timings_ms["end_to_end"]} for r in results)
    live["end_to_end_latency_ms"] = e2e.get("end_to_end", {})
    if exchange["accounting"] is not None:
        live["node_accounting"] = exchange["accounting"]
        live["node_drop_counts"] = exchange["drop_counts"]

    if compare_offline:
        live["offline_agreement"] = offline_agreement(samples, exchange, node_params)

    examples_bad = sorted([r for r in results if r.label == 1], key=lambda r: r.margin)
    examples_good = sorted([r for r in results if r.label == 0], key=lambda r: -r.margin)
    for r in results:
        if r not in examples_bad[:n_examples] and r not in examples_good[:n_examples]:
            r.rgb = None
    run = RunOutput("all", tuple(), [results], examples_bad[:n_examples],
                    examples_good[:n_examples])
    grouped = (grouped_metrics(results) if results
               else {"per_category": {}, "per_defect_type": {}, "category_mean": {}})
    model_id = next((g.report.model_id for g in exchange["received"].values()
                     if g.report is not None), "")
    present = sorted({m for r in results for m, p in r.modalities_present.items() if p})
    return {
        "name": f"live:{os.path.basename(str(bag).rstrip('/'))}",
        "protocol": {"n_samples": len(samples), "references": 0, "draws": 1, "seed": 0,
                     "order_seed": None, "pixel_stride": 1, "modalities_present": present,
                     "rate": rate, "node_parameters": node_params},
        "configs": {"all": {"modalities": present,
                            "model_id": model_id, "device": "", "overall": overall, **grouped,
                            "draws": [], "spread": {},
                            "per_sample": per_sample_table(results)}},
        "runs": {"all": run},
        "live": live,
    }
