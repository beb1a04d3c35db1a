"""Demo: inspection_node + reject_gate + bag player in one process, outputs saved to a folder.

    python -m zsg_iad_ros.ros.demo --bag zsg_iad_ros/resources/sample_replay --out outputs/demo

Prints one line per part (stamp, status, score, regions, decision, and the ground truth when
the bag carries it) and a summary (parts in, reports out, drops by reason, parts flagged
against the ground truth, output folder). `--variation` sets the node's `variation`
parameter (each part also compared in register with the `--reference` parts).
Saves per part: <stamp>_report.json, <stamp>_mask.png, <stamp>_overlay.png.

By default the player waits for the node to finish a part before sending the next
(`--no-lockstep` replays at `--rate` regardless, and the node then drops what it cannot keep
up with, counted in the summary).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Dict

import numpy as np
import rclpy
from PIL import Image as PILImage
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from zsg_iad_ros.data import bags
from zsg_iad_ros.msg import AnomalyReport, GroundTruth, PartDecision
from zsg_iad_ros.ros import conversions as conv
from zsg_iad_ros.ros.inspection_node import InspectionNode
from zsg_iad_ros.ros.reject_gate import DECISION_NAMES, RejectGate
from zsg_iad_ros.ros.replay import BagPlayer
from zsg_iad_ros.ros.spin import BackgroundSpin

STATUS_NAMES = {AnomalyReport.STATUS_NORMAL: "normal", AnomalyReport.STATUS_ANOMALOUS: "anomalous",
                AnomalyReport.STATUS_UNKNOWN: "unknown"}


class OutputRecorder(Node):
    """Saves reports, masks and overlays; prints a line per part once its decision is in."""

    def __init__(self, out: Path):
        super().__init__("demo_recorder")
        self.out = out
        self.lock = threading.Lock()
        # per stamp, every report and decision in arrival order, printed in pairs (a part of
        # a stream's warm-up gets a revision: its last report is the one decided on)
        self.truth = {}
        self.reports: Dict[str, list] = {}
        self.decisions: Dict[str, list] = {}
        self.printed: Dict[str, int] = {}
        self.saved = {"mask": set(), "overlay": set()}  # stamps whose image is on disk
        self.files = 0
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(AnomalyReport, "inspection/report", self._on_report, qos)
        self.create_subscription(PartDecision, "inspection/decision", self._on_decision, qos)
        self.create_subscription(Image, "inspection/mask", lambda m: self._save_png(m, "mask"),
                                 qos)
        self.create_subscription(Image, "inspection/overlay",
                                 lambda m: self._save_png(m, "overlay"), qos)
        self.create_subscription(GroundTruth, "ground_truth", self._on_truth, qos)

    @staticmethod
    def key(header) -> str:
        return f"{header.stamp.sec}.{header.stamp.nanosec:09d}"

    def _save_png(self, msg: Image, kind: str):
        arr = conv.image_to_numpy(msg)
        PILImage.fromarray(np.ascontiguousarray(arr)).save(
            self.out / f"{self.key(msg.header)}_{kind}.png")
        with self.lock:
            self.saved[kind].add(self.key(msg.header))
            self.files += 1

    def _on_truth(self, msg):
        with self.lock:
            self.truth[self.key(msg.header)] = msg.defect_type if msg.label else "good"

    def _on_report(self, r: AnomalyReport):
        k = self.key(r.header)
        doc = {
            "stamp": k, "frame_id": r.header.frame_id, "status": STATUS_NAMES[r.status],
            "pred_score": r.pred_score, "threshold": r.threshold, "model_id": r.model_id,
            "modalities": {m.name: {"present": m.present, "score": m.score}
                           for m in r.modality_scores},
            "regions": [{"type": g.defect_type, "confidence": g.confidence,
                         "box_xywh": [g.bbox.x_offset, g.bbox.y_offset, g.bbox.width,
                                      g.bbox.height], "area_px": g.area_px,
                         "centroid_px": [g.centroid_u, g.centroid_v],
                         "centroid_3d": ([g.centroid_3d.point.x, g.centroid_3d.point.y,
                                          g.centroid_3d.point.z] if g.has_centroid_3d else None),
                         "centroid_3d_frame": g.centroid_3d.header.frame_id}
                        for g in r.regions],
            "report_valid": r.report_valid,
            "rule_checks": [{"name": c.name, "passed": c.passed, "reason": c.reason}
                            for c in r.rule_checks],
            "latency_ms": {s.stage: round(s.milliseconds, 1) for s in r.latencies},
            "report": json.loads(r.report_json) if r.report_json else None,
        }
        (self.out / f"{k}_report.json").write_text(json.dumps(doc, indent=2))
        with self.lock:
            self.reports.setdefault(k, []).append(r)
            self.files += 1
        self._maybe_print(k)

    def _on_decision(self, d: PartDecision):
        k = self.key(d.header)
        with self.lock:
            self.decisions.setdefault(k, []).append(d)
        self._maybe_print(k)

    def _maybe_print(self, k: str):
        with self.lock:
            i = self.printed.get(k, 0)
            if i >= min(len(self.reports.get(k, [])), len(self.decisions.get(k, []))):
                return
            self.printed[k] = i + 1
            r, d, gt = self.reports[k][i], self.decisions[k][i], self.truth.get(k)
            n = sum(self.printed.values())
        regions = ", ".join(f"{g.defect_type}@({g.bbox.x_offset},{g.bbox.y_offset} "
                            f"{g.bbox.width}x{g.bbox.height})" for g in r.regions) or "-"
        print(f"[{n:3d}] stamp {k}{' revised' if r.revision else ''}  "
              f"{STATUS_NAMES[r.status]:9s} score {r.pred_score:.3f} "
              f"(thr {r.threshold:.3f})  regions: {regions}  -> "
              f"{DECISION_NAMES[d.decision]} ({d.reason})" + (f"  [truth: {gt}]" if gt else ""),
              flush=True)


def _streams(bag: Path) -> dict:
    """Stamp -> part category from the bag's ground truth (a cell's recipe signal: the part
    type, never the label)."""
    try:
        return {conv.stamp_to_ns(m.header.stamp): m.category
                for _t, _ty, _ts, m in bags.iter_bag_messages(bag, [bags.TOPIC_GT]) if m.category}
    except Exception:  # a bag without ground truth (or an older layout): one stream
        return {}


def _against_truth(rec: OutputRecorder) -> dict:
    """Parts flagged anomalous, tallied against the bag's ground truth (empty without it)."""
    out = {}
    with rec.lock:
        for k, log in rec.reports.items():
            r = log[-1]  # a revised part's last report
            gt = rec.truth.get(k)
            if gt is None:
                continue
            kind = "good" if gt == "good" else "defective"
            out[kind] = out.get(kind, 0) + 1
            flagged = f"{kind}_flagged"
            out[flagged] = out.get(flagged, 0) + int(r.status == AnomalyReport.STATUS_ANOMALOUS)
    return out


def _sensor_type(bag: Path) -> str:
    for _topic, _t, _ts, msg in bags.iter_bag_messages(bag, [bags.TOPIC_SENSOR]):
        return bags.sensor_type_from_frame_id(msg.header.frame_id) or "thermal"
    return "thermal"


def run(bag: Path, out: Path, rate: float = 1.0, lockstep: bool = True, device: str = "auto",
        reference: str = "", timeout: float = 120.0, variation: bool = False,
        fusion: str = "stouffer") -> dict:
    """Run the demo; returns the summary dict it prints."""
    out.mkdir(parents=True, exist_ok=True)
    sensor_type = _sensor_type(bag)
    rclpy.init()
    nodes, spinner = [], None
    try:
        node = InspectionNode(parameter_overrides=[
            Parameter("device", value=device), Parameter("sensor_type", value=sensor_type),
            Parameter("sync_backend", value="builtin"),
            Parameter("reference_path", value=reference),
            Parameter("variation", value=variation), Parameter("fusion", value=fusion),
            Parameter("max_stamp_skew_s", value=0.0)])
        gate = RejectGate()
        rec = OutputRecorder(out)

        streams = _streams(bag)
        stream_pub = rec.create_publisher(String, "inspection/stream", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))

        def before_part(stamp_ns):
            end = time.monotonic() + timeout
            if lockstep:  # the previous part is processed before the next is sent
                while time.monotonic() < end:
                    acc = node.accounting()
                    if acc["frames_pending"] == 0 and acc["frames_received"] >= player.parts:
                        break
                    time.sleep(0.02)
            stream = streams.get(stamp_ns)
            if stream and stream != node.stream:  # the cell announces a new part type
                stream_pub.publish(String(data=stream))
                while node.stream != stream and time.monotonic() < end:
                    time.sleep(0.02)

        player = BagPlayer(str(bag), rate=rate, before_part=before_part)
        nodes = [node, gate, rec, player]
        executor = MultiThreadedExecutor(num_threads=4)
        for n in nodes:
            executor.add_node(n)
        spinner = BackgroundSpin(executor)
        sensor_topics = [(bags.TOPIC_RGB, "sensor_msgs/msg/Image"),
                         (bags.TOPIC_SENSOR, "sensor_msgs/msg/Image"),
                         (bags.TOPIC_POINTS, "sensor_msgs/msg/PointCloud2")]
        if not player.wait_for_subscribers(sensor_topics, 10.0):
            raise RuntimeError("the inspection node did not subscribe within 10 s")
        t0 = time.monotonic()
        counts = player.play()
        # let the last part through the node and the gate
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            acc = node.accounting()
            done = acc["frames_processed"]
            with rec.lock:  # every output of every processed part is in (topics race)
                outputs_in = (len(rec.printed) >= done and len(rec.saved["mask"]) >= done
                              and (len(rec.saved["overlay"]) >= done
                                   or not node.p["publish_overlay"]))
            if acc["frames_received"] >= player.parts and acc["frames_pending"] == 0 \
                    and outputs_in:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        acc, drops = node.accounting(), node.drop_counts()
        decisions = {}
        for log in rec.decisions.values():
            d = log[-1]  # a revised part's last decision
            name = DECISION_NAMES[d.decision]
            decisions[name] = decisions.get(name, 0) + 1
        summary = {"parts_in": player.parts, "messages_published": counts,
                   "reports_out": len(rec.reports), "decisions": decisions,
                   "against_truth": _against_truth(rec),
                   "frames": acc, "drops": drops, "seconds": round(elapsed, 1),
                   "latency_ms": {k: round(v, 1) for k, v in node.latency_ms().items()},
                   "output_folder": str(out.resolve())}
    finally:
        if spinner is not None:
            spinner.stop()
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bag", required=True, type=Path, help="bag directory to replay")
    ap.add_argument("--out", required=True, type=Path, help="folder for reports, masks, overlays")
    ap.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    ap.add_argument("--no-lockstep", dest="lockstep", action="store_false",
                    help="replay at --rate without waiting for the node")
    ap.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    ap.add_argument("--reference", default="", help="bag of known-good parts to teach first")
    ap.add_argument("--timeout", type=float, default=120.0, help="longest wait for one part [s]")
    ap.add_argument("--variation", action="store_true",
                    help="the node's `variation` parameter: compare each part in register with "
                         "the references (a stream of one product)")
    ap.add_argument("--fusion", default="stouffer", choices=("stouffer", "max", "omnibus"),
                    help="the node's `fusion` parameter")
    a = ap.parse_args(argv)
    if not a.bag.exists():
        print(f"error: no bag at {a.bag}", file=sys.stderr)
        return 2
    s = run(a.bag, a.out, a.rate, a.lockstep, a.device, a.reference, a.timeout, a.variation,
            a.fusion)
    drops = {k: v for part in s["drops"].values() for k, v in part.items()}
    print(f"\nparts in: {s['parts_in']}   reports out: {s['reports_out']}   "
          f"decisions: {s['decisions']}   in {s['seconds']} s")
    print(f"frames: {s['frames']}")
    print(f"latency per part (set in -> report out) [ms]: {s['latency_ms']}")
    print(f"drops by reason: {drops or 'none'}")
    t = s["against_truth"]
    if t:
        print(f"flagged anomalous, against the bag's ground truth: "
              f"{t.get('defective_flagged', 0)} of {t.get('defective', 0)} defective parts, "
              f"{t.get('good_flagged', 0)} of {t.get('good', 0)} good parts")
    print(f"outputs (report JSON, mask PNG, overlay PNG per part, summary.json): "
          f"{s['output_folder']}")
    return 0 if s["reports_out"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
