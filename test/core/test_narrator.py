"""Narrator: a tiny random Qwen2-VL checkpoint saved and reloaded offline; its text fails the
rules so the deterministic text is kept; text that passes the rules is accepted."""
import threading

import numpy as np
import pytest

from zsg_iad_ros.core.frame import GEOMETRY, RGB, SENSOR, Detection, Frame
from zsg_iad_ros.core.narrator import (Narrator, apply_narration, build_prompt,
                                       parse_narration)
from zsg_iad_ros.core.report import finalize_report, regions_from_mask
from zsg_iad_ros.core.rules import Evidence

GOOD_TEXT = ("Two defect regions were found: a hole in the lower right and a crack in the upper "
             "left, both seen in the RGB and thermal images. The score is above the threshold, "
             "so the part is anomalous.\nConclusion: anomalous, reject the part.")


def _case(score=0.8):
    mask = np.zeros((64, 64), bool)
    mask[4:12, 4:14] = True
    mask[44:60, 40:60] = True
    amap = np.where(mask, 0.9, 0.05).astype(np.float32)
    maps = {RGB: amap, SENSOR: amap, GEOMETRY: np.full_like(amap, 0.05)}
    regions = regions_from_mask(mask, amap, defect_type="hole", modality_maps=maps)
    regions[1].defect_type = "crack"
    det = Detection(anomaly_map=amap, pred_mask=mask, pred_score=score, threshold=0.5,
                    modality_scores={},
                    modalities_present={RGB: True, SENSOR: True, GEOMETRY: True},
                    regions=regions, modality_maps=maps)
    report, _ = finalize_report(det)
    assert report["valid"]
    det.report = report
    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    return rgb, report, Evidence.from_detection(det), det


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from zsg_iad_ros.training.tiny_models import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(str(tmp_path_factory.mktemp("tiny_qwen2_vl")))


def test_random_narrator_text_is_rejected_and_deterministic_text_kept(tiny_vlm):
    rgb, report, ev, _ = _case()
    with Narrator(tiny_vlm, device="cpu", max_new_tokens=16) as narrator:
        res = narrator.submit(rgb, report, ev).result(timeout=120)
        assert narrator.stats["narrated"] == 1 and narrator.stats["rejected"] == 1
    assert res.status == "narrated" and not res.accepted
    assert isinstance(res.text, str)
    assert res.report is report and res.report["reasoning_source"] == "rules"
    assert not all(r["passed"] for r in res.rule_results)


def test_narration_that_passes_the_rules_is_accepted(tiny_vlm):
    rgb, report, ev, det = _case()
    out, accepted, results = apply_narration(report, GOOD_TEXT, ev)
    assert accepted, results
    assert out["reasoning"].startswith("Two defect regions")
    assert out["reasoning_source"] == "narrator"
    assert out["conclusion"] == "anomalous, reject the part." and out["valid"]
    assert report["reasoning_source"] == "rules"  # the input report is not modified
    # the same through the worker, with the model's output replaced
    with Narrator(tiny_vlm, device="cpu") as narrator:
        narrator.generate_text = lambda frame_rgb, rep: GOOD_TEXT
        res = narrator.submit(rgb, report, ev).result(timeout=60)
        got = []
        narrator.submit_detection(Frame(rgb=rgb), det, callback=got.append).result(timeout=60)
    assert res.accepted and res.report["reasoning"] == out["reasoning"]
    assert got and got[0].accepted and got[0].report["reasoning_source"] == "narrator"


def test_narration_with_wrong_facts_is_rejected():
    rgb, report, ev, _ = _case()
    for wrong in (GOOD_TEXT.replace("Two", "Three"), GOOD_TEXT.replace("lower right", "centre"),
                  GOOD_TEXT.replace("so the part is anomalous", "so the part is normal"), ""):
        out, accepted, results = apply_narration(report, wrong, ev)
        assert not accepted and out is report


def test_only_flagged_parts_are_narrated_and_full_queue_drops_oldest(tiny_vlm):
    rgb, report, ev, _ = _case()
    _, normal, normal_ev, _ = _case(score=0.2)
    started, release = threading.Event(), threading.Event()

    def slow(frame_rgb, rep):
        started.set()
        release.wait(30)
        return GOOD_TEXT

    with Narrator(tiny_vlm, device="cpu", queue_size=1) as narrator:
        with pytest.raises(ValueError, match="uint8"):
            narrator.submit(rgb.astype(np.float32), report, ev)
        skipped = narrator.submit(rgb, normal, normal_ev)
        assert skipped.done() and skipped.result().status == "skipped"
        narrator.generate_text = slow
        first = narrator.submit(rgb, report, ev)
        assert started.wait(30)  # the worker is busy with `first`
        second = narrator.submit(rgb, report, ev)
        third = narrator.submit(rgb, report, ev)  # queue full: `second` is dropped
        assert second.done() and second.result().status == "dropped"
        assert second.result().report is report
        release.set()
        assert first.result(60).accepted and third.result(60).accepted
        assert narrator.stats["dropped"] == 1 and narrator.stats["skipped"] == 1


def test_prompt_and_parsing():
    _, report, _, _ = _case()
    prompt = build_prompt(report)
    assert "defect regions: 2" in prompt and "crack in the upper left" in prompt
    assert "hole in the lower right" in prompt and "missing inputs: none" in prompt
    assert parse_narration('{"reasoning": "r.", "conclusion": "c."}') == ("r.", "c.")
    assert parse_narration("Some text.\nConclusion: done.") == ("Some text.", "done.")
    assert parse_narration("Only text.") == ("Only text.", None)
