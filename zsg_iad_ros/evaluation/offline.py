"""Offline evaluation: run the core `Detector` over samples (from bags, the generator or the
real-sample loaders) with no ROS graph, and compute the metric tables.

Protocol
- Samples are scored one by one in stream order (the detector keeps a rolling memory per
  stream, as it does in the cell). `order_seed` shuffles the order once, identically for every
  configuration, so a list sorted by defect type does not feed the memory only good parts.
- Teach mode (`references=K`): for each draw, K good samples per category are drawn at random,
  given to `Detector.teach` (per category, i.e. per stream) and excluded from scoring; metrics
  are averaged over the draws (per-draw headline figures are kept too).
- Ablation: the same run with `DetectorConfig(modalities=...)` lacking one modality at a time
  (only for modalities present in the data).
- Pixel metrics use the anomaly map on the RGB grid of registered frames; for a frame whose
  modalities are not pixel-aligned (`registered=False`) only the RGB modality map is comparable
  with the RGB-frame ground truth, and a sample without pixel ground truth is skipped.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from zsg_iad_ros.core.frame import MODALITIES, RGB, Detection, Sample
from zsg_iad_ros.evaluation.foreground import part_foreground
from zsg_iad_ros.evaluation.results import (Progress, SampleResult, average_metrics,
                                            compute_metrics, grouped_metrics, spread_over_draws)

#: A callable building a fresh detector that uses the given modalities.
DetectorFactory = Callable[[Tuple[str, ...]], object]
SampleSource = Union[Sequence[Sample], Callable[[], Iterable[Sample]]]


def default_detector_factory(backbone: str = "builtin", device: str = "auto",
                             **config) -> DetectorFactory:
    """Factory of core detectors: `DetectorConfig(backbone, device, modalities, **config)`."""
    from zsg_iad_ros.core.detector import Detector, DetectorConfig

    def make(modalities: Tuple[str, ...]):
        return Detector(DetectorConfig(backbone=backbone, device=device,
                                       modalities=tuple(modalities), **config))
    return make


def pixel_map(sample: Sample, detection: Detection) -> Tuple[Optional[np.ndarray], str]:
    """The map comparable with `sample.gt_mask` and, when there is none, why.

    Registered frames: the fused `anomaly_map` (RGB grid). Unregistered frames: the detector's
    `anomaly_map` is then built from the RGB modality alone (see `Frame.registered`), so it is
    used only when the RGB modality was used (it has a modality map); other modalities are not
    aligned with the RGB-frame ground truth.
    """
    if sample.gt_mask is None:
        return None, "no pixel ground truth"
    amap = detection.anomaly_map
    if not sample.frame.registered and RGB not in detection.modality_maps:
        return None, "unregistered frame scored without the RGB modality"
    if amap.shape != sample.gt_mask.shape:
        raise ValueError(f"sample {sample.sample_id!r}: anomaly map {amap.shape} does not match "
                         f"gt_mask {sample.gt_mask.shape}")
    return amap, ""


def _result(index: int, sample: Sample, det: Detection, wall_ms: float,
            pixel_stride: int) -> SampleResult:
    amap, why = pixel_map(sample, det)
    s = slice(None, None, pixel_stride)
    rgb = sample.frame.rgb
    # The part's foreground comes from the RGB image alone, never from the ground truth.
    fg = (part_foreground(rgb) if amap is not None and rgb is not None
          and np.shape(rgb)[:2] == sample.gt_mask.shape else None)
    timings = dict(det.timings_ms)
    timings["wall"] = wall_ms
    return SampleResult(
        index=index, sample_id=sample.sample_id, category=sample.category,
        defect_type=sample.defect_type, label=int(sample.label),
        pred_score=float(det.pred_score), threshold=float(det.threshold),
        confident=bool(det.confident), modality_scores=dict(det.modality_scores),
        modalities_present=dict(det.modalities_present), timings_ms=timings,
        rule_results=list(det.rule_results),
        anomaly_map=None if amap is None else np.ascontiguousarray(amap[s, s], np.float32),
        gt_mask=None if amap is None else np.ascontiguousarray(sample.gt_mask[s, s], bool),
        pred_mask=(None if amap is None or det.pred_mask is None
                   else np.ascontiguousarray(det.pred_mask[s, s], bool)),
        foreground=None if fg is None else np.ascontiguousarray(fg[s, s]),
        pixel_skip_reason=why)


def per_sample_table(results: Sequence[SampleResult]) -> List[dict]:
    """One JSON-friendly row per scored sample (first draw), for later analysis."""
    return [{"sample_id": r.sample_id, "category": r.category, "defect_type": r.defect_type,
             "label": r.label, "pred_score": r.pred_score, "threshold": r.threshold,
             "anomalous": r.is_anomalous, "confident": r.confident,
             "modality_scores": r.modality_scores} for r in results]


class _Examples:
    """Keeps the RGB image of the `k` worst defective (lowest margin) and good (highest margin)
    results for overlays, without holding every image."""

    def __init__(self, k: int):
        self.k = k
        self.defective: List[SampleResult] = []
        self.good: List[SampleResult] = []

    def offer(self, result: SampleResult, sample: Sample) -> None:
        if self.k <= 0 or sample.frame.rgb is None:
            return
        pool, key = ((self.defective, lambda r: r.margin) if result.label == 1
                     else (self.good, lambda r: -r.margin))
        if len(pool) < self.k or key(result) < key(pool[-1]):
            result.rgb = np.asarray(sample.frame.rgb)
            pool.append(result)
            pool.sort(key=key)
            for dropped in pool[self.k:]:
                dropped.rgb = None
            del pool[self.k:]


@dataclass
class RunOutput:
    """One configuration (modalities) over all its draws."""

    name: str
    modalities: Tuple[str, ...]
    draws: List[List[SampleResult]]
    worst_defective: List[SampleResult] = field(default_factory=list)
    worst_good: List[SampleResult] = field(default_factory=list)
    model_id: str = ""
    device: str = ""


def run_detector(samples: Iterable[Tuple[int, Sample]], detector, *,
                 pixel_stride: int = 1, examples: Optional[_Examples] = None,
                 progress: Optional[Progress] = None) -> List[SampleResult]:
    """Score (index, sample) pairs in order with one detector; returns one result each."""
    results = []
    for index, sample in samples:
        t0 = time.perf_counter()
        det = detector.detect(sample.frame)
        wall_ms = (time.perf_counter() - t0) * 1e3
        res = _result(index, sample, det, wall_ms, pixel_stride)
        if examples is not None:
            examples.offer(res, sample)
        results.append(res)
        if progress is not None:
            progress.update()
    return results


def draw_references(samples: Sequence[Sample], k: int, rng: np.random.Generator
                    ) -> Dict[str, List[int]]:
    """K random good sample indices per category (fewer where the category has fewer)."""
    by_cat: Dict[str, List[int]] = {}
    for i, s in enumerate(samples):
        if s.label == 0:
            by_cat.setdefault(s.category, []).append(i)
    refs = {}
    for cat in sorted({s.category for s in samples}):
        goods = by_cat.get(cat, [])
        if len(goods) < k:
            raise ValueError(f"category {cat!r} has {len(goods)} good samples; teach mode with "
                             f"{k} references needs at least {k} (and more to score)")
        refs[cat] = sorted(rng.choice(goods, size=k, replace=False).tolist()) if k else []
    return refs


def _materialize(source: SampleSource) -> List[Sample]:
    items = source() if callable(source) else source
    samples = list(items)
    if not samples:
        raise ValueError("no samples to evaluate")
    return samples


def evaluate_samples(samples: SampleSource, detector_factory: DetectorFactory, *,
                     references: int = 0, draws: int = 1, seed: int = 0,
                     order_seed: Optional[int] = None, ablate_modalities: bool = False,
                     pixel_stride: int = 1, n_examples: int = 4, progress_every: int = 25,
                     name: str = "samples") -> dict:
    """Evaluate a detector on samples with ground truth; returns the evaluation record.

    samples:          a list of `Sample`s, or a zero-argument callable returning an iterable.
    detector_factory: `factory(modalities) -> Detector`, called once per configuration and draw
                      (a fresh detector: memory and calibration start empty).
    references/draws: teach mode, see the module docstring (draws is 1 without references).
    Returns {"name", "protocol", "configs": {config_name: {"modalities", "overall",
    "category_mean", "per_category", "per_defect_type", "draws", "spread", "per_sample"}},
    "runs": {config_name: RunOutput}}
    where "runs" holds the per-sample results (not JSON); their maps are kept only for the
    first draw of the all-modality configuration (the one plotted), to bound memory.
    """
    if references < 0 or draws < 1 or pixel_stride < 1:
        raise ValueError("references must be >= 0, draws >= 1 and pixel_stride >= 1")
    all_samples = _materialize(samples)
    order = list(range(len(all_samples)))
    if order_seed is not None:
        order = np.random.default_rng(order_seed).permutation(len(all_samples)).tolist()
    n_draws = draws if references > 0 else 1
    present = [m for m in MODALITIES
               if any(s.frame.present.get(m, False) for s in all_samples)]
    configs = [("all", tuple(present))]
    if ablate_modalities and len(present) > 1:
        configs += [(f"without_{m}", tuple(x for x in present if x != m)) for m in present]

    record = {"name": name,
              "protocol": {"n_samples": len(all_samples), "references": references,
                           "draws": n_draws, "seed": seed, "order_seed": order_seed,
                           "pixel_stride": pixel_stride, "modalities_present": present},
              "configs": {}, "runs": {}}
    for cname, mods in configs:
        run = RunOutput(cname, mods, [])
        examples = _Examples(n_examples if cname == "all" else 0)
        draw_metrics = []
        for d in range(n_draws):
            refs = draw_references(all_samples, references, np.random.default_rng(seed + d))
            excluded = set(itertools.chain.from_iterable(refs.values()))
            detector = detector_factory(mods)
            run.model_id = str(getattr(detector, "model_id", ""))
            run.device = str(getattr(detector, "device", ""))
            for cat, idx in refs.items():
                if idx:
                    detector.teach([all_samples[i].frame for i in idx])
            scored = [i for i in order if i not in excluded]
            label = f"{name}/{cname}" + (f" draw {d + 1}/{n_draws}" if n_draws > 1 else "")
            progress = Progress(len(scored), label, every=progress_every)
            results = run_detector(((i, all_samples[i]) for i in scored), detector,
                                   pixel_stride=pixel_stride,
                                   examples=examples if d == 0 else None, progress=progress)
            run.draws.append(results)
            m = compute_metrics(results)
            m.update(grouped_metrics(results))
            draw_metrics.append(m)
            if cname != "all" or d > 0:  # only the first all-modality draw is plotted
                for r in results:
                    r.anomaly_map = r.gt_mask = r.pred_mask = r.foreground = None
        run.worst_defective, run.worst_good = examples.defective, examples.good
        avg = average_metrics(draw_metrics)
        record["configs"][cname] = {
            "modalities": list(mods), "model_id": run.model_id, "device": run.device,
            "overall": {k: v for k, v in avg.items()
                        if k not in ("per_category", "per_defect_type", "category_mean")},
            "category_mean": avg["category_mean"],
            "per_category": avg["per_category"], "per_defect_type": avg["per_defect_type"],
            "draws": [{k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro",
                                         "image_f1_max", "pixel_f1_max", "pixel_auroc_fg",
                                         "aupro_fg")}
                      for m in draw_metrics],
            "spread": spread_over_draws(draw_metrics),
            "per_sample": per_sample_table(run.draws[0])}
        record["runs"][cname] = run
    return record


def evaluate_bags(paths: Sequence[str], detector_factory: DetectorFactory, **kwargs) -> dict:
    """`evaluate_samples` over the samples recorded in one or more evaluation bags."""
    from zsg_iad_ros.data.bags import read_bag

    if not paths:
        raise ValueError("no bag given")

    def source():
        return itertools.chain.from_iterable(read_bag(p) for p in paths)
    kwargs.setdefault("name", "+".join(str(p).rstrip("/").split("/")[-1] for p in paths))
    return evaluate_samples(source, detector_factory, **kwargs)
