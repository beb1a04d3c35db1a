"""Report builder, executable rules and repair: each rule passes on a built report and fails on a
deliberately wrong one."""
import copy
import json

import numpy as np
import pytest

from zsg_iad_ros.core.frame import (GEOMETRY, RGB, SENSOR, XRAY, CameraIntrinsics, DefectRegion,
                                    Detection, Frame)
from zsg_iad_ros.core.report import (SCHEMA_VERSION, build_report, finalize_report,
                                     regions_from_mask, report_to_json)
from zsg_iad_ros.core.rules import (RULE_FAMILIES, RULES, Evidence, family_score, location_word,
                                    parse_text, rule_coherence, rule_decision, rule_mask_coverage,
                                    rule_region_overlap, rule_structure, run_rules)

H = W = 96


def _mask():
    m = np.zeros((H, W), bool)
    m[6:16, 8:20] = True  # upper left, 120 px
    m[70:84, 66:90] = True  # lower right, 336 px
    m[50:52, 40:42] = True  # 4 px speck, below the minimum area
    return m


def _detection(score=0.8, threshold=0.5, regions=None, present=None, confident=True):
    mask = _mask()
    amap = np.where(mask, 0.9, 0.05).astype(np.float32)
    maps = {RGB: amap, SENSOR: amap * 0.9, GEOMETRY: np.full_like(amap, 0.05)}
    if regions is None:
        regions = regions_from_mask(mask, amap, defect_type="crack", modality_maps=maps)
        regions[1].defect_type = "hole"
    return Detection(anomaly_map=amap, pred_mask=mask, pred_score=score, threshold=threshold,
                     modality_scores={RGB: score, SENSOR: 0.6},
                     modalities_present=present or {RGB: True, SENSOR: True, GEOMETRY: True},
                     regions=regions, modality_maps=maps, model_id="test-model",
                     confident=confident)


def _built():
    det = _detection()
    return build_report(det), Evidence.from_detection(det)


def _names(results):
    return {r.name: r for r in results}


# ------------------------------------------------------------------ builder
def test_built_report_passes_every_rule_and_names_the_facts():
    report, ev = _built()
    results = run_rules(report, ev)
    assert [r.name for r in results] == list(RULES)
    assert all(r.passed and r.score == 1.0 for r in results), [r.reason for r in results]
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["decision"] == "anomalous"
    # the 4 px speck is not a region; the two planted components are, largest first
    assert [d["box"] for d in report["defects"]] == [[66, 70, 24, 14], [8, 6, 12, 10]]
    assert [d["location"] for d in report["defects"]] == ["lower right", "upper left"]
    assert report["defects"][0]["modalities"] == [RGB, SENSOR]
    text = report["reasoning"]
    for word in ("two defect regions", "crack", "hole", "upper left", "lower right", "RGB",
                 "thermal", "anomalous"):
        assert word in text, word
    assert "reject" in report["conclusion"]


def test_builder_is_deterministic_and_json_round_trips():
    det = _detection()
    a, b = build_report(det), build_report(det)
    assert a == b
    assert json.loads(report_to_json(a)) == a


def test_normal_and_unknown_reports():
    det = _detection(score=0.2)
    report, results = finalize_report(det)
    assert report["decision"] == "normal" and report["defects"] == []
    assert report["valid"] and not report["repaired"]
    assert "normal" in report["reasoning"] and "accept" in report["conclusion"]
    det = _detection(score=0.9, confident=False)
    report, results = finalize_report(det)
    assert report["decision"] == "unknown" and report["defects"] == [] and report["valid"]


def test_missing_modalities_are_reported_and_named():
    det = _detection(present={RGB: True, SENSOR: False, GEOMETRY: False})
    report, results = finalize_report(det, Frame(rgb=np.zeros((H, W, 3), np.uint8),
                                                 sensor_type=XRAY))
    assert report["missing_modalities"] == [SENSOR, GEOMETRY]
    assert "Missing input: X-ray and depth." in report["reasoning"]
    assert report["valid"], results


def test_centroid_3d_from_organized_and_unorganized_clouds():
    mask = np.zeros((H, W), bool)
    mask[40:50, 60:70] = True
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float32)
    k = CameraIntrinsics(fx=100.0, fy=100.0, cx=W / 2, cy=H / 2, width=W, height=H)
    z = np.full((H, W), 0.5, np.float32)
    organized = np.stack([(uu - k.cx) * z / k.fx, (vv - k.cy) * z / k.fy, z], axis=-1)
    organized[45, 65] = np.nan  # invalid depth is skipped
    want = organized[mask][np.isfinite(organized[mask]).all(1)].mean(0)
    for points in (organized, organized.reshape(-1, 3)):
        frame = Frame(rgb=np.zeros((H, W, 3), np.uint8), points=points, intrinsics=k)
        (region,) = regions_from_mask(mask, frame=frame)
        np.testing.assert_allclose(region.centroid_3d, want, atol=1e-4)
    (region,) = regions_from_mask(mask)
    assert region.centroid_3d is None


# ------------------------------------------------------------------ rules fail on wrong reports
def test_structure_rule_fails_on_schema_violations():
    report, ev = _built()
    assert rule_structure(report).passed
    bad = copy.deepcopy(report)
    del bad["decision"]
    r = rule_structure(bad)
    assert not r.passed and "decision" in r.reason and 0 < r.score < 1
    for key, value in (("score", 1.5), ("score", float("nan")), ("decision", "maybe"),
                       ("schema_version", "0.9")):
        bad = copy.deepcopy(report)
        bad[key] = value
        assert not rule_structure(bad).passed, (key, value)
    bad = copy.deepcopy(report)
    bad["defects"][0]["box"] = [1, 2, 3]
    assert not rule_structure(bad).passed
    r = rule_structure("not a report")
    assert not r.passed and r.score == 0.0


def test_region_overlap_fails_for_a_region_outside_the_mask():
    report, ev = _built()
    bad = copy.deepcopy(report)
    bad["defects"][1]["box"] = [40, 20, 10, 10]  # empty part of the mask
    r = rule_region_overlap(bad, ev)
    assert not r.passed and r.score == 0.5 and "does not overlap" in r.reason
    bad = copy.deepcopy(report)
    bad["defects"][0]["box"] = [90, 70, 24, 14]  # runs off the image
    assert "outside" in rule_region_overlap(bad, ev).reason
    bad = copy.deepcopy(report)
    bad["defects"][0]["location"] = "upper left"
    assert not rule_region_overlap(bad, ev).passed


def test_mask_coverage_fails_when_a_component_is_not_reported():
    report, ev = _built()
    bad = copy.deepcopy(report)
    bad["defects"].pop(1)
    r = rule_mask_coverage(bad, ev)
    assert not r.passed and r.score == 0.5 and "120" in r.reason
    # the 4 px speck needs no region; a lower minimum area makes it count
    ev_small = Evidence(ev.pred_mask, ev.pred_score, ev.threshold, ev.modalities_present,
                        min_region_area_px=1)
    assert not rule_mask_coverage(report, ev_small).passed


def test_decision_rule_fails_when_decision_contradicts_score():
    report, ev = _built()
    assert rule_decision(report, ev).passed
    bad = copy.deepcopy(report)
    bad["decision"] = "normal"
    r = rule_decision(bad, ev)
    assert not r.passed and "'anomalous'" in r.reason and "defect regions" in r.reason
    bad = copy.deepcopy(report)
    bad["score"] = 0.3
    assert not rule_decision(bad, ev).passed
    ev_unsure = Evidence(ev.pred_mask, ev.pred_score, ev.threshold, ev.modalities_present,
                         confident=False)
    assert not rule_decision(report, ev_unsure).passed


@pytest.mark.parametrize("old,new,what", [
    ("two defect regions", "three defect regions", "counts"),
    ("in the upper left", "in the centre", "locations"),
    ("a hole in", "a scratch in", "types"),
    ("supported by RGB and thermal", "supported by RGB, thermal and depth", "modalities"),
    ("so the part is anomalous", "so the part is normal", "decisions"),
])
def test_coherence_fails_on_wrong_text(old, new, what):
    report, ev = _built()
    assert rule_coherence(report, ev).passed
    bad = copy.deepcopy(report)
    assert old in bad["reasoning"]
    bad["reasoning"] = bad["reasoning"].replace(old, new, 1)
    r = rule_coherence(bad, ev)
    assert not r.passed and what in r.reason and 0 < r.score < 1


def test_coherence_fails_when_conclusion_or_missing_inputs_disagree():
    report, ev = _built()
    bad = copy.deepcopy(report)
    bad["conclusion"] = "Normal: accept the part."
    r = rule_coherence(bad, ev)
    assert not r.passed and "conclusion" in r.reason
    bad = copy.deepcopy(report)
    bad["reasoning"] += " Missing input: depth."
    assert "missing" in rule_coherence(bad, ev).reason
    bad = copy.deepcopy(report)
    bad["reasoning"] = "The part looks fine."
    assert not rule_coherence(bad, ev).passed


def test_parse_text_reads_synonyms():
    said = parse_text("Two defects: cracks at the top-left and bottom right, a hot spot in the "
                      "center; "
                      "seen in the X-ray image and the point cloud. The RGB camera image was "
                      "missing. Part is defective.", ["hot_spot"])
    assert said["types"] == {"crack", "hot_spot"}
    assert said["locations"] == {"upper left", "lower right", "centre"}
    assert said["counts"] == [2]
    assert said["modalities"] == {SENSOR, GEOMETRY} and said["missing"] == {RGB}
    assert said["decisions"] == {"anomalous"}
    said = parse_text("No defects were found; the anomaly score is low.")
    assert said["decisions"] == {"normal"}


def test_location_word_grid():
    assert location_word((0, 0), (90, 90)) == "upper left"
    assert location_word((45, 45), (90, 90)) == "centre"
    assert location_word((89, 45), (90, 90)) == "centre right"
    assert location_word((45, 89), (90, 90)) == "lower centre"


def test_family_scores_and_unknown_names():
    report, ev = _built()
    assert {f: family_score(report, ev, f) for f in RULE_FAMILIES} == {
        "structure": 1.0, "region": 1.0, "coherence": 1.0}
    bad = copy.deepcopy(report)
    bad["defects"].pop(0)
    assert family_score(bad, ev, "region") == 0.75  # overlap 1.0, coverage 0.5
    with pytest.raises(KeyError):
        family_score(report, ev, "style")
    with pytest.raises(KeyError):
        run_rules(report, ev, ["structure", "nope"])


# ------------------------------------------------------------------ finalize / repair
def test_finalize_repairs_regions_from_the_mask():
    # the detector's regions are wrong: one outside the mask, the other component missing
    wrong = [DefectRegion("dent", 0.9, (40, 20, 10, 10), 100, (45.0, 25.0), modalities=[RGB]),
             DefectRegion("crack", 0.9, (8, 6, 12, 10), 120, (13.5, 10.5), modalities=[RGB])]
    det = _detection(regions=wrong)
    report, results = finalize_report(det)
    assert report["repaired"] and report["valid"]
    assert all(r["passed"] for r in results)
    assert sorted(d["box"] for d in report["defects"]) == [[8, 6, 12, 10], [66, 70, 24, 14]]
    # the prior type is kept where the detector's region matches a component
    assert {d["type"] for d in report["defects"] if d["box"] == [8, 6, 12, 10]} == {"crack"}
    assert report["reasoning"].startswith("Found two defect regions")


def test_finalize_never_marks_an_unrepairable_report_valid():
    det = _detection(score=float("nan"))
    report, results = finalize_report(det)
    assert report["valid"] is False
    assert not {r["name"]: r for r in results}["structure"]["passed"]
    text = report_to_json(report)  # strict JSON: the NaN score becomes null
    assert json.loads(text)["score"] is None and "NaN" not in text


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="pred_mask"):
        regions_from_mask(np.zeros((4, 4, 3), bool))
    with pytest.raises(ValueError, match="pred_mask"):
        Evidence(np.zeros(5, bool), 0.5, 0.5, {})
    det = _detection()
    det.pred_mask = None
    with pytest.raises(ValueError, match="pred_mask"):
        build_report(det)


def test_anomalous_part_without_region_names_the_strongest_input():
    det = _detection()
    det.pred_mask = np.zeros_like(det.pred_mask)
    det.regions = []
    det.modality_scores = {RGB: 0.3, SENSOR: 0.9, GEOMETRY: float("nan")}
    report, results = finalize_report(det, Frame(rgb=None, sensor_type=XRAY))
    assert report["decision"] == "anomalous" and report["defects"] == []
    assert report["valid"], results
    assert "strongest evidence comes from the X-ray input" in report["reasoning"]
    assert report["modality_scores"] == {RGB: 0.3, SENSOR: 0.9}
    bad = copy.deepcopy(report)
    bad["reasoning"] = bad["reasoning"].replace("X-ray input", "RGB input")
    assert "modalities" in rule_coherence(bad, Evidence.from_detection(det)).reason
