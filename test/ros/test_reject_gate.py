"""reject_gate's rules on hand-made reports (no graph)."""
from __future__ import annotations

import pytest

from zsg_iad_ros.msg import AnomalyReport, DefectRegion, PartDecision
from zsg_iad_ros.ros.reject_gate import GateRules, decide


def report(status, *regions):
    r = AnomalyReport(status=status, pred_score=0.9 if status == 1 else 0.1, threshold=0.5)
    r.regions = [DefectRegion(defect_type=t, area_px=a) for t, a in regions]
    return r


RULES = GateRules(max_repair_area_px=100, max_repair_regions=2)


@pytest.mark.parametrize("rep,rules,expected,n_regions", [
    (report(AnomalyReport.STATUS_NORMAL), RULES, PartDecision.DECISION_PASS, 0),
    (report(AnomalyReport.STATUS_UNKNOWN), RULES, PartDecision.DECISION_HOLD, 0),
    (report(AnomalyReport.STATUS_UNKNOWN), GateRules(unknown_action="reject"),
     PartDecision.DECISION_REJECT, 0),
    (report(AnomalyReport.STATUS_ANOMALOUS), RULES, PartDecision.DECISION_REJECT, 0),
    (report(AnomalyReport.STATUS_ANOMALOUS, ("scratch", 20), ("Crack", 5)), RULES,
     PartDecision.DECISION_REJECT, 1),
    (report(AnomalyReport.STATUS_ANOMALOUS, ("scratch", 20), ("stain", 101)), RULES,
     PartDecision.DECISION_REJECT, 1),
    (report(AnomalyReport.STATUS_ANOMALOUS, ("scratch", 20), ("stain", 30), ("dent", 5)),
     RULES, PartDecision.DECISION_REJECT, 3),
    (report(AnomalyReport.STATUS_ANOMALOUS, ("scratch", 20), ("stain", 100)), RULES,
     PartDecision.DECISION_REPAIR, 2),
])
def test_rules(rep, rules, expected, n_regions):
    decision, reason, regions = decide(rep, rules)
    assert decision == expected, reason
    assert len(regions) == n_regions and reason


def test_repair_keeps_the_locations():
    rep = report(AnomalyReport.STATUS_ANOMALOUS, ("scratch", 20))
    rep.regions[0].centroid_u, rep.regions[0].has_centroid_3d = 12.5, True
    rep.regions[0].centroid_3d.point.z = 0.42
    _, _, regions = decide(rep, RULES)
    assert regions[0].centroid_u == 12.5 and regions[0].centroid_3d.point.z == 0.42


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="unknown_action"):
        GateRules(unknown_action="pass")
