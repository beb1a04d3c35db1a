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
