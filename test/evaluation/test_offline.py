"""Offline evaluation plumbing on hand-made samples with a transparent scorer.

The scorer below is a test double (local-contrast of each modality) so that the protocol
(grouping, teach mode, ablation, pixel selection, outputs) can be checked against known answers;
the real detector is exercised in test_offline_detector.py.
"""
import json
import math
import os

import numpy as np
import pytest

from zsg_iad_ros.core.frame import Detection, Frame, Sample
from zsg_iad_ros.evaluation.cli import main as cli_main
from zsg_iad_ros.evaluation.offline import evaluate_samples
from zsg_iad_ros.evaluation.summary import write_outputs

H = W = 32


def make_sample(i, category, defect_type, modality, registered=True, with_gt=True):
    rng = np.random.default_rng(i)
    rgb = np.full((H, W, 3), 120, np.uint8) + rng.integers(0, 5, (H, W, 3), dtype=np.uint8)
    sensor = 300 + rng.normal(0, 0.1, (H, W)).astype(np.float32)
    gt = np.zeros((H, W), bool)
    if defect_type != "good":
        y, x = 4 + (i * 7) % 20, 4 + (i * 5) % 20
        gt[y:y + 5, x:x + 5] = True
        if modality == "rgb":
            rgb[gt] = 250
        else:
            sensor[gt] += 5.0
    frame = Frame(rgb=rgb, sensor=sensor, registered=registered, stream=category)
    return Sample(frame=frame, label=int(defect_type != "good"), category=category,
                  defect_type=defect_type, gt_mask=gt if with_gt else None,
                  sample_id=f"{category}-{defect_type}-{i}")


class ContrastScorer:
    """Test double: |value - median| per used modality, max-fused; threshold 0.5."""

    instances = []

    def __init__(self, modalities):
        self.modalities = modalities
        self.taught = []
        self.limits = []
        self.model_id = "contrast-test-double"
        self.device = "cpu"
        ContrastScorer.instances.append(self)

    def teach(self, frames):
        self.taught.append([f.stream for f in frames])

    def teach_defects(self, frames):
        self.limits.append(list(frames))

    def detect(self, frame):
        maps = {}
        if "rgb" in self.modalities:
            g = frame.rgb.astype(np.float32).mean(-1)
            maps["rgb"] = np.clip(np.abs(g - np.median(g)) / 100.0, 0, 1)
        if "sensor" in self.modalities:
            maps["sensor"] = np.clip(np.abs(frame.sensor - np.median(frame.sensor)) / 4.0, 0, 1)
        # As the detector does: unaligned modalities are not fused per pixel.
        amap = (np.maximum.reduce(list(maps.values())) if frame.registered
                else maps.get("rgb", next(iter(maps.values())))).astype(np.float32)
        score = float(amap.max())
        return Detection(anomaly_map=amap, pred_mask=amap > 0.5, pred_score=score,
                         threshold=0.5, modality_scores={m: float(v.max())
                                                         for m, v in maps.items()},
                         modalities_present=frame.present, modality_maps=maps,
                         timings_ms={"total": 1.0},
                         rule_results=[{"name": "structure", "passed": True, "reason": "",
                                        "score": 1.0}])


@pytest.fixture
def samples():
    out = []
    for c, cat in enumerate(("plate", "tile")):
        out += [make_sample(100 * c + i, cat, "good", None) for i in range(6)]
        out += [make_sample(100 * c + 10 + i, cat, "stain", "rgb") for i in range(3)]
        out += [make_sample(100 * c + 20 + i, cat, "hot_spot", "sensor") for i in range(3)]
    return out


def test_perfect_separation_and_tables(samples):
    rec = evaluate_samples(samples, ContrastScorer, progress_every=0, name="toy")
    overall = rec["configs"]["all"]["overall"]
    assert overall["n_samples"] == 24 and overall["n_good"] == 12
    assert overall["image_auroc"] == 1.0
    assert overall["pixel_auroc"] > 0.99
    assert overall["aupro"] > 0.99
    assert overall["false_alarm_rate"] == 0.0 and overall["miss_rate"] == 0.0
    assert overall["report_valid_rate"] == 1.0
    per_dt = rec["configs"]["all"]["per_defect_type"]
    assert set(per_dt) == {"stain", "hot_spot"}
    # A defect type is scored against the good parts of its categories: 6 + 6 good.
    assert per_dt["stain"]["n_good"] == 12 and per_dt["stain"]["n_defective"] == 6
    assert set(rec["configs"]["all"]["per_category"]) == {"plate", "tile"}
    assert rec["configs"]["all"]["category_mean"]["n_categories"] == 2
    assert rec["configs"]["all"]["category_mean"]["image_auroc"] == 1.0


def test_ablation_shows_which_modality_is_needed(samples):
    rec = evaluate_samples(samples, ContrastScorer, ablate_modalities=True, progress_every=0)
    assert set(rec["configs"]) == {"all", "without_rgb", "without_sensor"}
    no_sensor = rec["configs"]["without_sensor"]["per_defect_type"]
    no_rgb = rec["configs"]["without_rgb"]["per_defect_type"]
    assert no_sensor["stain"]["image_auroc"] == 1.0
    assert no_sensor["hot_spot"]["image_auroc"] < 0.8
    assert no_rgb["hot_spot"]["image_auroc"] == 1.0
    assert no_rgb["stain"]["image_auroc"] < 0.8
    cats = rec["configs"]["without_rgb"]["per_category"]
    assert rec["configs"]["without_rgb"]["category_mean"]["aupro"] == pytest.approx(
        (cats["plate"]["aupro"] + cats["tile"]["aupro"]) / 2)


def test_teach_mode_excludes_references_and_averages_draws(samples):
    ContrastScorer.instances.clear()
    rec = evaluate_samples(samples, ContrastScorer, references=2, draws=3, progress_every=0)
    assert len(ContrastScorer.instances) == 3  # a fresh detector per draw
    for det in ContrastScorer.instances:
        assert sorted(det.taught) == [["plate", "plate"], ["tile", "tile"]]
    overall = rec["configs"]["all"]["overall"]
    assert overall["n_samples"] == 24 - 2 * 2 and overall["n_good"] == 8
    assert len(rec["configs"]["all"]["draws"]) == 3
    scored = [{r.index for r in draw} for draw in rec["runs"]["all"].draws]
    assert all(len(s) == 20 for s in scored) and len({frozenset(s) for s in scored}) > 1
    with pytest.raises(ValueError, match="needs at least 7"):
        evaluate_samples(samples, ContrastScorer, references=7, progress_every=0)


def test_limit_samples_are_taught_after_the_references_and_not_scored(samples):
    ContrastScorer.instances.clear()
    plain = evaluate_samples(samples, ContrastScorer, references=2, draws=2, progress_every=0)
    ContrastScorer.instances.clear()
    rec = evaluate_samples(samples, ContrastScorer, references=2, draws=2, limit_samples=2,
                           progress_every=0)
    assert rec["protocol"]["limit_samples"] == 2
    for det in ContrastScorer.instances:  # per draw: 2 defective parts of each category
        assert len(det.limits) == 2 and all(len(x) == 2 for x in det.limits)
        assert sorted({f.stream for x in det.limits for f in x}) == ["plate", "tile"]
    by_id = {s.frame.rgb.tobytes(): s for s in samples}
    for draw, det in zip(rec["runs"]["all"].draws, ContrastScorer.instances):
        taught = [by_id[f.rgb.tobytes()] for x in det.limits for f in x]
        assert all(s.label == 1 for s in taught)
        assert not {s.sample_id for s in taught} & {r.sample_id for r in draw}  # not scored
    # the references are those of the run without limit samples: paired comparisons
    for a, b in zip(plain["runs"]["all"].draws, rec["runs"]["all"].draws):
        assert {r.sample_id for r in b} < {r.sample_id for r in a}
        assert len({r.sample_id for r in a}) - len({r.sample_id for r in b}) == 4
    with pytest.raises(ValueError, match="references"):
        evaluate_samples(samples, ContrastScorer, limit_samples=2, progress_every=0)
    with pytest.raises(ValueError, match="defective samples"):
        evaluate_samples(samples, ContrastScorer, references=2, limit_samples=6,
                         progress_every=0)


def test_cli_checks_the_operating_point_options(tmp_path, capsys):
    for args in (["--limit-samples", "2"], ["--references", "2", "--target-miss-rate", "0.1"],
                 ["--references", "2", "--limit-samples", "2", "--target-miss-rate", "1.5"],
                 ["--references", "2", "--limit-samples", "2", "--workers", "2"]):
        with pytest.raises(SystemExit) as e:
            cli_main(["offline", str(tmp_path), "--out", str(tmp_path / "o")] + args)
        assert e.value.code != 0
    assert "--limit-samples" in capsys.readouterr().err


def test_pixel_metrics_skip_samples_without_gt_and_unregistered_fused_maps(samples):
    samples[6] = make_sample(10, "plate", "stain", "rgb", with_gt=False)
    # Unregistered: only the RGB modality map counts at pixel level.
    samples[9] = make_sample(20, "plate", "hot_spot", "sensor", registered=False)
    rec = evaluate_samples(samples, ContrastScorer, progress_every=0)
    results = {r.index: r for r in rec["runs"]["all"].draws[0]}
    assert results[6].anomaly_map is None and "no pixel ground truth" in \
        results[6].pixel_skip_reason
    assert results[9].anomaly_map.max() < 0.2  # the RGB map does not see a sensor defect
    assert rec["configs"]["all"]["overall"]["n_pixel_gt"] == 23


def test_outputs_written(samples, tmp_path):
    rec = evaluate_samples(samples, ContrastScorer, ablate_modalities=True, progress_every=0,
                           pixel_stride=2)
    paths = write_outputs(rec, str(tmp_path))
    data = json.loads(open(paths["metrics"]).read())
    assert data["configs"]["all"]["overall"]["image_auroc"] == 1.0
    assert data["protocol"]["pixel_stride"] == 2
    rows = {r["sample_id"]: r for r in data["configs"]["all"]["per_sample"]}
    assert len(rows) == 24
    for r in rec["runs"]["all"].draws[0]:
        assert rows[r.sample_id]["pred_score"] == pytest.approx(r.pred_score)
        assert rows[r.sample_id]["anomalous"] == (r.label == 1)  # the toy set separates
    md = open(paths["summary"]).read()
    assert "| plate |" in md and "hot_spot" in md and "without_sensor" in md
    for png in ("roc.png", "pro.png", "scores.png", "examples_misses.png",
                "examples_false_alarms.png"):
        p = tmp_path / png
        assert p.exists() and p.stat().st_size > 5000
        assert png in data["figures"]


def test_degenerate_set_reports_reasons(tmp_path):
    only_good = [make_sample(i, "plate", "good", None) for i in range(4)]
    rec = evaluate_samples(only_good, ContrastScorer, progress_every=0)
    auroc = rec["configs"]["all"]["overall"]["image_auroc"]
    assert math.isnan(auroc) and "only good" in auroc.reason
    paths = write_outputs(rec, str(tmp_path))
    data = json.loads(open(paths["metrics"]).read())
    assert data["configs"]["all"]["overall"]["image_auroc"]["value"] is None
    assert "only good" in open(paths["summary"]).read()


def test_bad_arguments():
    with pytest.raises(ValueError, match="no samples"):
        evaluate_samples([], ContrastScorer)
    with pytest.raises(ValueError, match="draws"):
        evaluate_samples([make_sample(0, "p", "good", None)], ContrastScorer, draws=0)


def test_cli_rejects_missing_bag(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["offline", str(tmp_path / "nope.mcap"), "--out", str(tmp_path / "o")])
    assert e.value.code != 0
    assert "nope.mcap" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o" / "metrics.json")


def test_foreground_figures_reach_the_record_and_the_summary(samples, tmp_path):
    from zsg_iad_ros.evaluation.baselines import content_free_metrics
    rec = evaluate_samples(samples, ContrastScorer, references=2, draws=2, progress_every=0,
                           pixel_stride=2)
    cfg = rec["configs"]["all"]
    for key in ("pixel_auroc_fg", "aupro_fg", "fg_defect_coverage", "fg_area_fraction"):
        assert key in cfg["overall"] and key in cfg["per_category"]["plate"]
    assert "pixel_auroc_fg" in cfg["category_mean"] and "aupro_fg" in cfg["draws"][1]
    first, second = rec["runs"]["all"].draws
    assert first[0].foreground.shape == first[0].gt_mask.shape == (H // 2, W // 2)
    assert second[0].foreground is None  # dropped with the maps after scoring
    rec["baselines"] = {"content-free map": content_free_metrics(samples, pixel_stride=2)}
    paths = write_outputs(rec, str(tmp_path))
    md = open(paths["summary"]).read()
    assert "px AUROC fg" in md and "AUPRO fg" in md and "| baseline: content-free map |" in md
    assert "plate (baseline: content-free map)" in md and "draw 1 of 2" in md
    data = json.loads(open(paths["metrics"]).read())
    assert "pixel_auroc_fg" in data["configs"]["all"]["overall"]
    assert data["baselines"]["content-free map"]["polarity"] in ("bright", "dark")


class WarmUpScorer(ContrastScorer):
    """Test double with a stream warm-up: each stream's first 4 parts (good ones in the
    fixture's order) are published as not confident, at the top score."""

    def __init__(self, modalities):
        super().__init__(modalities)
        self.seen = {}

    def detect(self, frame):
        det = ContrastScorer.detect(self, frame)
        n = self.seen[frame.stream] = self.seen.get(frame.stream, 0) + 1
        if n <= 4:
            det.pred_score, det.confident = 1.0, False
        return det


def test_the_ranking_after_the_warm_up_is_reported_beside_the_whole_one(samples, tmp_path):
    rec = evaluate_samples(samples, WarmUpScorer, progress_every=0, name="toy")
    overall = rec["configs"]["all"]["overall"]
    assert overall["image_auroc"] < 0.95           # the warm-up's parts are ranked wrongly
    assert overall["image_auroc_confident"] == 1.0  # the parts after it are not
    assert overall["unknown_rate"] == pytest.approx(8 / 24)
    assert rec["configs"]["all"]["category_mean"]["image_auroc_confident"] == 1.0
    md = open(write_outputs(rec, str(tmp_path))["summary"]).read()
    assert "with a calibrated stream, all modalities: 1.000" in md
    assert "0.333 of the parts" in md and "img AUROC confident" in md
    # a detector that is confident from the first part: no note, the same figure
    plain = evaluate_samples(samples, ContrastScorer, progress_every=0)["configs"]["all"]
    assert plain["overall"]["image_auroc_confident"] == plain["overall"]["image_auroc"] == 1.0
    assert plain["overall"]["image_auroc_first"] == 1.0
    assert plain["overall"]["revised_rate"] == 0.0


class RevisingScorer(WarmUpScorer):
    """Test double of held warm-up parts: each stream's first 4 parts are published as not
    confident at the top score, held, and revised with their true score after its 6th part."""

    def __init__(self, modalities):
        super().__init__(modalities)
        self.held = []

    def detect(self, frame):
        det = WarmUpScorer.detect(self, frame)
        if not det.confident:
            self.held.append(frame)
        return det

    def revise_held(self):
        ready = [f for f in self.held if self.seen[f.stream] >= 6]
        self.held = [f for f in self.held if all(f is not r for r in ready)]
        out = []
        for f in ready:
            det = ContrastScorer.detect(self, f)
            det.revision = True
            out.append((f, det))
        return out


def test_parts_held_through_the_warm_up_are_scored_by_their_revision(samples, tmp_path):
    rec = evaluate_samples(samples, RevisingScorer, progress_every=0, name="toy")
    overall = rec["configs"]["all"]["overall"]
    assert overall["image_auroc"] == 1.0  # the cell decides on the revisions
    assert overall["image_auroc_first"] < 0.95  # as first published: the warm-up at the top
    assert overall["revised_rate"] == pytest.approx(8 / 24)
    assert overall["unknown_rate"] == 0.0
    rows = rec["configs"]["all"]["per_sample"]
    assert len(rows) == len(samples)  # one result per part, in place of its first one
    assert sum(r["revised"] for r in rows) == 8
    assert all(r["first_score"] == 1.0 for r in rows if r["revised"])
    run = rec["runs"]["all"].draws[0]
    revised = [r for r in run if r.revised]
    assert len(revised) == 8 and all(r.first_score == 1.0 and r.confident for r in revised)
    assert all(r.first_score is None for r in run if not r.revised)
    assert [r.index for r in run] == sorted(r.index for r in run)  # scoring order kept
    md = open(write_outputs(rec, str(tmp_path))["summary"]).read()
    assert "0.333 of the parts here, were scored before" in md
    assert "As first published, image AUROC (all modalities) " in md
    assert "img AUROC first published" in md
