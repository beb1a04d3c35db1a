"""Offline evaluation: run the core `Detector` over samples (from bags, the generator or the
real-sample loaders) with no ROS graph, and compute the metric tables.

Protocol
- Samples are scored one by one in stream order (the detector keeps a rolling memory per
  stream, as it does in the cell). `order_seed` shuffles the order once, identically for every
  configuration, so a list sorted by defect type does not feed the memory only good parts.
- Teach mode (`references=K`): for each draw, K good samples per category are drawn at random,
  given to `Detector.teach` (per category, i.e. per stream) and excluded from scoring; metrics
  are averaged over the draws (per-draw headline figures are kept too). With
  `limit_samples=L`, L defective samples per category are also drawn, taught with
  `Detector.teach_defects` (the miss-rate operating point) and excluded from scoring.
- Ablation: the same run with `DetectorConfig(modalities=...)` lacking one modality at a time
  (only for modalities present in the data).
- Pixel metrics use the anomaly map on the RGB grid of registered frames; for a frame whose
  modalities are not pixel-aligned (`registered=False`) only the RGB modality map is comparable
  with the RGB-frame ground truth, and a sample without pixel ground truth is skipped.
- Bags: each is read whole before scoring; an unreadable one is skipped and reported. A
  stream's memory runs on from one bag into the next (`stream_memory="carry"`, as in a cell
  that never restarts) or starts empty in every bag (`"per-bag"`: bags are independent). The
  same protocol runs sharded on Ray in `evaluation/fleet.py`.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from zsg_iad_ros.core.frame import MODALITIES, RGB, Detection, Sample
from zsg_iad_ros.evaluation.bagset import (EVALUATED, SKIPPED, BagOutcome, describe_error,
                                           inputs_record, read_bag_parts, recorded_parts)
from zsg_iad_ros.evaluation.foreground import part_foreground
from zsg_iad_ros.evaluation.progress import ProgressMeter
from zsg_iad_ros.evaluation.results import (SampleResult, average_metrics, compute_metrics,
                                            grouped_metrics, spread_over_draws)

#: A callable building a fresh detector that uses the given modalities.
DetectorFactory = Callable[[Tuple[str, ...]], object]
SampleSource = Union[Sequence[Sample], Callable[[], Iterable[Sample]]]

#: Stream memory across bags: carried from one bag into the next, or fresh for every bag.
CARRY, PER_BAG = "carry", "per-bag"
STREAM_MEMORY = (CARRY, PER_BAG)


def default_detector_factory(backbone: str = "auto", device: str = "auto",
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
             "revised": r.revised, "first_score": r.first_score,
             "modality_scores": r.modality_scores} for r in results]


class WorstExamples:
    """Keeps the RGB image of the `k` worst defective (lowest margin) and good (highest margin)
    results for overlays, without holding every image."""

    def __init__(self, k: int):
        self.k = k
        self.defective: List[SampleResult] = []
        self.good: List[SampleResult] = []

    def offer(self, result: SampleResult, sample: Optional[Sample] = None) -> None:
        """Keep `result` with the image of `sample` (or its own `rgb`, when merging the
        examples of several shards in scoring order) if it is among the k worst so far."""
        rgb = result.rgb if sample is None else sample.frame.rgb
        if self.k <= 0 or rgb is None:
            return
        pool, key = ((self.defective, lambda r: r.margin) if result.label == 1
                     else (self.good, lambda r: -r.margin))
        if len(pool) < self.k or key(result) < key(pool[-1]):
            result.rgb = np.asarray(rgb)
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
                 pixel_stride: int = 1, examples: Optional[WorstExamples] = None,
                 progress: Optional[ProgressMeter] = None) -> List[SampleResult]:
    """Score (index, sample) pairs in order with one detector; returns one result each.

    A part held through its stream's warm-up (`Detector.revise_held`, where the detector has
    it) gets the result of its revision, which is what a cell decides on, with the score first
    published kept as `first_score`; a part never revised keeps its first result (as does one
    revised only in a later call, a stream carried from one bag into the next)."""
    results = []
    revise = getattr(detector, "revise_held", None)
    held: Dict[int, Tuple[int, Sample, float]] = {}  # id(frame) -> (position, sample, wall)

    def offer(res: SampleResult, sample: Sample) -> None:
        if examples is not None:
            examples.offer(res, sample)

    for index, sample in samples:
        t0 = time.perf_counter()
        det = detector.detect(sample.frame)
        wall_ms = (time.perf_counter() - t0) * 1e3
        res = _result(index, sample, det, wall_ms, pixel_stride)
        results.append(res)
        if revise is not None and not det.confident:
            held[id(sample.frame)] = (len(results) - 1, sample, wall_ms)
        else:
            offer(res, sample)
        for frame, revised in (revise() if revise is not None else []):
            if id(frame) not in held:  # held in an earlier call (a stream carried over bags)
                continue
            pos, held_sample, wall = held.pop(id(frame))
            first = results[pos].pred_score
            res = _result(results[pos].index, held_sample, revised, wall, pixel_stride)
            res.revised, res.first_score = True, first
            results[pos] = res
            offer(res, held_sample)
        if progress is not None:
            progress.update()
    for pos, sample, _ in held.values():  # never revised: their first result stands
        offer(results[pos], sample)
    return results


def _by_category(samples: Sequence, label: int) -> Dict[str, List[int]]:
    """Indices of the samples with `label`, per category."""
    out: Dict[str, List[int]] = {}
    for i, s in enumerate(samples):
        if s.label == label:
            out.setdefault(s.category, []).append(i)
    return out


def draw_references(samples: Sequence, k: int, rng: np.random.Generator
                    ) -> Dict[str, List[int]]:
    """K random good sample indices per category (fewer where the category has fewer).
    samples: objects with `label` and `category` (Samples, or a bag scan's part records)."""
    by_cat = _by_category(samples, 0)
    refs = {}
    for cat in sorted({s.category for s in samples}):
        goods = by_cat.get(cat, [])
        if len(goods) < k:
            raise ValueError(f"category {cat!r} has {len(goods)} good samples; teach mode with "
                             f"{k} references needs at least {k} (and more to score)")
        refs[cat] = sorted(rng.choice(goods, size=k, replace=False).tolist()) if k else []
    return refs


def draw_limit_samples(samples: Sequence, k: int, rng: np.random.Generator
                       ) -> Dict[str, List[int]]:
    """K random defective sample indices per category: the known-defective parts (limit
    samples) taught with `Detector.teach_defects`; categories without defective parts get none.
    samples: objects with `label` and `category`."""
    by_cat = _by_category(samples, 1)
    out = {}
    for cat in sorted({s.category for s in samples}):
        bad = by_cat.get(cat, [])
        if bad and len(bad) <= k:
            raise ValueError(f"category {cat!r} has {len(bad)} defective samples; {k} limit "
                             f"samples need more (the rest is scored)")
        out[cat] = sorted(rng.choice(bad, size=k, replace=False).tolist()) if bad else []
    return out


def _materialize(source: SampleSource) -> List[Sample]:
    items = source() if callable(source) else source
    samples = list(items)
    if not samples:
        raise ValueError("no samples to evaluate")
    return samples


@dataclass
class EvaluationPlan:
    """What any executor needs to score the same parts the same way: the configurations
    (modalities), the scoring order and, per draw, the teach-mode references (category ->
    part indices). Built from labels and categories only, so a Ray driver can plan from a scan
    of the bags without holding their images."""

    present: List[str]
    configs: List[Tuple[str, Tuple[str, ...]]]
    order: List[int]
    references: List[Dict[str, List[int]]]
    #: per draw, the known-defective parts taught as limit samples (category -> indices)
    limits: List[Dict[str, List[int]]] = field(default_factory=list)

    @property
    def n_draws(self) -> int:
        return len(self.references)

    def scored(self, draw: int) -> List[int]:
        """Part indices scored in `draw`, in scoring order (its references and limit samples
        left out)."""
        taught = [self.references[draw]] + (self.limits[draw:draw + 1] if self.limits else [])
        excluded = set(itertools.chain.from_iterable(v for t in taught for v in t.values()))
        return [i for i in self.order if i not in excluded]

    def total_scored(self) -> int:
        return len(self.configs) * sum(len(self.scored(d)) for d in range(self.n_draws))


def plan_evaluation(parts: Sequence, presents: Iterable[Dict[str, bool]], *,
                    references: int = 0, draws: int = 1, seed: int = 0,
                    order_seed: Optional[int] = None,
                    ablate_modalities: bool = False, limit_samples: int = 0) -> EvaluationPlan:
    """parts: objects with `label` and `category` (Samples, or a bag scan's part records);
    presents: per part, which modalities it carries. limit_samples: known-defective parts per
    category and draw, taught after the references (drawn apart from them, so the references
    and the order are those of a run without)."""
    if references < 0 or draws < 1 or limit_samples < 0:
        raise ValueError("references must be >= 0, draws >= 1 and limit_samples >= 0")
    if limit_samples and not references:
        raise ValueError("limit samples are scored against taught references: "
                         "limit_samples needs references > 0")
    n = len(parts)
    order = list(range(n))
    if order_seed is not None:
        order = np.random.default_rng(order_seed).permutation(n).tolist()
    n_draws = draws if references > 0 else 1
    presents = list(presents)
    present = [m for m in MODALITIES if any(p.get(m, False) for p in presents)]
    configs = [("all", tuple(present))]
    if ablate_modalities and len(present) > 1:
        configs += [(f"without_{m}", tuple(x for x in present if x != m)) for m in present]
        if len(present) > 2:  # with two, "only one" is "without the other"
            configs += [(f"only_{m}", (m,)) for m in present]
    refs = [draw_references(parts, references, np.random.default_rng(seed + d))
            for d in range(n_draws)]
    limits = [draw_limit_samples(parts, limit_samples, np.random.default_rng([seed + d, 1]))
              for d in range(n_draws)] if limit_samples else []
    return EvaluationPlan(present, configs, order, refs, limits)


def new_record(name: str, n_samples: int, plan: EvaluationPlan, *, references: int, seed: int,
               order_seed: Optional[int], pixel_stride: int) -> dict:
    return {"name": name,
            "protocol": {"n_samples": n_samples, "references": references,
                         "draws": plan.n_draws, "seed": seed, "order_seed": order_seed,
                         "pixel_stride": pixel_stride, "modalities_present": plan.present},
            "configs": {}, "runs": {}}


def draw_metrics(results: Sequence[SampleResult]) -> dict:
    """Metric tables of one configuration and draw."""
    m = compute_metrics(results)
    m.update(grouped_metrics(results))
    return m


def drop_maps(results: Iterable[SampleResult]) -> None:
    """Free the pixel data of results that will not be plotted."""
    for r in results:
        r.anomaly_map = r.gt_mask = r.pred_mask = r.foreground = None


def is_plotted(config: str, draw: int) -> bool:
    """Only the first all-modality draw is plotted (and keeps its maps and example images)."""
    return config == "all" and draw == 0


def add_config(record: dict, run: RunOutput, metrics_per_draw: Sequence[dict]) -> None:
    """Average a configuration's draws into the record."""
    avg = average_metrics(metrics_per_draw)
    record["configs"][run.name] = {
        "modalities": list(run.modalities), "model_id": run.model_id, "device": run.device,
        "overall": {k: v for k, v in avg.items()
                    if k not in ("per_category", "per_defect_type", "category_mean")},
        "category_mean": avg["category_mean"],
        "per_category": avg["per_category"], "per_defect_type": avg["per_defect_type"],
        "draws": [{k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro",
                                     "image_f1_max", "pixel_f1_max", "pixel_auroc_fg",
                                     "aupro_fg")}
                  for m in metrics_per_draw],
        "spread": spread_over_draws(metrics_per_draw),
        "per_sample": per_sample_table(run.draws[0])}
    record["runs"][run.name] = run


def _teach(detector, samples: Sequence[Sample], refs: Dict[str, List[int]],
           categories: Optional[set] = None, limits: Optional[Dict[str, List[int]]] = None
           ) -> None:
    for cat, idx in refs.items():
        if idx and (categories is None or cat in categories):
            detector.teach([samples[i].frame for i in idx])
            bad = (limits or {}).get(cat)
            if bad:
                detector.teach_defects([samples[i].frame for i in bad])


def evaluate_samples(samples: SampleSource, detector_factory: DetectorFactory, *,
                     references: int = 0, draws: int = 1, seed: int = 0,
                     order_seed: Optional[int] = None, ablate_modalities: bool = False,
                     pixel_stride: int = 1, n_examples: int = 4, progress_every: int = 25,
                     name: str = "samples", recording_of: Optional[Sequence[int]] = None,
                     progress: Optional[ProgressMeter] = None, limit_samples: int = 0) -> dict:
    """Evaluate a detector on samples with ground truth; returns the evaluation record.

    samples:          a list of `Sample`s, or a zero-argument callable returning an iterable.
    detector_factory: `factory(modalities) -> Detector`, called once per configuration and draw
                      (a fresh detector: memory and calibration start empty).
    references/draws: teach mode, see the module docstring (draws is 1 without references).
    limit_samples:    with references, this many defective parts per category and draw are
                      taught as limit samples (`Detector.teach_defects`: they move the threshold
                      of a detector with `target_miss_rate`) and left out of scoring.
    recording_of:     per sample, the recording (bag) it comes from; when given, every
                      recording starts with a fresh detector (stream memory per bag, taught
                      with the draw's references of its categories), so recordings are
                      independent of each other.
    progress:         a meter to report to (default: one for this run, `progress_every`).
    Returns {"name", "protocol", "configs": {config_name: {"modalities", "overall",
    "category_mean", "per_category", "per_defect_type", "draws", "spread", "per_sample"}},
    "runs": {config_name: RunOutput}}
    where "runs" holds the per-sample results (not JSON); their maps are kept only for the
    first draw of the all-modality configuration (the one plotted), to bound memory.
    """
    if references < 0 or draws < 1 or pixel_stride < 1:
        raise ValueError("references must be >= 0, draws >= 1 and pixel_stride >= 1")
    all_samples = _materialize(samples)
    if recording_of is not None and len(recording_of) != len(all_samples):
        raise ValueError(f"recording_of has {len(recording_of)} entries for "
                         f"{len(all_samples)} samples")
    plan = plan_evaluation(all_samples, (s.frame.present for s in all_samples),
                           references=references, draws=draws, seed=seed,
                           order_seed=order_seed, ablate_modalities=ablate_modalities,
                           limit_samples=limit_samples)
    record = new_record(name, len(all_samples), plan, references=references, seed=seed,
                        order_seed=order_seed, pixel_stride=pixel_stride)
    if limit_samples:  # only then: records of runs without match those of a Ray run
        record["protocol"]["limit_samples"] = limit_samples
    meter = progress or ProgressMeter(plan.total_scored(), name, every=progress_every)
    categories_of: Dict[int, set] = {}
    for s, rec in zip(all_samples, recording_of or ()):
        categories_of.setdefault(rec, set()).add(s.category)
    for cname, mods in plan.configs:
        run = RunOutput(cname, mods, [])
        examples = WorstExamples(n_examples if cname == "all" else 0)
        metrics_per_draw = []
        for d in range(plan.n_draws):
            refs = plan.references[d]
            limits = plan.limits[d] if plan.limits else None
            scored = plan.scored(d)
            meter.stage = f"{cname}" + (f" draw {d + 1}/{plan.n_draws}"
                                        if plan.n_draws > 1 else "")
            kw = dict(pixel_stride=pixel_stride, examples=examples if d == 0 else None,
                      progress=meter)
            if recording_of is None:
                detector = detector_factory(mods)
                _teach(detector, all_samples, refs, limits=limits)
                results = run_detector(((i, all_samples[i]) for i in scored), detector, **kw)
            else:
                detector, results = None, []
                by_recording: Dict[int, List[int]] = {}
                for i in scored:
                    by_recording.setdefault(recording_of[i], []).append(i)
                for rec, indices in by_recording.items():
                    detector = detector_factory(mods)
                    _teach(detector, all_samples, refs, categories_of[rec], limits)
                    results += run_detector(((i, all_samples[i]) for i in indices), detector,
                                            **kw)
                rank = {i: k for k, i in enumerate(scored)}
                results.sort(key=lambda r: rank[r.index])  # back to scoring order
            if detector is not None:
                run.model_id = str(getattr(detector, "model_id", ""))
                run.device = str(getattr(detector, "device", ""))
            run.draws.append(results)
            metrics_per_draw.append(draw_metrics(results))
            if not is_plotted(cname, d):
                drop_maps(results)
        run.worst_defective, run.worst_good = examples.defective, examples.good
        add_config(record, run, metrics_per_draw)
    if progress is None:
        meter.close()
    return record


def read_readable_bags(paths: Sequence[str]
                       ) -> Tuple[List[Sample], List[int], List[BagOutcome]]:
    """Read every bag whole; an unreadable one is skipped with its reason.
    Returns (samples, recording index of each sample, one outcome per bag)."""
    samples: List[Sample] = []
    recording_of: List[int] = []
    outcomes = []
    for k, path in enumerate(paths):
        try:
            parts = read_bag_parts(path)
        except Exception as e:  # noqa: BLE001 - any read failure skips the bag, with its reason
            outcomes.append(BagOutcome(str(path), SKIPPED, recorded_parts(path),
                                       describe_error(e)))
            continue
        samples += parts
        recording_of += [k] * len(parts)
        outcomes.append(BagOutcome(str(path), EVALUATED, len(parts)))
    return samples, recording_of, outcomes


def no_readable_bag(outcomes: Sequence[BagOutcome]) -> ValueError:
    listed = "; ".join(f"{o.name}: {o.reason}" for o in outcomes[:5])
    more = f"; and {len(outcomes) - 5} more" if len(outcomes) > 5 else ""
    return ValueError(f"no readable bag among {len(outcomes)} ({listed}{more})")


def default_run_name(paths: Sequence[str]) -> str:
    names = [str(p).rstrip("/").split("/")[-1] for p in paths]
    return "+".join(names) if len(names) <= 3 else f"{names[0]}+{len(names) - 1} more"


def evaluate_bags(paths: Sequence[str], detector_factory: DetectorFactory, *,
                  stream_memory: str = CARRY, **kwargs) -> dict:
    """`evaluate_samples` over the parts recorded in one or more evaluation bags, in this
    process. A bag that cannot be read whole is skipped and reported (record["inputs"]).

    stream_memory: "carry" (a stream's memory runs on from one bag into the next, as in a cell
    that never restarts) or "per-bag" (every bag starts with empty memory: bags are independent
    and can be scored in any order or in parallel).
    """
    check_stream_memory(stream_memory)
    if not paths:
        raise ValueError("no bag given")
    samples, recording_of, outcomes = read_readable_bags(paths)
    if not samples:
        raise no_readable_bag(outcomes)
    kwargs.setdefault("name", default_run_name(paths))
    record = evaluate_samples(samples, detector_factory,
                              recording_of=recording_of if stream_memory == PER_BAG else None,
                              **kwargs)
    record["protocol"]["stream_memory"] = stream_memory
    record["inputs"] = inputs_record(outcomes, 0, {"workers": 1, "engine": "single process"})
    return record


def check_stream_memory(value: str) -> None:
    if value not in STREAM_MEMORY:
        raise ValueError(f"stream_memory must be one of {STREAM_MEMORY}, got {value!r}")
