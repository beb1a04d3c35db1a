"""Per-sample results and the metric tables built from them (shared by offline and live runs)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from zsg_iad_ros.evaluation import metrics as M
from zsg_iad_ros.evaluation.foreground import part_foreground


@dataclass
class SampleResult:
    """What the detector said about one sample, next to its ground truth.

    anomaly_map: (h, w) float32 on the RGB grid (subsampled by the run's pixel stride), or None
                 when no map is usable at pixel level (see `offline.pixel_map`).
    gt_mask:     (h, w) bool on the same grid, None when the sample has no pixel ground truth.
    pred_mask:   (h, w) bool on the same grid, or None.
    rgb:         (H, W, 3) uint8 kept only for the few samples shown in overlays.
    revised:     the part was held through its stream's warm-up and these are the figures of
                 its revision (`Detector.revise_held`); `first_score` is the pred_score first
                 published for it (not confident). For other parts `first_score` is None.
    foreground:  (h, w) bool on the same grid: where the part is, estimated from the RGB image
                 alone (`foreground.part_foreground`), for the foreground pixel metrics; None
                 when unknown. When not given, it is computed from `rgb` if that has the grid
                 of `gt_mask`.
    """

    index: int
    sample_id: str
    category: str
    defect_type: str
    label: int
    pred_score: float
    threshold: float
    confident: bool = True
    modality_scores: Dict[str, float] = field(default_factory=dict)
    modalities_present: Dict[str, bool] = field(default_factory=dict)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    rule_results: List[dict] = field(default_factory=list)
    anomaly_map: Optional[np.ndarray] = None
    gt_mask: Optional[np.ndarray] = None
    pred_mask: Optional[np.ndarray] = None
    pixel_skip_reason: str = ""
    rgb: Optional[np.ndarray] = None
    foreground: Optional[np.ndarray] = None
    revised: bool = False
    first_score: Optional[float] = None

    def __post_init__(self):
        if (self.foreground is None and self.rgb is not None and self.gt_mask is not None
                and np.shape(self.rgb)[:2] == np.shape(self.gt_mask)):
            self.foreground = part_foreground(self.rgb)

    @property
    def is_anomalous(self) -> bool:
        """The published decision: pred_score >= threshold in force (False if undefined)."""
        return bool(self.pred_score >= self.threshold)

    @property
    def margin(self) -> float:
        return float(self.pred_score - self.threshold)


# ---------------------------------------------------------------------------------------------
# metric tables

def compute_metrics(results: Sequence[SampleResult], latency: bool = True) -> Dict[str, object]:
    """Image, pixel, decision and rule metrics of a set of results (values are `Metric`s)."""
    labels = np.array([r.label for r in results], dtype=int)
    scores = np.array([r.pred_score for r in results], dtype=np.float64)
    with_px = [r for r in results if r.gt_mask is not None and r.anomaly_map is not None]
    gts = [r.gt_mask for r in with_px]
    maps = [r.anomaly_map for r in with_px]
    with_fg = [r for r in with_px if r.foreground is not None]
    out: Dict[str, object] = {
        "n_samples": len(results),
        "n_good": int((labels == 0).sum()),
        "n_defective": int((labels == 1).sum()),
        "n_pixel_gt": len(with_px),
        "image_auroc": M.image_auroc(labels, scores),
        "image_f1_max": M.image_f1_max(labels, scores),
        "pixel_auroc": M.pixel_auroc(gts, maps),
        "pixel_f1_max": M.pixel_f1_max(gts, maps),
        "aupro": M.aupro(gts, maps),
    }
    out.update(foreground_metrics(with_fg, len(with_px)))
    out.update(M.decision_rates(labels, [r.is_anomalous for r in results],
                                unknown=[not r.confident for r in results]))
    # An untaught stream's first parts are scored before its history calibrates it and are
    # published as not confident (`Detection.confident`); in a stream of a few dozen parts that
    # warm-up weighs heavily. Held, they are scored again once it does, and their revision is
    # what the cell decides on (results carry it); the ranking as first published is reported
    # beside it (`image_auroc_first`, with the share of revised parts), and so is the ranking of
    # the confident parts, beside the share of parts left unknown (`unknown_rate`).
    sure = [r for r in results if r.confident]
    out["image_auroc_confident"] = (
        M.image_auroc([r.label for r in sure], [r.pred_score for r in sure]) if sure
        else M.Metric.nan("no part scored with a calibrated stream"))
    out["image_auroc_first"] = M.image_auroc(
        labels, [r.first_score if r.revised else r.pred_score for r in results])
    out["revised_rate"] = (M.Metric(np.mean([r.revised for r in results])) if len(results)
                           else M.Metric.nan("no samples"))
    checks = [c for r in results for c in r.rule_results]
    per_rule: Dict[str, List[bool]] = {}
    for c in checks:
        per_rule.setdefault(str(c.get("name", "?")), []).append(bool(c.get("passed", False)))
    with_rules = [r for r in results if r.rule_results]
    out["report_valid_rate"] = (
        M.Metric(np.mean([all(c.get("passed", False) for c in r.rule_results)
                          for r in with_rules]))
        if with_rules else M.Metric.nan("no rule results"))
    out["rule_pass_rates"] = {k: M.Metric(np.mean(v)) for k, v in sorted(per_rule.items())}
    if latency:
        out["latency_ms"] = M.latency_percentiles(r.timings_ms for r in results)
    return out


def foreground_metrics(results: Sequence[SampleResult], n_pixel_gt: int) -> Dict[str, object]:
    """Pixel AUROC and AUPRO inside the part's foreground (`pixel_auroc_fg`, `aupro_fg`), the
    fraction of defect pixels inside it (`fg_defect_coverage`) and the mean fraction of the
    image it covers (`fg_area_fraction`), over results with pixel ground truth, a map and a
    foreground. Where the foreground is the whole image these equal the whole-image figures."""
    if not results:
        why = ("no foreground estimate (no RGB image)" if n_pixel_gt
               else "no sample with pixel ground truth")
        return {k: M.Metric.nan(why) for k in FOREGROUND_KEYS}
    gts = [r.gt_mask for r in results]
    maps = [r.anomaly_map for r in results]
    fgs = [r.foreground for r in results]
    return {"pixel_auroc_fg": M.pixel_auroc(gts, maps, fgs),
            "aupro_fg": M.aupro(gts, maps, foregrounds=fgs),
            "fg_defect_coverage": M.foreground_coverage(gts, fgs),
            "fg_area_fraction": M.Metric(np.mean([np.mean(f) for f in fgs]))}


#: Keys of `foreground_metrics`.
FOREGROUND_KEYS = ("pixel_auroc_fg", "aupro_fg", "fg_defect_coverage", "fg_area_fraction")


def grouped_metrics(results: Sequence[SampleResult]) -> Dict[str, Dict[str, Dict[str, object]]]:
    """Metrics per category, and per defect type (that type vs the good parts of the categories
    where it occurs)."""
    by_cat: Dict[str, List[SampleResult]] = {}
    for r in results:
        by_cat.setdefault(r.category, []).append(r)
    per_category = {c: compute_metrics(rs, latency=False) for c, rs in sorted(by_cat.items())}
    per_defect = {}
    defect_types = sorted({r.defect_type for r in results if r.label == 1})
    for dt in defect_types:
        cats = {r.category for r in results if r.label == 1 and r.defect_type == dt}
        subset = [r for r in results
                  if (r.label == 1 and r.defect_type == dt)
                  or (r.label == 0 and r.category in cats)]
        per_defect[dt] = compute_metrics(subset, latency=False)
    return {"per_category": per_category, "per_defect_type": per_defect,
            "category_mean": category_mean(per_category)}


#: Metrics averaged over categories (the usual way of reporting per-category benchmarks).
MEAN_KEYS = ("image_auroc", "image_f1_max", "pixel_auroc", "pixel_f1_max", "aupro",
             "pixel_auroc_fg", "aupro_fg", "image_auroc_confident", "image_auroc_first")


def category_mean(per_category: Dict[str, dict]) -> Dict[str, object]:
    """Mean over categories of each metric (categories where it is NaN are left out)."""
    out: Dict[str, object] = {"n_categories": len(per_category)}
    for k in MEAN_KEYS:
        v = np.array([float(m.get(k, np.nan)) for m in per_category.values()], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[k] = (M.Metric(v.mean()) if v.size
                  else M.Metric.nan(f"{k} undefined in every category"))
    return out


def average_metrics(runs: Sequence[dict]) -> dict:
    """Mean over draws of nested metric dicts (NaN-aware; a value NaN in every draw keeps the
    first draw's reason). Counts are kept from the first draw."""
    first = runs[0]
    if len(runs) == 1:
        return first
    out = {}
    for key, value in first.items():
        values = [r.get(key) for r in runs if key in r]
        if isinstance(value, dict):
            out[key] = average_metrics([v for v in values if isinstance(v, dict)])
        elif isinstance(value, M.Metric):
            arr = np.array([float(v) for v in values], dtype=np.float64)
            finite = arr[~np.isnan(arr)]
            out[key] = M.Metric(finite.mean()) if finite.size else M.Metric.nan(value.reason)
        elif isinstance(value, float) and not isinstance(value, bool):
            out[key] = float(np.nanmean(values))
        else:
            out[key] = value
    return out


def spread_over_draws(runs: Sequence[dict], keys=("image_auroc", "pixel_auroc", "aupro",
                                                  "pixel_auroc_fg", "aupro_fg")) -> dict:
    """Standard deviation over draws of a few headline metrics ({} for a single draw)."""
    if len(runs) < 2:
        return {}
    out = {}
    for k in keys:
        v = np.array([float(r[k]) for r in runs if k in r])
        v = v[~np.isnan(v)]
        if v.size:
            out[k] = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return out


def to_json(obj):
    """Nested metrics -> JSON-safe values (NaN `Metric`s become {"value": null, "reason": ...})."""
    if isinstance(obj, M.Metric):
        return obj.to_json()
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
