#!/usr/bin/env python3
"""Detector benchmark: accuracy on the synthetic zero-shot test split and on the real samples,
latency per stage and peak memory. Prints a compact table and writes, under --out,
metrics.json + summary.md (and one folder per data set with its own tables and figures).

  python benchmarks/benchmark_detector.py --out outputs/benchmark            # default size
  python benchmarks/benchmark_detector.py --quick                            # a few minutes
  python benchmarks/benchmark_detector.py --n-good 8 --n-defective 14 --draws 5

Sections
- synthetic: `splits.iter_split('test', n_good, n_defective)` (categories and defect types
  never used in training), all modalities and without each one (ablation).
- synthetic_design: the object categories of the same split (gear, capsule) with one design
  per category, in any pose: the parts of one product as a cell sees them (the synthetic
  section's parts are each a design of their own).
- synthetic_board: the split's circuit boards with one layout, held in a fixture (a shift of
  a few pixels): a board of one product. With --aligned, the synthetic sections'
  teach-mode runs are repeated with the aligned comparison (variation model) on (boards also
  with the fixed `variation_grid: 128` beside the default, which gives them 256), and the
  latency section times it on a gear of one design (and that gear without the rotational
  self-comparison, `symmetry: off`).
- mulsen: MulSen-AD object level (RGB + infrared + 3D scan, not pixel-aligned: pixel metrics
  in the RGB frame only), with 0 known-good references and with --references known-good
  references per category (teach mode), averaged over --draws random draws.
- magnetic_tile: grayscale tiles (RGB modality only), 0 references.
- --miss-rate R: the teach-mode runs (synthetic sections, MulSen) are repeated with
  --limit-samples known-defective parts per category and draw taught and left out of scoring,
  at the false-alarm operating point ("_limits") and with target_miss_rate R ("_miss"), on the
  same scored parts.
- latency: per-stage p50/p95 over --latency-frames 256x256 frames with ~65k points after a
  warm-up, peak RSS (resource) and peak traced Python/numpy memory (tracemalloc), on the CPU and
  on CUDA when present (plus torch.cuda.max_memory_allocated), and the share of the machine's
  CPU time the hypervisor gave elsewhere meanwhile (/proc/stat steal): on a shared host the
  same run's absolute latencies can differ twofold between hours, its ratios much less.
Real data (CC BY 4.0 MulSen-AD, Li et al. CVPR 2025; Magnetic Tile, Huang et al. 2020) is used
for evaluation only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

from zsg_iad_ros.evaluation.offline import default_detector_factory, evaluate_samples
from zsg_iad_ros.evaluation.results import to_json
from zsg_iad_ros.evaluation.summary import cell, write_outputs

HEAD = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max",
        "false_alarm_rate", "miss_rate")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/benchmark")
    p.add_argument("--backbone", default="auto",
                   help="backbone of the latency section and the first of the accuracy runs")
    p.add_argument("--compare", nargs="*", default=["patchstats", "builtin"],
                   help="further backbones scored in the same run on the same parts "
                        "(patchstats = the hand-made patch-statistics baseline)")
    p.add_argument("--device", default="auto", help="accuracy runs: auto | cpu | cuda")
    p.add_argument("--n-good", type=int, default=6, help="good parts per test category")
    p.add_argument("--n-defective", type=int, default=14,
                   help="defective parts per test category (cycling through defect types)")
    p.add_argument("--size", type=int, default=256, help="synthetic image size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--references", type=int, default=4,
                   help="teach-mode references per category (MulSen, and the synthetic split's "
                        "teach-mode run; 0 = streaming runs only)")
    p.add_argument("--draws", type=int, default=3, help="reference draws averaged")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="DetectorConfig overrides for the accuracy runs, e.g. score_margin=0 "
                        "(values parsed as JSON where they can be)")
    p.add_argument("--aligned", action="store_true",
                   help="synthetic sections with references: also score the main backbone with "
                        "the aligned comparison (variation=True) on the same parts and draws; "
                        "latency: also time it, and without it, on a gear of one design")
    p.add_argument("--miss-rate", type=float, default=None, metavar="R",
                   help="teach-mode runs of the main backbone (synthetic sections, MulSen): "
                        "also run with --limit-samples known-defective parts per category and "
                        "draw taught, at the false-alarm operating point and with "
                        "target_miss_rate R, on the same scored parts")
    p.add_argument("--limit-samples", type=int, default=4,
                   help="limit samples per category and draw for --miss-rate")
    p.add_argument("--ablate-real", action="store_true",
                   help="also ablate modalities on MulSen with references (slow)")
    p.add_argument("--max-per-type", type=int, default=0,
                   help="real data: at most N parts per (category, defect type), N + references "
                        "good parts per category, drawn at random (0 = all)")
    p.add_argument("--latency-frames", type=int, default=20)
    p.add_argument("--pixel-stride", type=int, default=1)
    p.add_argument("--sections", nargs="*",
                   default=["synthetic", "mulsen", "magnetic_tile", "latency"],
                   choices=["synthetic", "synthetic_design", "synthetic_board", "mulsen",
                            "magnetic_tile", "latency"])
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--progress-every", type=int, default=25, help="progress line period")
    p.add_argument("--quick", action="store_true",
                   help="small run: 3 good + 7 defective per category, 2 draws, 8 latency "
                        "frames, pixel stride 2")
    args = p.parse_args(argv)
    if args.quick:
        args.n_good, args.n_defective, args.draws = 3, 7, 2
        args.latency_frames, args.pixel_stride = 8, 2
    return args


# ---------------------------------------------------------------------------------------------
def _common(args) -> dict:
    return {"order_seed": args.seed, "pixel_stride": args.pixel_stride,
            "progress_every": args.progress_every}


def section_samples(section: str, args) -> list:
    """The samples of an accuracy section, loaded once and scored by every backbone."""
    from zsg_iad_ros.data.real import load_magnetic_tile, load_mulsen
    from zsg_iad_ros.data.splits import iter_split
    from zsg_iad_ros.data.synthetic import CATEGORIES, LAYOUT_CATEGORIES
    if section == "mulsen":
        return limit_per_type(load_mulsen(), args.max_per_type, args.references, args.seed)
    if section == "magnetic_tile":
        return limit_per_type(load_magnetic_tile(), args.max_per_type, 0, args.seed)
    t = time.perf_counter()
    # n_good + references good parts per category: the teach-mode run draws its references
    # from them and scores the rest, so both runs score at least n_good good parts per category.
    keep = {"synthetic": lambda cat: True,
            "synthetic_design": lambda cat: CATEGORIES[cat].kind == "object",
            "synthetic_board": lambda cat: cat in LAYOUT_CATEGORIES}[section]
    samples = [s for s in iter_split("test", args.n_good + args.references, args.n_defective,
                                     seed=args.seed, size=args.size,
                                     one_design=section != "synthetic")
               if keep(s.category)]
    print(f"[benchmark] {section}: {len(samples)} samples generated in "
          f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    return samples


def run_synthetic(args, factory, samples, section="synthetic"):
    what = {"synthetic": "synthetic zero-shot test split",
            "synthetic_design": "synthetic objects, one design per category",
            "synthetic_board": "synthetic circuit boards of one layout"}[section]
    out = {section: evaluate_samples(samples, factory, ablate_modalities=True,
                                     name=f"{what}, streaming", **_common(args))}
    if args.references > 0:
        out[f"{section}_k{args.references}"] = evaluate_samples(
            samples, factory, references=args.references, draws=args.draws, seed=args.seed,
            name=f"{what}, {args.references} references x {args.draws} draws",
            **_common(args))
    return out


def limit_per_type(samples, n: int, extra_good: int, seed: int):
    """At most n samples per (category, defect type), n + extra_good good ones per category."""
    if n <= 0:
        return samples
    rng = np.random.default_rng(seed)
    groups = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.category, s.defect_type, s.label), []).append(i)
    keep = []
    for (_, _, label), idx in sorted(groups.items()):
        k = n + extra_good if label == 0 else n
        keep += sorted(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    return [samples[i] for i in sorted(keep)]


def run_mulsen(args, factory, samples):
    out = {"mulsen_k0": evaluate_samples(samples, factory, references=0, ablate_modalities=True,
                                         name="MulSen-AD, 0 references", **_common(args))}
    if args.references > 0:
        out[f"mulsen_k{args.references}"] = evaluate_samples(
            samples, factory, references=args.references, draws=args.draws, seed=args.seed,
            ablate_modalities=args.ablate_real,
            name=f"MulSen-AD, {args.references} references x {args.draws} draws",
            **_common(args))
    return out


def run_magnetic_tile(args, factory, samples):
    return {"magnetic_tile": evaluate_samples(samples, factory, name="Magnetic tile, 0 references",
                                              **_common(args))}


def teach_run(args, backbone, samples, name: str, config: dict, limit_samples: int = 0):
    """A teach-mode run of `backbone` with further DetectorConfig fields `config`, on the same
    references and draws as the section's own teach-mode run."""
    factory = default_detector_factory(backbone=backbone, device=args.device,
                                       **{**parse_overrides(args.set), **config})
    return evaluate_samples(samples, factory, references=args.references, draws=args.draws,
                            seed=args.seed, limit_samples=limit_samples, name=name,
                            **_common(args))


def run_operating_points(args, backbone, samples, section) -> dict:
    """The teach-mode run with --limit-samples known-defective parts per category and draw
    taught (and left out of scoring), at the false-alarm operating point and with
    target_miss_rate: both score the same parts, so their miss and false-alarm rates compare."""
    out = {}
    for name, extra in (("limits", {}), ("miss", {"target_miss_rate": args.miss_rate})):
        what = ("target_miss_rate %g" % args.miss_rate if extra
                else "target_false_alarm_rate only")
        out[f"{section}_k{args.references}_{name}"] = teach_run(
            args, backbone, samples, f"{section}, {args.references} references + "
            f"{args.limit_samples} limit samples x {args.draws} draws, {what}", extra,
            limit_samples=args.limit_samples)
    return out


# ---------------------------------------------------------------------------------------------
def _cpu_jiffies():
    """(steal, total) CPU time of the whole machine from /proc/stat (Linux), None elsewhere:
    time a hypervisor gave to other guests is time these timings waited for."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def latency_on(device: str, args, frames, references=(), backbone=None, **config) -> dict:
    """Per-stage latency and peak memory of one detector on `device` over a stream of frames,
    after teaching it `references` (known-good frames) when given; `config`: further
    DetectorConfig fields."""
    import torch

    from zsg_iad_ros.core.detector import Detector, DetectorConfig
    from zsg_iad_ros.evaluation.metrics import latency_percentiles

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    det = Detector(DetectorConfig(backbone=backbone or args.backbone, device=device, **config))
    if references:
        det.teach(list(references))
    if det.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(det.device)
    warm = 3
    timings = []
    jiffies0 = _cpu_jiffies()
    revised, revise_ms = 0, 0.0  # the warm-up's revisions, a burst apart from the frames
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        d = det.detect(frame)
        if det.device.type == "cuda":
            torch.cuda.synchronize(det.device)
        wall = (time.perf_counter() - t0) * 1e3
        if i >= warm:
            timings.append({**d.timings_ms, "wall": wall})
        t0 = time.perf_counter()
        revised += len(det.revise_held())
        revise_ms += (time.perf_counter() - t0) * 1e3
    jiffies1 = _cpu_jiffies()
    steal = None
    if jiffies0 and jiffies1 and jiffies1[1] > jiffies0[1]:
        steal = (jiffies1[0] - jiffies0[0]) / (jiffies1[1] - jiffies0[1])
    out = {"device": str(det.device), "model_id": det.model_id, "frames": len(timings),
           "warm_up_revisions": {"parts": revised, "ms": revise_ms},
           "cpu_steal_share": steal,
           "torch_threads": torch.get_num_threads(),
           "latency_ms": latency_percentiles(timings, percentiles=(50, 95)),
           # ru_maxrss is in KiB on Linux; it is the process peak (includes earlier sections).
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_mib": rss0 / 1024}
    if det.device.type == "cuda":
        out["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(det.device) / 2**20
    # Traced Python + numpy allocations over a few frames (torch's own CPU allocator is not
    # traced), in a separate pass because tracing slows everything down.
    tracemalloc.start()
    for frame in frames[:3]:
        det.detect(frame)
    out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out


def run_latency(args):
    import torch

    from zsg_iad_ros.data.splits import TEST_CATEGORIES
    from zsg_iad_ros.data.synthetic import generate_sample
    n = args.latency_frames + 3
    # One stream of good parts of a test category (the memory fills as in the cell).
    frames = [generate_sample(TEST_CATEGORIES[0], "good", 10_000 + i, size=256).frame
              for i in range(n)]
    pts = frames[0].points
    n_points = int(np.isfinite(pts).all(-1).sum()) if pts is not None else 0
    # Teach mode keeps 4 references x 4 orientations pinned besides the streamed parts: the
    # largest memory the defaults allow, hence the slowest scoring.
    refs = [generate_sample(TEST_CATEGORIES[0], "good", 20_000 + i, size=256).frame
            for i in range(args.references)]
    out = {"image_size": 256, "valid_points_first_frame": n_points}
    if refs and args.aligned:
        # the aligned comparison needs parts of one product (an object): one gear design
        design = [generate_sample("gear", "good", 10_000 + i, size=256, design=1).frame
                  for i in range(n)]
        taught = [generate_sample("gear", "good", 20_000 + i, size=256, design=1).frame
                  for i in range(args.references)]
    # The same rows on each device, so a CUDA row has its CPU twin in the same run.
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        out[device] = latency_on(device, args, frames)
        if refs:
            out[f"{device}, {len(refs)} references"] = latency_on(device, args, frames, refs)
        if refs and args.aligned:
            gear = f"{device}, {len(refs)} references, gear of one design"
            out[gear] = latency_on(device, args, design, taught)
            # the same stream without the rotational self-comparison (a gear is symmetric)
            out[f"{gear}, symmetry off"] = latency_on(device, args, design, taught,
                                                      symmetry="off")
            out[f"{gear}, aligned"] = latency_on(device, args, design, taught, variation=True)
    for bb in args.compare:  # streaming latency of the compared backbones, same frames
        if bb != args.backbone:
            out[f"cpu, backbone {bb}"] = latency_on("cpu", args, frames, backbone=bb)
    return {"latency": out}


# ---------------------------------------------------------------------------------------------
def print_tables(results: dict) -> str:
    lines = []
    head = "| run / configuration | n | " + " | ".join(HEAD) + " |"
    if any(k != "latency" for k in results):
        lines += [head, "|" + " --- |" * (len(HEAD) + 2)]
    for section, rec in results.items():
        if section == "latency":
            continue
        for cname, c in rec["configs"].items():
            o = c["overall"]
            lines.append(f"| {section} / {cname} | {o['n_samples']} | "
                         + " | ".join(cell(o[k]) for k in HEAD) + " |")
            cm = c.get("category_mean", {})
            if cm.get("n_categories", 0) > 1:
                vals = " | ".join(cell(cm[k]) if k in cm else "" for k in HEAD)
                lines.append(f"| {section} / {cname}, mean of {cm['n_categories']} categories "
                             f"| | {vals} |")
    for section, rec in results.items():
        if section == "latency" or len(rec["configs"]) < 2:
            continue
        names = list(rec["configs"])
        lines += ["", f"{section}: image AUROC per defect type and configuration", "",
                  "| defect type | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
        nan = float("nan")
        for dt in rec["configs"]["all"]["per_defect_type"]:
            lines.append(f"| {dt} | " + " | ".join(
                cell(rec["configs"][n]["per_defect_type"].get(dt, {}).get("image_auroc", nan))
                for n in names) + " |")
    for section, rec in results.items():
        if section == "latency":
            continue
        cats = rec["configs"]["all"]["per_category"]
        lines += ["", f"{section}: per category (all modalities)", "",
                  "| category | n | img AUROC | px AUROC | AUPRO |", "|" + " --- |" * 5]
        for cat, m in cats.items():
            lines.append(f"| {cat} | {m['n_samples']} | {cell(m['image_auroc'])} | "
                         f"{cell(m['pixel_auroc'])} | {cell(m['aupro'])} |")
        names = list(rec["configs"])
        if len(names) > 1:  # fused against each modality alone / left out, per category
            lines += ["", f"{section}: image AUROC per category and configuration", "",
                      "| category | " + " | ".join(names) + " |",
                      "|" + " --- |" * (len(names) + 1)]
            for cat in cats:
                lines.append(f"| {cat} | " + " | ".join(
                    cell(rec["configs"][n]["per_category"].get(cat, {}).get(
                        "image_auroc", float("nan"))) for n in names) + " |")
    lat = results.get("latency")
    if lat:
        lines += ["", f"latency per stage [ms], {lat['image_size']}x{lat['image_size']}, "
                  f"{lat['valid_points_first_frame']} valid points", "",
                  "| run | stage | p50 | p95 |", "| --- | --- | --- | --- |"]
        runs = [k for k in lat if isinstance(lat[k], dict) and "latency_ms" in lat[k]]
        for run in runs:
            for stage, s in lat[run]["latency_ms"].items():
                lines.append(f"| {run} | {stage} | {s['p50']:.1f} | {s['p95']:.1f} |")
        revising = [r for r in runs if lat[r].get("warm_up_revisions", {}).get("parts")]
        if revising:
            lines += ["", "| run | warm-up parts revised | their revision, all together [ms] |",
                      "| --- | --- | --- |"]
            lines += [f"| {r} | {lat[r]['warm_up_revisions']['parts']} | "
                      f"{lat[r]['warm_up_revisions']['ms']:.0f} |" for r in revising]
        lines += ["", "| run | peak RSS [MiB] | tracemalloc peak [MiB] | "
                  "CUDA max alloc [MiB] | CPU stolen by the host [%] |",
                  "| --- | --- | --- | --- | --- |"]
        for run in runs:
            d = lat[run]
            cuda = d.get("cuda_max_memory_allocated_mib")
            steal = d.get("cpu_steal_share")
            lines.append(f"| {run} | {d['peak_rss_mib']:.0f} | "
                         f"{d['tracemalloc_peak_mib']:.1f} | "
                         f"{'n/a' if cuda is None else f'{cuda:.0f}'} | "
                         f"{'n/a' if steal is None else f'{100 * steal:.1f}'} |")
    return "\n".join(lines)


def parse_overrides(items) -> dict:
    """["key=value", ...] -> {key: value}, values read as JSON where possible (0.1, null,
    true, [..]) and kept as strings otherwise; DetectorConfig refuses unknown keys."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def comparison_table(results: dict, backbones) -> str:
    """One row per (data set run, backbone) with the ratio of its image AUROC to the hand-made
    patch-statistics baseline's on the same parts in this run."""
    keys = ("image_auroc", "image_auroc_first", "pixel_auroc", "aupro", "pixel_auroc_fg",
            "aupro_fg", "miss_rate", "false_alarm_rate")
    lines = ["| run | backbone | image AUROC (category mean) | image AUROC as first published "
             "| pixel AUROC | AUPRO | pixel AUROC in part | AUPRO in part | miss rate | "
             "false-alarm rate | image AUROC / patchstats |", "|" + " --- |" * 11]
    runs = sorted({k.split("@")[0] for k in results if "@" in k})
    for run in runs:
        base = results.get(f"{run}@patchstats")
        b_auc = base["configs"]["all"]["overall"]["image_auroc"] if base else float("nan")
        for bb in backbones:
            rec = results.get(f"{run}@{bb}")
            if rec is None:
                continue
            o, cm = rec["configs"]["all"]["overall"], rec["configs"]["all"]["category_mean"]
            ratio = o["image_auroc"] / b_auc if b_auc == b_auc and b_auc > 0 else float("nan")
            lines.append(f"| {run} | {bb} | {cell(o[keys[0]])} ({cell(cm.get(keys[0]))}) | "
                         + " | ".join(cell(o.get(k, float("nan"))) for k in keys[1:])
                         + f" | {cell(ratio)} |")
        found = (results.get(f"{run}@{backbones[0]}") or {}).get("baselines", {})
        # where the part is and how bright, nothing about defects: the floor of the pixel
        # metrics, and (image AUROC) what the capture conditions alone separate
        cf = found.get("content-free map")
        if cf:
            lines.append(f"| {run} | content-free map (blurred grey, {cf['polarity']}; frame "
                         f"brightness, {cf['image_polarity']}) | {_image_cell(cf)} | "
                         + " | " + " | ".join(cell(cf[k]) for k in keys[2:6]) + " | | | |")
        sensor = found.get("thermal / X-ray brightness")
        if sensor:
            lines.append(f"| {run} | thermal / X-ray brightness ({sensor['image_polarity']}) | "
                         f"{_image_cell(sensor)} |" + " |" * 8)
    return "\n".join(lines)


def _image_cell(baseline: dict) -> str:
    """"pooled (category mean)" image AUROC of a content-free baseline."""
    per_cat = baseline.get("per_category", {})
    mean = (np.mean([float(v["image_auroc"]) for v in per_cat.values()]) if per_cat
            else float("nan"))
    return f"{cell(baseline['image_auroc'])} ({cell(mean)})"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    backbones = list(dict.fromkeys([args.backbone] + list(args.compare)))
    results = {}
    t_start = time.perf_counter()
    for section in args.sections:
        t = time.perf_counter()
        try:
            if section == "latency":
                results.update(run_latency(args))
            else:
                samples = section_samples(section, args)
                cf = None
                if section in ("mulsen", "magnetic_tile"):
                    from zsg_iad_ros.evaluation.baselines import real_data_baselines
                    cf = real_data_baselines(samples, args.pixel_stride)
                for bb in backbones:
                    factory = default_detector_factory(backbone=bb, device=args.device,
                                                       **parse_overrides(args.set))
                    if section.startswith("synthetic"):
                        run = run_synthetic(args, factory, samples, section)
                        if args.aligned and args.references > 0 and bb == args.backbone:
                            run[f"{section}_k{args.references}_aligned"] = teach_run(
                                args, bb, samples, f"{section}, {args.references} references x"
                                f" {args.draws} draws, aligned comparison", {"variation": True})
                            if section == "synthetic_board":  # in a fixture: 256 px by default
                                run[f"{section}_k{args.references}_aligned_grid128"] = teach_run(
                                    args, bb, samples, f"{section}, {args.references} "
                                    f"references x {args.draws} draws, aligned comparison, "
                                    "variation_grid 128", {"variation": True,
                                                           "variation_grid": 128})
                    else:
                        run = {"mulsen": run_mulsen, "magnetic_tile": run_magnetic_tile}[
                            section](args, factory, samples)
                    if (args.miss_rate is not None and args.references > 0
                            and bb == args.backbone and section != "magnetic_tile"):
                        run.update(run_operating_points(args, bb, samples, section))
                    for name, rec in run.items():
                        if cf is not None:
                            rec["baselines"] = cf
                        results[f"{name}@{bb}"] = rec
        except FileNotFoundError as e:  # real data absent on this machine
            print(f"[benchmark] skipped {section}: {e}", file=sys.stderr)
            continue
        print(f"[benchmark] {section} done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    # the main backbone's runs keep their plain names (plots, per-category tables)
    main_runs = {k.split("@")[0]: v for k, v in results.items()
                 if k == "latency" or k.endswith(f"@{args.backbone}")}
    for name, rec in main_runs.items():
        if name != "latency":
            write_outputs(rec, os.path.join(args.out, name), plots=not args.no_plots)
    table = print_tables(main_runs).lstrip()
    if any(k != "latency" for k in results):  # accuracy sections ran
        table = ("Backbones compared on the same parts\n\n" + comparison_table(results, backbones)
                 + f"\n\nMain backbone ({args.backbone}) in detail\n\n" + table)
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/benchmark_detector.py " + " ".join(given)
    serial = {"command": command.strip(), "elapsed_s": time.perf_counter() - t_start,
              "args": vars(args)}
    others = {k: v for k, v in results.items()
              if k != "latency" and not k.endswith(f"@{args.backbone}")}
    for name, rec in {**main_runs, **others}.items():
        serial[name] = to_json({k: v for k, v in rec.items() if k not in ("runs", "figures")}
                               if name != "latency" else rec)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(serial, f, indent=1, allow_nan=False)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(f"# Detector benchmark\n\n`{serial['command']}` "
                f"({serial['elapsed_s']:.0f} s)\n\n{table}\n\nDetails per data set in the "
                "sub-folders (summary.md, figures).\n")
    print(table)
    print(f"\nwrote {args.out}/metrics.json, summary.md ({serial['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
