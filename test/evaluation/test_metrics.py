"""Metrics against cases small enough to compute by hand."""
import json
import math

import numpy as np
import pytest

from zsg_iad_ros.evaluation import metrics as M


# --- image level -----------------------------------------------------------------------------

def test_image_auroc_hand_computed():
    # Pairs (defective, good) ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4)
    assert M.image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.image_auroc([0, 1], [0.2, 0.9]) == 1.0
    assert M.image_auroc([0, 1], [0.9, 0.2]) == 0.0
    # A tie counts one half.
    assert M.image_auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_image_f1_max_hand_computed():
    labels = [0, 1, 1, 0, 1]
    scores = [0.1, 0.9, 0.8, 0.7, 0.2]
    # t=0.2: TP 3, FP 1, FN 0 -> P 3/4, R 1 -> F1 6/7 (the best; t=0.8 gives 0.8).
    f1, thr = M.f1_max(labels, scores)
    assert f1 == pytest.approx(6 / 7)
    assert thr == pytest.approx(0.2)
    assert M.image_f1_max([0, 1], [0.0, 1.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1], []])
def test_one_class_gives_nan_with_reason(labels):
    scores = [0.5] * len(labels)
    for value in (M.image_auroc(labels, scores), M.image_f1_max(labels, scores)):
        assert math.isnan(value)
        assert value.reason
        assert not value.valid
        assert value.to_json() == {"value": None, "reason": value.reason}
    assert "good" in M.image_auroc([1, 1], [0.1, 0.2]).reason


def test_bad_image_input_is_a_clear_error():
    with pytest.raises(ValueError, match="equal length"):
        M.image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0 .good. or 1"):
        M.image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-finite"):
        M.image_auroc([0, 1], [0.1, float("nan")])


# --- pixel level -----------------------------------------------------------------------------

def test_pixel_auroc_pools_pixels_and_skips_samples_without_gt():
    gt = [np.array([[1, 0]], bool), np.array([[0, 0]], bool), None]
    maps = [np.array([[0.9, 0.1]], np.float32), np.array([[0.5, 0.95]], np.float32),
            np.array([[5.0, 5.0]], np.float32)]  # would break the ranking if not skipped
    # defective pixel 0.9 vs normals 0.1, 0.5, 0.95 -> 2 of 3 pairs right.
    assert M.pixel_auroc(gt, maps) == pytest.approx(2 / 3)
    assert math.isnan(M.pixel_auroc([None], [maps[0]]))
    assert "no sample with pixel ground truth" in M.pixel_auroc([None], [maps[0]]).reason
    only_good = M.pixel_auroc([gt[1]], [maps[1]])
    assert math.isnan(only_good) and "good" in only_good.reason


def test_pixel_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        M.pixel_auroc([np.zeros((2, 2), bool)], [np.zeros((2, 3), np.float32)])
    with pytest.raises(ValueError, match="masks but"):
        M.aupro([np.zeros((2, 2), bool)], [])


def test_pixel_f1_max_hand_computed():
    gt = [np.array([[1, 1, 0, 0]], bool)]
    amap = [np.array([[0.9, 0.4, 0.6, 0.1]], np.float32)]
    # t=0.9: P1 R.5 F1 2/3; t=0.6: P.5 R.5 F1 .5; t=0.4: P 2/3 R1 F1 .8 (best); t=0.1: F1 2/3
    assert M.pixel_f1_max(gt, amap) == pytest.approx(0.8)


def test_aupro_single_region_hand_computed():
    gt = [np.array([[1, 1, 0, 0]], bool)]
    amap = [np.array([[0.9, 0.4, 0.6, 0.1]], np.float32)]
    # Descending: 0.9 (region, PRO .5) 0.6 (normal, FPR .5) 0.4 (region, PRO 1) 0.1 (FPR 1)
    # PRO is 0.5 on FPR [0, 0.3] -> area 0.15 -> normalised 0.5.
    fpr, pro = M.pro_curve(gt, amap)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1, 1])
    assert M.aupro(gt, amap) == pytest.approx(0.5)
    assert M.aupro(gt, amap, max_fpr=1.0) == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_aupro_averages_regions_not_pixels():
    # Region A (1 px, score 0.9) and region B (3 px, score 0.2) in two images + a good image.
    # Normals: 0.5 and 0.1. At FPR in [0, 0.5) only A is found: PRO = 1/2 (pixel recall would
    # be 1/4). AUPRO@0.3 = 0.5.
    gt = [np.array([[1, 0]], bool), np.array([[1, 1, 1]], bool), np.array([[0]], bool)]
    amap = [np.array([[0.9, 0.5]], np.float32), np.full((1, 3), 0.2, np.float32),
            np.array([[0.1]], np.float32)]
    assert M.aupro(gt, amap) == pytest.approx(0.5)
    # Diagonal neighbours are one region (8-connectivity, as in MVTec AD): with regions
    # {(0,0),(1,1)} and {(3,3)}, finding only (3,3) gives PRO 1/2 (1/3 with 4-connectivity).
    gt = np.zeros((4, 4), bool)
    gt[0, 0] = gt[1, 1] = gt[3, 3] = True
    amap = np.zeros((4, 4), np.float32)
    amap[3, 3] = 0.95
    fpr, pro = M.pro_curve([gt], [amap])
    assert (fpr[1], pro[1]) == (0.0, pytest.approx(0.5))


def test_aupro_ties_and_interpolation_hand_computed():
    # One region pixel at 0.5 tied with one of five normal pixels: the first curve point after
    # the origin is (FPR 0.2, PRO 1), a sloped segment. Area on [0, 0.3]:
    # triangle 0.5*0.2*1 + rectangle 0.1*1 = 0.2 -> /0.3 = 2/3.
    gt = [np.array([[1, 0, 0, 0, 0, 0]], bool)]
    amap = [np.array([[0.5, 0.5, 0.1, 0.1, 0.1, 0.1]], np.float32)]
    assert M.aupro(gt, amap) == pytest.approx(2 / 3)
    # Three normals above the defect: FPR reaches 0.3 with PRO 0 -> AUPRO 0.
    gt = [np.array([[1] + [0] * 10], bool)]
    amap = [np.array([[0.5, 0.9, 0.8, 0.7] + [0.1] * 7], np.float32)]
    assert M.aupro(gt, amap) == pytest.approx(0.0)
    # Perfect separation.
    assert M.aupro([np.array([[1, 0, 0]], bool)], [np.array([[1.0, 0.0, 0.2]])]) == 1.0


def test_aupro_degenerate_cases():
    no_region = M.aupro([np.zeros((2, 2), bool)], [np.zeros((2, 2), np.float32)])
    assert math.isnan(no_region) and "no defect region" in no_region.reason
    all_defect = M.aupro([np.ones((2, 2), bool)], [np.zeros((2, 2), np.float32)])
    assert math.isnan(all_defect) and "no normal pixel" in all_defect.reason
    assert math.isnan(M.aupro([None], [np.zeros((2, 2))]))
    with pytest.raises(ValueError, match="max_fpr"):
        M.aupro([np.ones((2, 2), bool)], [np.zeros((2, 2))], max_fpr=0)


def test_aupro_matches_threshold_sweep_on_random_maps():
    # Cross-check of the one-sort algorithm against the definition (per threshold, per region).
    from scipy import ndimage
    rng = np.random.default_rng(0)
    gts, maps = [], []
    for _ in range(3):
        gt = np.zeros((12, 12), bool)
        gt[rng.integers(0, 8):, rng.integers(0, 8):][:3, :4] = True
        gt[1, 1] = True
        gts.append(gt)
        maps.append(np.round(rng.random((12, 12)) + gt * 0.5, 2).astype(np.float32))
    fpr, pro = M.pro_curve(gts, maps)
    regions = []
    for i, gt in enumerate(gts):
        lab, n = ndimage.label(gt, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normals = np.concatenate([m[~g] for g, m in zip(gts, maps)])
    for t in np.unique(np.concatenate([m.ravel() for m in maps])):
        want_pro = np.mean([(maps[i][r] >= t).mean() for i, r in regions])
        want_fpr = (normals >= t).mean()
        k = np.flatnonzero(np.isclose(fpr, want_fpr) & np.isclose(pro, want_pro))
        assert k.size, f"threshold {t}: ({want_fpr}, {want_pro}) not on the curve"


# --- inside the part's foreground ------------------------------------------------------------

def _part_scene():
    """20x20 image: part = centre 10x10, defect = 2x2 inside it; map 1 on the whole part."""
    part = np.zeros((20, 20), bool)
    part[5:15, 5:15] = True
    gt = np.zeros((20, 20), bool)
    gt[8:10, 8:10] = True
    return part, gt, part.astype(np.float32)


def test_foreground_metrics_ignore_background_pixels():
    part, gt, amap = _part_scene()
    # Whole image: the 4 defect pixels (1.0) beat the 300 background pixels (0.0) and tie with
    # the 96 normal part pixels: (300 + 0.5 * 96) / 396.
    assert M.pixel_auroc([gt], [amap]) == pytest.approx(348 / 396)
    # Inside the part the map says nothing: all ties.
    assert M.pixel_auroc([gt], [amap], [part]) == pytest.approx(0.5)
    # AUPRO: one tied curve segment, PRO = FPR inside (chance, 0.15); over the whole image PRO
    # reaches 1 at FPR 96/396 (the part's normal pixels) and stays there.
    assert M.aupro([gt], [amap], foregrounds=[part]) == pytest.approx(0.15)
    f = 96 / 396
    assert M.aupro([gt], [amap]) == pytest.approx((0.5 * f + (0.3 - f)) / 0.3)
    # A map that finds the defect inside the part is perfect there.
    good_map = amap + gt
    assert M.pixel_auroc([gt], [good_map], [part]) == 1.0
    assert M.aupro([gt], [good_map], foregrounds=[part]) == 1.0
    # Foreground None or all True: the whole-image figures.
    for fg in (None, np.ones_like(part)):
        assert M.pixel_auroc([gt], [amap], [fg]) == M.pixel_auroc([gt], [amap])
        assert M.aupro([gt], [amap], foregrounds=[fg]) == M.aupro([gt], [amap])


def test_foreground_pro_equals_the_cropped_image():
    # A rectangular foreground is the same as cropping, regions included (random maps, ties).
    rng = np.random.default_rng(1)
    gts, maps, fgs = [], [], []
    for i in range(3):
        gt = np.zeros((16, 16), bool)
        gt[4 + i:7 + i, 5:9] = True
        gt[10, 10 + i] = True
        fg = np.zeros((16, 16), bool)
        fg[2:14, 3:15] = True
        gts.append(gt)
        maps.append(np.round(rng.random((16, 16)) + 0.4 * gt, 2).astype(np.float32))
        fgs.append(fg)
    crop = (slice(2, 14), slice(3, 15))
    got = M.pro_curve(gts, maps, fgs)
    want = M.pro_curve([g[crop] for g in gts], [m[crop] for m in maps])
    np.testing.assert_allclose(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    assert M.pixel_auroc(gts, maps, fgs) == pytest.approx(
        M.pixel_auroc([g[crop] for g in gts], [m[crop] for m in maps]))


def test_foreground_keeps_regions_whole_and_reports_coverage():
    # A region cut by the foreground edge stays one region, measured by its inside pixels:
    # inside it are 2 pixels, one found -> PRO 1/2 (labelling the inside would give 2 regions).
    gt = np.zeros((4, 6), bool)
    gt[1, 1:4] = True  # pixels (1,1) (1,2) inside, (1,3) outside
    fg = np.zeros((4, 6), bool)
    fg[:, :3] = True
    amap = np.zeros((4, 6), np.float32)
    amap[1, 1] = 1.0
    fpr, pro = M.pro_curve([gt], [amap], [fg])
    assert (fpr[1], pro[1]) == (0.0, pytest.approx(0.5))
    assert M.foreground_coverage([gt, None], [fg, None]) == pytest.approx(2 / 3)
    assert M.foreground_coverage([gt], [None]) == 1.0
    assert math.isnan(M.foreground_coverage([np.zeros((2, 2), bool)], [None]))
    outside = M.aupro([gt], [amap], foregrounds=[~gt & False])
    assert math.isnan(outside) and "inside the foreground" in outside.reason
    with pytest.raises(ValueError, match="foreground"):
        M.pixel_auroc([gt], [amap], [fg[:, :3]])


# --- decisions and latency -------------------------------------------------------------------

def test_decision_rates():
    rates = M.decision_rates([0, 0, 0, 0, 1, 1], [True, False, False, False, False, True],
                             unknown=[False, False, True, False, False, False])
    assert rates["false_alarm_rate"] == pytest.approx(0.25)
    assert rates["miss_rate"] == pytest.approx(0.5)
    assert rates["unknown_rate"] == pytest.approx(1 / 6)
    only_good = M.decision_rates([0, 0], [False, True])
    assert math.isnan(only_good["miss_rate"]) and only_good["miss_rate"].reason
    assert only_good["false_alarm_rate"] == pytest.approx(0.5)


def test_latency_percentiles():
    timings = [{"total": float(v), "features": 1.0} for v in range(1, 101)]
    timings[0].pop("features")
    lat = M.latency_percentiles(timings)
    assert lat["total"]["p50"] == pytest.approx(50.5)
    assert lat["total"]["p95"] == pytest.approx(95.05)
    assert lat["total"]["p99"] == pytest.approx(99.01)
    assert lat["total"]["n"] == 100 and lat["features"]["n"] == 99
    assert lat["features"]["p95"] == 1.0


def test_metric_json_round_trip():
    value = M.Metric(0.25)
    assert json.loads(json.dumps(value.to_json())) == 0.25
    assert value.reason == "" and value.valid


# --- foreground figures in the result tables, the content-free baseline, plots ---------------

def _results(map_fn, with_fg=True):
    from zsg_iad_ros.evaluation.results import SampleResult
    part, gt, _ = _part_scene()
    out = []
    for i, label in enumerate((1, 1, 0, 0)):
        g = gt if label else np.zeros_like(gt)
        out.append(SampleResult(
            index=i, sample_id=str(i), category="c" if i % 2 else "d", defect_type="dent",
            label=label, pred_score=0.5 + 0.4 * label, threshold=0.5,
            anomaly_map=map_fn(part, g), gt_mask=g, foreground=part if with_fg else None))
    return out


def test_result_tables_carry_foreground_metrics():
    from zsg_iad_ros.evaluation.results import (average_metrics, compute_metrics,
                                                grouped_metrics, spread_over_draws)
    blunt = lambda part, g: part.astype(np.float32)  # noqa: E731  high on the whole part
    sharp = lambda part, g: part + g.astype(np.float32)  # noqa: E731  finds the defect
    m = compute_metrics(_results(blunt))
    assert m["pixel_auroc"] > 0.85 and m["pixel_auroc_fg"] == pytest.approx(0.5)
    assert m["fg_defect_coverage"] == 1.0 and m["fg_area_fraction"] == pytest.approx(0.25)
    none = compute_metrics(_results(blunt, with_fg=False))
    assert math.isnan(none["pixel_auroc_fg"]) and "no foreground" in none["pixel_auroc_fg"].reason
    draws = []
    for fn in (blunt, sharp):
        d = compute_metrics(_results(fn))
        d.update(grouped_metrics(_results(fn)))
        draws.append(d)
    assert draws[1]["per_category"]["c"]["pixel_auroc_fg"] == 1.0
    assert draws[1]["category_mean"]["aupro_fg"] == 1.0
    avg = average_metrics(draws)
    assert avg["pixel_auroc_fg"] == pytest.approx(0.75)
    assert avg["category_mean"]["pixel_auroc_fg"] == pytest.approx(0.75)
    assert avg["per_defect_type"]["dent"]["aupro_fg"] == pytest.approx((0.15 + 1.0) / 2)
    assert spread_over_draws(draws)["pixel_auroc_fg"] == pytest.approx(np.std([0.5, 1.0],
                                                                              ddof=1))


def test_sample_result_estimates_the_foreground_from_its_rgb():
    from zsg_iad_ros.evaluation.results import SampleResult
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[16:48, 20:44] = 200
    gt = np.zeros((64, 64), bool)
    r = SampleResult(index=0, sample_id="s", category="c", defect_type="good", label=0,
                     pred_score=0.1, threshold=0.5, anomaly_map=np.zeros((64, 64), np.float32),
                     gt_mask=gt, rgb=rgb)
    assert r.foreground is not None and r.foreground[16:48, 20:44].all()
    assert r.foreground.mean() < 0.4


def _baseline_samples():
    """Bright parts on a dark table, each defect a dark spot inside the part."""
    from zsg_iad_ros.core.frame import Frame, Sample
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    out = []
    for i in range(4):
        part = ((y - 64) / 48.0) ** 2 + ((x - 62 - i) / 40.0) ** 2 <= 1
        rgb = np.where(part[..., None], 190.0, 15.0) + rng.normal(0, 3, (128, 128, 3))
        gt = np.zeros((128, 128), bool)
        if i % 2:
            gt = (y - 56 - 3 * i) ** 2 + (x - 56) ** 2 <= 64
            rgb[gt] = 90.0
        out.append(Sample(frame=Frame(rgb=np.clip(rgb, 0, 255).astype(np.uint8)),
                          label=int(gt.any()), category="part", defect_type="spot",
                          gt_mask=gt, sample_id=str(i)))
    return out


def test_content_free_baseline_picks_the_polarity_per_view():
    from zsg_iad_ros.evaluation.baselines import content_free_metrics, describe
    m = content_free_metrics(_baseline_samples())
    # Over the whole image the bright part is where the defects are; inside the part the
    # defects are the dark spots. Each view reports its better polarity, and says which.
    assert m["polarity"] == "bright" and m["polarity_fg"] == "dark"
    assert m["pixel_auroc"] > 0.6 and m["pixel_auroc_fg"] > 0.8
    assert m["pixel_auroc"] == m["per_polarity"]["bright"]["pixel_auroc"]
    assert m["per_polarity"]["bright"]["pixel_auroc_fg"] < 0.2
    assert m["per_polarity"]["dark"]["pixel_auroc"] < 0.4
    assert m["aupro_fg"] == m["per_polarity"]["dark"]["aupro_fg"]
    assert m["fg_defect_coverage"] == 1.0 and m["n_pixel_gt"] == 4
    assert m["per_category"]["part"]["pixel_auroc"] == m["pixel_auroc"]
    assert "(bright)" in describe(m) and "(dark)" in describe(m)
    strided = content_free_metrics(_baseline_samples(), pixel_stride=2, per_category=False)
    assert "per_category" not in strided and strided["polarity_fg"] == "dark"


def test_content_free_baseline_scores_the_frames_brightness_per_image():
    """The frame's brightness separates good from defective parts only where the capture
    differs between them: defective parts shot under a brighter lamp (no defect in the image)
    score image AUROC 1 in the bright polarity; the same frames at one exposure score 0.5."""
    import dataclasses
    from zsg_iad_ros.evaluation.baselines import content_free_metrics, describe
    first = _baseline_samples()[0].frame
    # every frame the first good one: nothing in the images tells the labels apart
    same = [dataclasses.replace(s, frame=dataclasses.replace(first, rgb=first.rgb.copy()))
            for s in _baseline_samples()]
    m = content_free_metrics(same)
    assert float(m["image_auroc"]) == 0.5
    lamp = [dataclasses.replace(s, frame=dataclasses.replace(s.frame, rgb=np.clip(
        s.frame.rgb * (1.3 if s.label else 1.0), 0, 255).astype(np.uint8))) for s in same]
    m = content_free_metrics(lamp)
    assert float(m["image_auroc"]) == 1.0 and m["image_polarity"] == "bright"
    assert float(m["per_category"]["part"]["image_auroc"]) == 1.0
    dark = [dataclasses.replace(s, frame=dataclasses.replace(s.frame, rgb=(
        s.frame.rgb * (0.7 if s.label else 1.0)).astype(np.uint8))) for s in same]
    assert content_free_metrics(dark)["image_polarity"] == "dark"
    assert "frame brightness image AUROC 1.000 (bright)" in describe(m)


def test_plots_name_the_draw_and_the_mean(monkeypatch, tmp_path):
    from zsg_iad_ros.evaluation import plots
    legends = {}

    def keep(fig, path):
        ax = fig.axes[0]
        legends[path] = ([t.get_text() for t in ax.get_legend().get_texts()], ax.get_title())
        plots.plt.close(fig)
        return path
    monkeypatch.setattr(plots, "_save", keep)
    results = _results(lambda part, g: part + g.astype(np.float32))
    means = {"image_auroc": M.Metric(0.76), "pixel_auroc": M.Metric(0.8),
             "pixel_auroc_fg": M.Metric(0.9), "aupro": M.Metric(0.7), "aupro_fg": M.Metric(0.6)}
    roc, title = legends[plots.plot_roc(results, str(tmp_path / "roc.png"), means, 3)]
    assert title == "ROC, draw 1 of 3"
    assert "image AUROC 1.000 (draw 1 of 3; mean over draws 0.760)" in roc
    assert any(t.startswith("pixel, inside the part AUROC 1.000") and "0.900" in t for t in roc)
    pro, _ = legends[plots.plot_pro(results, str(tmp_path / "pro.png"), means, 3)]
    assert any("inside the part" in t and "mean over draws 0.600" in t for t in pro)
    single, title = legends[plots.plot_roc(results, str(tmp_path / "one.png"))]
    assert title == "ROC" and "image AUROC 1.000" in single
