"""Anomaly detection metrics: image/pixel AUROC, AUPRO, F1-max, decision rates, latency.

Every metric returns a `Metric`: a float that also carries `reason`, empty when the value is
valid and a short explanation when it is NaN (e.g. only one class present), so a table can say
why a cell is empty instead of silently showing a number that means nothing.

Pixel metrics pool the pixels of all samples that have pixel ground truth; a sample whose
`gt_mask` is None is skipped (counted by the caller), never treated as all-normal. Given
`foregrounds` (per sample an (H, W) bool mask of the part, or None for the whole image), pixel
AUROC and AUPRO count only the pixels inside the foreground: on an object lying on a plain
background, the whole-image figures mostly reward telling part from background.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

#: Integration limit of AUPRO on the false-positive-rate axis (MVTec AD protocol).
AUPRO_MAX_FPR = 0.3


class Metric(float):
    """A float with a `reason` for NaN values ("" when the value is valid)."""

    reason: str

    def __new__(cls, value: float, reason: str = "") -> "Metric":
        obj = super().__new__(cls, value)
        obj.reason = reason
        return obj

    @classmethod
    def nan(cls, reason: str) -> "Metric":
        return cls(float("nan"), reason)

    @property
    def valid(self) -> bool:
        return not np.isnan(self)

    def to_json(self):
        """JSON-safe form: the number, or None plus the reason (NaN is not valid JSON)."""
        if self.valid:
            return float(self)
        return {"value": None, "reason": self.reason}

    def __repr__(self) -> str:
        return f"Metric({float(self)!r}{', ' + repr(self.reason) if self.reason else ''})"


# ---------------------------------------------------------------------------------------------
# input checks

def _binary_and_scores(labels, scores) -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-D of equal length")
    if y.size and not np.isin(y, (0, 1, False, True)).all():
        raise ValueError("labels must be 0 (good) or 1 (defective)")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    return y.astype(bool), s


def _one_class_reason(y: np.ndarray, what: str) -> Optional[str]:
    if y.size == 0:
        return f"no {what}"
    if y.all():
        return f"only defective {what} (no good ones)"
    if not y.any():
        return f"only good {what} (no defective ones)"
    return None


def _pixel_pairs(gt_masks: Sequence[Optional[np.ndarray]],
                 anomaly_maps: Sequence[Optional[np.ndarray]],
                 foregrounds: Optional[Sequence[Optional[np.ndarray]]] = None
                 ) -> List[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]:
    """Triples (gt bool (H,W), map float (H,W), foreground bool (H,W) or None) of the samples
    with pixel ground truth and a map; the foreground is None when not restricted."""
    if len(gt_masks) != len(anomaly_maps):
        raise ValueError(f"{len(gt_masks)} masks but {len(anomaly_maps)} anomaly maps")
    if foregrounds is None:
        foregrounds = [None] * len(gt_masks)
    elif len(foregrounds) != len(gt_masks):
        raise ValueError(f"{len(gt_masks)} masks but {len(foregrounds)} foregrounds")
    pairs = []
    for i, (gt, amap, fg) in enumerate(zip(gt_masks, anomaly_maps, foregrounds)):
        if gt is None or amap is None:
            continue
        gt = np.asarray(gt)
        amap = np.asarray(amap, dtype=np.float32)
        if gt.shape != amap.shape or gt.ndim != 2:
            raise ValueError(f"sample {i}: gt_mask {gt.shape} and anomaly_map {amap.shape} "
                             "must be 2-D of the same shape")
        if not np.isfinite(amap).all():
            raise ValueError(f"sample {i}: anomaly_map contains non-finite values")
        if fg is not None:
            fg = np.asarray(fg, dtype=bool)
            if fg.shape != gt.shape:
                raise ValueError(f"sample {i}: foreground {fg.shape} does not match gt_mask "
                                 f"{gt.shape}")
            if fg.all():
                fg = None  # whole image: skip the copy
        pairs.append((gt.astype(bool), amap, fg))
    return pairs


# ---------------------------------------------------------------------------------------------
# image level

def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> Metric:
    """Area under the ROC curve of image scores. labels: (N,) 0/1; scores: (N,) float."""
    y, s = _binary_and_scores(labels, scores)
    reason = _one_class_reason(y, "samples")
    if reason:
        return Metric.nan(reason)
    return Metric(roc_auc_score(y, s))


def f1_max(labels: Sequence[int], scores: Sequence[float]) -> Tuple[Metric, float]:
    """Best F1 over all thresholds, and the threshold reaching it (score >= threshold)."""
    y, s = _binary_and_scores(labels, scores)
    reason = _one_class_reason(y, "samples")
    if reason:
        return Metric.nan(reason), float("nan")
    precision, recall, thresholds = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    # The last precision/recall pair has no threshold (recall 0 by construction).
    best = int(np.argmax(f1[:-1]))
    return Metric(f1[best]), float(thresholds[best])


def image_f1_max(labels: Sequence[int], scores: Sequence[float]) -> Metric:
    return f1_max(labels, scores)[0]


def roc_points(labels: Sequence[int], scores: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve, for plots; empty arrays when only one class exists."""
    y, s = _binary_and_scores(labels, scores)
    if _one_class_reason(y, "samples"):
        return np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


# ---------------------------------------------------------------------------------------------
# pixel level

def _pooled(pairs) -> Tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([gt.ravel() if fg is None else gt[fg] for gt, _, fg in pairs])
    s = np.concatenate([amap.ravel() if fg is None else amap[fg] for _, amap, fg in pairs])
    return y, s


def pooled_pixels(gt_masks: Sequence[Optional[np.ndarray]],
                  anomaly_maps: Sequence[Optional[np.ndarray]],
                  foregrounds: Optional[Sequence[Optional[np.ndarray]]] = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """(labels bool (P,), scores float32 (P,)) of the pooled pixels that `pixel_auroc` ranks
    (inside the foregrounds when given); for curves."""
    pairs = _pixel_pairs(gt_masks, anomaly_maps, foregrounds)
    if not pairs:
        return np.zeros(0, bool), np.zeros(0, np.float32)
    return _pooled(pairs)


def pixel_auroc(gt_masks: Sequence[Optional[np.ndarray]],
                anomaly_maps: Sequence[Optional[np.ndarray]],
                foregrounds: Optional[Sequence[Optional[np.ndarray]]] = None) -> Metric:
    """ROC AUC over the pooled pixels of the samples with pixel ground truth.

    gt_masks: per sample (H, W) bool or None (skipped); anomaly_maps: per sample (H, W) float;
    foregrounds: None, or per sample (H, W) bool (only its True pixels count) or None (all).
    """
    pairs = _pixel_pairs(gt_masks, anomaly_maps, foregrounds)
    if not pairs:
        return Metric.nan("no sample with pixel ground truth")
    y, s = _pooled(pairs)
    reason = _one_class_reason(y, "pixels")
    if reason:
        return Metric.nan(reason)
    return Metric(roc_auc_score(y, s))


def pixel_f1_max(gt_masks: Sequence[Optional[np.ndarray]],
                 anomaly_maps: Sequence[Optional[np.ndarray]]) -> Metric:
    """Best pixel F1 over thresholds, pooled like `pixel_auroc`."""
    pairs = _pixel_pairs(gt_masks, anomaly_maps)
    if not pairs:
        return Metric.nan("no sample with pixel ground truth")
    y, s = _pooled(pairs)
    return f1_max(y, s)[0]


def pro_curve(gt_masks: Sequence[Optional[np.ndarray]],
              anomaly_maps: Sequence[Optional[np.ndarray]],
              foregrounds: Optional[Sequence[Optional[np.ndarray]]] = None
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-region overlap (PRO) against the false positive rate, over all thresholds.

    Hand-written because scikit-learn has no PRO curve. Follows the MVTec AD protocol: every
    8-connected component of every gt_mask is one region; at a threshold t, PRO is the mean over
    regions of the fraction of the region with score >= t, and FPR is the fraction of all normal
    pixels with score >= t. Computed exactly in one sort: each region pixel adds
    1 / (n_regions * region_area) to PRO and each normal pixel 1 / n_normal to FPR; tied scores
    are merged into one curve point.

    With `foregrounds`, only pixels inside the foreground count: regions are still the
    components of the whole gt_mask, each measured by its pixels inside the foreground (a
    region with none is left out), and FPR is over the normal pixels inside the foreground.

    Returns (fpr, pro), both increasing from 0 to 1; empty arrays when there is no region or no
    normal pixel.
    """
    pairs = _pixel_pairs(gt_masks, anomaly_maps, foregrounds)
    region_weights, weights_fpr, scores = [], [], []
    n_regions = 0
    for gt, amap, fg in pairs:
        labelled, n = ndimage.label(gt, structure=np.ones((3, 3), dtype=bool))
        if fg is not None:
            labelled, gt, amap = labelled[fg], gt[fg], amap[fg]
        labelled = labelled.ravel()
        area = np.bincount(labelled, minlength=n + 1).astype(np.float64)
        w = np.zeros(n + 1)
        w[1:] = np.divide(1.0, area[1:], out=np.zeros(n), where=area[1:] > 0)
        region_weights.append(w[labelled])
        weights_fpr.append((~gt).ravel().astype(np.float64))
        scores.append(amap.ravel())
        n_regions += int((area[1:] > 0).sum())
    if not pairs:
        return np.zeros(0), np.zeros(0)
    w_fpr = np.concatenate(weights_fpr)
    n_normal = w_fpr.sum()
    if n_regions == 0 or n_normal == 0:
        return np.zeros(0), np.zeros(0)
    weights_pro = np.concatenate(region_weights) / n_regions
    w_fpr /= n_normal
    s = np.concatenate(scores).astype(np.float64)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    pro = np.cumsum(weights_pro[order])
    fpr = np.cumsum(w_fpr[order])
    # Keep the last index of each run of tied scores: the curve point of threshold t = that score.
    keep = np.append(np.diff(s_sorted) != 0, True)
    fpr = np.clip(fpr[keep], 0.0, 1.0)
    pro = np.clip(pro[keep], 0.0, 1.0)
    return np.concatenate(([0.0], fpr, [1.0])), np.concatenate(([0.0], pro, [1.0]))


def _area_until(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the piecewise-linear curve (x, y) for x in [0, x_max].

    x must be non-decreasing; the curve is interpolated linearly at x_max.
    """
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max:
        nxt = int(np.argmax(~inside))  # first point beyond x_max
        x0, y0, x1, y1 = x[nxt - 1], y[nxt - 1], x[nxt], y[nxt]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.append(xs, x_max), np.append(ys, y_at)
    return float(np.trapezoid(ys, xs))


def aupro(gt_masks: Sequence[Optional[np.ndarray]],
          anomaly_maps: Sequence[Optional[np.ndarray]],
          max_fpr: float = AUPRO_MAX_FPR,
          foregrounds: Optional[Sequence[Optional[np.ndarray]]] = None) -> Metric:
    """Area under the PRO curve for FPR in [0, max_fpr], divided by max_fpr (1.0 is perfect);
    inside the foregrounds when given (see `pro_curve`)."""
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    pairs = _pixel_pairs(gt_masks, anomaly_maps, foregrounds)
    if not pairs:
        return Metric.nan("no sample with pixel ground truth")
    inside = [gt if fg is None else gt[fg] for gt, _, fg in pairs]
    if not any(gt.any() for gt in inside):
        return Metric.nan("no defect region in the pixel ground truth"
                          + ("" if foregrounds is None else " inside the foreground"))
    if all(gt.all() for gt in inside):
        return Metric.nan("no normal pixel in the pixel ground truth"
                          + ("" if foregrounds is None else " inside the foreground"))
    fpr, pro = pro_curve(gt_masks, anomaly_maps, foregrounds)
    return Metric(_area_until(fpr, pro, max_fpr) / max_fpr)


def foreground_coverage(gt_masks: Sequence[Optional[np.ndarray]],
                        foregrounds: Sequence[Optional[np.ndarray]]) -> Metric:
    """Fraction of the defect pixels of `gt_masks` that lie inside `foregrounds` (None: the
    whole image). Foreground metrics leave out the defect pixels outside."""
    if len(gt_masks) != len(foregrounds):
        raise ValueError(f"{len(gt_masks)} masks but {len(foregrounds)} foregrounds")
    inside = total = 0
    for gt, fg in zip(gt_masks, foregrounds):
        if gt is None:
            continue
        gt = np.asarray(gt, dtype=bool)
        total += int(gt.sum())
        inside += int(gt.sum() if fg is None else (gt & np.asarray(fg, dtype=bool)).sum())
    if total == 0:
        return Metric.nan("no defect pixel in the pixel ground truth")
    return Metric(inside / total)


# ---------------------------------------------------------------------------------------------
# the published decision and latency

def decision_rates(labels: Sequence[int], decisions: Sequence[bool],
                   unknown: Optional[Sequence[bool]] = None) -> Dict[str, Metric]:
    """False-alarm and miss rates of the decisions the detector published.

    labels: (N,) 0/1; decisions: (N,) bool, True = flagged anomalous (pred_score >= threshold in
    force); unknown: (N,) bool, True where the detector said it could not decide (counted in
    `unknown_rate` and still scored by its decision).
    """
    y, d = _binary_and_scores(labels, np.asarray(decisions, dtype=float))
    d = d.astype(bool)
    good, bad = ~y, y
    out = {
        "false_alarm_rate": (Metric(d[good].mean()) if good.any()
                             else Metric.nan("no good samples")),
        "miss_rate": (Metric((~d[bad]).mean()) if bad.any()
                      else Metric.nan("no defective samples")),
    }
    if unknown is not None:
        u = np.asarray(unknown, dtype=bool)
        if u.shape != y.shape:
            raise ValueError(f"unknown {u.shape} must match labels {y.shape}")
        out["unknown_rate"] = Metric(u.mean()) if u.size else Metric.nan("no samples")
    return out


def latency_percentiles(timings: Iterable[Mapping[str, float]],
                        percentiles: Sequence[float] = (50, 95, 99)
                        ) -> Dict[str, Dict[str, float]]:
    """Per-stage latency statistics from per-frame `timings_ms` dicts.

    Returns {stage: {"p50": ms, "p95": ms, "p99": ms, "mean": ms, "n": count}} (numpy's linear
    percentile); stages missing in some frames use the frames that have them.
    """
    per_stage: Dict[str, List[float]] = {}
    for t in timings:
        for stage, ms in t.items():
            per_stage.setdefault(stage, []).append(float(ms))
    out = {}
    for stage, values in per_stage.items():
        v = np.asarray(values)
        stats = {f"p{p:g}": float(np.percentile(v, p)) for p in percentiles}
        stats["mean"] = float(v.mean())
        stats["n"] = int(v.size)
        out[stage] = stats
    return out
