#!/usr/bin/env python3
"""Do turned parts score as normal as parts in the references' pose? False-alarm rate at the
detector's default threshold, with and without the aligned comparison (`variation`).

  python benchmarks/benchmark_rotation.py                     # gear and capsule, ~4 min
  python benchmarks/benchmark_rotation.py --angles 12 --defective 4 --categories gear

Per object category of the synthetic test split, one design (`generate_sample(design=...)`):
the detector is taught `--references` good parts held in a fixture (pose angle 0), then scores
`--angles` good parts twice: in the fixture pose, and the same parts (same seeds: finish,
lighting, noise and small shift) turned by angles spread evenly over [0, 360). The same is done
for `--defective` parts with `--defect` to show that turning them does not hide the defect.
Parts are scored against the taught state only (`update_memory=False`), so the two runs differ
in the angle alone. Reported per category and variant: false-alarm rate of the good parts (and
the difference turned - fixture, in percentage points), median and 95th percentile of their
score, share of defective parts flagged, and image AUROC of good vs defective parts per run.
One false alarm is 100 / `--angles` percentage points: the default 144 angles (2.5-degree
steps) resolve a difference of 1 point, 36 angles only steps of 2.8.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from zsg_iad_ros.core.detector import Detector, DetectorConfig
from zsg_iad_ros.data.synthetic import generate_sample
from zsg_iad_ros.evaluation.metrics import image_auroc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--categories", nargs="+", default=["gear", "capsule"])
    p.add_argument("--design", type=int, default=1)
    p.add_argument("--angles", type=int, default=144,
                   help="good parts (one angle each); one false alarm is 100 / angles points")
    p.add_argument("--defective", type=int, default=12, help="defective parts (turned too)")
    p.add_argument("--defect", default="missing_part")
    p.add_argument("--references", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--variation-grid", type=int, default=None,
                   help="the aligned comparison's model grid (DetectorConfig.variation_grid)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    return p.parse_args(argv)


def parts(cat, kind, seeds, angles, args):
    return [generate_sample(cat, kind, s, size=args.size, design=args.design,
                            angle_deg=float(a)) for s, a in zip(seeds, angles)]


def scores(det, samples):
    out = []
    for s in samples:
        d = det.detect(s.frame, update_memory=False)
        out.append((float(d.pred_score), bool(d.is_anomalous)))
    return out


def summarize(good, bad):
    g = np.array([s for s, _ in good])
    b = np.array([s for s, _ in bad])
    labels = np.r_[np.zeros(len(g)), np.ones(len(b))]
    return {"false_alarm_rate": float(np.mean([f for _, f in good])),
            "false_alarms": int(sum(f for _, f in good)),
            "good_score_p50": float(np.median(g)), "good_score_p95": float(np.percentile(g, 95)),
            "defects_flagged": float(np.mean([f for _, f in bad])) if bad else float("nan"),
            "image_auroc": float(image_auroc(labels, np.r_[g, b])) if bad
            else float("nan")}


def main(argv=None) -> int:
    args = parse_args(argv)
    n, k = args.angles, args.defective
    turns = np.arange(n) * 360.0 / n
    turns_bad = np.arange(k) * 360.0 / max(k, 1) + 360.0 / max(2 * k, 1)  # off the good grid
    results, t0 = {}, time.perf_counter()
    for cat in args.categories:
        refs = parts(cat, "good", range(20_000, 20_000 + args.references),
                     [0.0] * args.references, args)
        good_seeds, bad_seeds = range(30_000, 30_000 + n), range(40_000, 40_000 + k)
        runs = {"fixture": (parts(cat, "good", good_seeds, [0.0] * n, args),
                            parts(cat, args.defect, bad_seeds, [0.0] * k, args)),
                "turned": (parts(cat, "good", good_seeds, turns, args),
                           parts(cat, args.defect, bad_seeds, turns_bad, args))}
        for variation in (False, True):
            grid = {} if args.variation_grid is None else {"variation_grid": args.variation_grid}
            det = Detector(DetectorConfig(device="cpu", variation=variation, **grid))
            det.teach([r.frame for r in refs])
            row = {run: summarize(scores(det, g), scores(det, b))
                   for run, (g, b) in runs.items()}
            row["threshold"] = float(det.threshold_for(cat))
            row["far_difference_pp"] = 100 * (row["turned"]["false_alarm_rate"]
                                              - row["fixture"]["false_alarm_rate"])
            results[f"{cat}, variation {'on' if variation else 'off'}"] = row
            print(f"[{time.perf_counter() - t0:5.0f} s] {cat} variation={variation} done",
                  file=sys.stderr, flush=True)

    head = (f"| category, aligned comparison | run | false alarms ({n} good) | good score p50 / "
            f"p95 | {args.defect} flagged ({k}) | image AUROC |")
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for name, row in results.items():
        for run in ("fixture", "turned"):
            r = row[run]
            far = f"{r['false_alarm_rate']:.3f} ({r['false_alarms']} of {n})"
            if run == "turned":
                far += f", {row['far_difference_pp']:+.1f} pp"
            lines.append(f"| {name} (threshold {row['threshold']:.3f}) | {run} | {far} | "
                         f"{r['good_score_p50']:.3f} / {r['good_score_p95']:.3f} | "
                         f"{r['defects_flagged']:.2f} | {r['image_auroc']:.3f} |")
    print("\n".join(lines))
    print(f"\n{args.references} references in the fixture pose (angle 0), design {args.design}, "
          f"{args.size} px; turned: angles {turns[0]:g}..{turns[-1]:g} deg in steps of "
          f"{360.0 / n:g}; {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k_: str(v) for k_, v in vars(args).items()},
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
