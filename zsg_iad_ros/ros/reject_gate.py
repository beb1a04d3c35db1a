"""reject_gate: pass / reject / repair / hold per part, from `inspection/report` alone.

A small node meant to be copied into a cell: it subscribes only to the AnomalyReport and
publishes a PartDecision with the regions (2D box, pixel and 3D centroids) that caused it.

Rules, in order:
  1. status UNKNOWN                                   -> unknown_action (REJECT or HOLD)
  2. status NORMAL                                    -> PASS
  3. ANOMALOUS without any located region             -> REJECT (nothing to repair at)
  4. ANOMALOUS with a region of a non-repairable type -> REJECT
  5. ANOMALOUS with a region above max_repair_area_px,
     or more than max_repair_regions regions           -> REJECT
  6. otherwise (only small repairable regions)        -> REPAIR at those regions
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from zsg_iad_ros.ros.spin import run_node
from zsg_iad_ros.msg import AnomalyReport, PartDecision

DEFAULT_NON_REPAIRABLE = ("crack", "hole", "missing", "deformation", "void", "inclusion",
                          "delamination", "anomaly")


@dataclass(frozen=True)
class GateRules:
    """Decision rules; `non_repairable_types` are compared case-insensitively."""

    unknown_action: str = "hold"  # "hold" or "reject"
    non_repairable_types: Tuple[str, ...] = DEFAULT_NON_REPAIRABLE
    max_repair_area_px: int = 400
    max_repair_regions: int = 3

    def __post_init__(self):
        if self.unknown_action not in ("hold", "reject"):
            raise ValueError(f"unknown_action must be 'hold' or 'reject', got "
                             f"{self.unknown_action!r}")
        if self.max_repair_area_px < 0 or self.max_repair_regions < 0:
            raise ValueError("max_repair_area_px and max_repair_regions must be >= 0")


def decide(report: AnomalyReport, rules: GateRules) -> Tuple[int, str, List]:
    """Apply the rules to one report. Returns (PartDecision.DECISION_*, reason, regions)."""
    if report.status == AnomalyReport.STATUS_UNKNOWN:
        action = (PartDecision.DECISION_REJECT if rules.unknown_action == "reject"
                  else PartDecision.DECISION_HOLD)
        return action, f"status unknown: {rules.unknown_action} (unknown_action)", []
    if report.status == AnomalyReport.STATUS_NORMAL:
        return (PartDecision.DECISION_PASS,
                f"normal: score {report.pred_score:.3f} < threshold {report.threshold:.3f}", [])
    if report.status != AnomalyReport.STATUS_ANOMALOUS:
        return PartDecision.DECISION_REJECT, f"unexpected status {report.status}", []
    regions: Sequence = list(report.regions)
    if not regions:
        return (PartDecision.DECISION_REJECT,
                f"anomalous (score {report.pred_score:.3f}) without a located region to repair",
                [])
    banned = {t.lower() for t in rules.non_repairable_types}
    fatal = [r for r in regions if r.defect_type.lower() in banned]
    if fatal:
        kinds = sorted({r.defect_type for r in fatal})
        return (PartDecision.DECISION_REJECT, f"non-repairable defect type: {', '.join(kinds)}",
                fatal)
    large = [r for r in regions if r.area_px > rules.max_repair_area_px]
    if large:
        return (PartDecision.DECISION_REJECT,
                f"{len(large)} region(s) above max_repair_area_px={rules.max_repair_area_px} "
                f"(largest {max(r.area_px for r in large)} px)", large)
    if len(regions) > rules.max_repair_regions:
        return (PartDecision.DECISION_REJECT,
                f"{len(regions)} regions > max_repair_regions={rules.max_repair_regions}",
                regions)
    kinds = sorted({r.defect_type for r in regions})
    return (PartDecision.DECISION_REPAIR,
            f"repair {len(regions)} small region(s) of type {', '.join(kinds)}", regions)


class RejectGate(Node):
    """Subscribes to inspection/report, publishes inspection/decision."""

    def __init__(self, node_name: str = "reject_gate", **kwargs):
        super().__init__(node_name, **kwargs)
        self.declare_parameter("unknown_action", "hold", ParameterDescriptor(
            description="decision for a report whose status is unknown: hold or reject",
            additional_constraints="one of: hold, reject", read_only=True))
        self.declare_parameter("non_repairable_types", list(DEFAULT_NON_REPAIRABLE),
                               ParameterDescriptor(description="defect types that always reject "
                                                   "the part", read_only=True))
        self.declare_parameter("max_repair_area_px", 400, ParameterDescriptor(
            description="largest region area that can still be repaired [px]", read_only=True,
            integer_range=[IntegerRange(from_value=0, to_value=100_000_000, step=0)]))
        self.declare_parameter("max_repair_regions", 3, ParameterDescriptor(
            description="most regions on one part that can still be repaired [regions]",
            read_only=True, integer_range=[IntegerRange(from_value=0, to_value=10_000, step=0)]))
        g = lambda n: self.get_parameter(n).value  # noqa: E731
        self.rules = GateRules(unknown_action=g("unknown_action"),
                               non_repairable_types=tuple(g("non_repairable_types")),
                               max_repair_area_px=int(g("max_repair_area_px")),
                               max_repair_regions=int(g("max_repair_regions")))
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.create_publisher(PartDecision, "inspection/decision", qos)
        self.create_subscription(AnomalyReport, "inspection/report", self._on_report, qos)
        self.get_logger().info(f"rules: {self.rules}")

    def _on_report(self, report: AnomalyReport):
        decision, reason, regions = decide(report, self.rules)
        out = PartDecision(header=report.header, decision=decision, reason=reason,
                           report_status=report.status, pred_score=report.pred_score,
                           regions=list(regions))
        self.pub.publish(out)


DECISION_NAMES = {PartDecision.DECISION_PASS: "pass", PartDecision.DECISION_REJECT: "reject",
                  PartDecision.DECISION_REPAIR: "repair", PartDecision.DECISION_HOLD: "hold"}


def main(args=None) -> int:
    """Entry point of `ros2 run zsg_iad_ros reject_gate`."""
    return run_node(RejectGate, "reject_gate", args)


if __name__ == "__main__":
    sys.exit(main())
