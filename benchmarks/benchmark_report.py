#!/usr/bin/env python3
"""Report benchmark: share of reports passing each executable rule, narrator acceptance and the
builder's latency. Prints figures (and writes them as JSON with --json).

  python benchmarks/benchmark_report.py                       # detector + GT, tiny narrator
  python benchmarks/benchmark_report.py --sources gt          # no detector (seconds)
  python benchmarks/benchmark_report.py --narrator PATH_OR_ID # a real VLM checkpoint

Data sets
- synthetic: `splits.iter_split('test', n_good, n_defective)` (categories and defect types never
  used in training); the detector is taught with --references good parts of each category
  (other seeds) before the category's parts are inspected.
- mulsen: MulSen-AD (CC BY 4.0, Li et al., CVPR 2025) through `data.real.load_mulsen`, with
  --references good parts per category taught from the same split (those parts are then not
  scored). Evaluation only.
Sources of detections
- detector: `Detector(DetectorConfig()).detect(frame)`.
- gt: detections built from the ground truth (mask -> regions), as the GRPO prompts are.
For each: rules on the report as first built (before repair), and after `finalize_report`
(valid / repaired shares). Narrator: for anomalous reports, the narrator's text is checked with
`apply_narration`; a tiny random narrator (default) writes noise, so its acceptance is expected
to be about 0 and the deterministic text is kept.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from typing import Dict, List

import numpy as np

from zsg_iad_ros.core.report import build_report, finalize_report
from zsg_iad_ros.core.rules import RULES, Evidence, run_rules


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="*", default=["synthetic", "mulsen"],
                   choices=["synthetic", "mulsen"])
    p.add_argument("--sources", nargs="*", default=["detector", "gt"], choices=["detector", "gt"])
    p.add_argument("--n-good", type=int, default=1, help="good parts per synthetic test category")
    p.add_argument("--n-defective", type=int, default=4,
                   help="defective parts per synthetic test category")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--mulsen-limit", type=int, default=0,
                   help="at most this many MulSen samples (0: all)")
    p.add_argument("--references", type=int, default=3, help="good parts taught per category")
    p.add_argument("--narrator", default="tiny",
                   help="'tiny' (random Qwen2-VL built here), 'none', or a checkpoint id/path")
    p.add_argument("--narrator-tokens", type=int, default=48)
    p.add_argument("--latency-repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures to this file")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------- data
def synthetic_groups(args):
    """{category: (reference frames, samples)} from the synthetic test split."""
    from zsg_iad_ros.data.splits import iter_split

    samples = list(iter_split("test", args.n_good, args.n_defective, args.seed, args.size))
    refs = list(iter_split("test", args.references, 0, args.seed + 1000, args.size)) \
        if args.references else []
    groups = {}
    for s in samples:
        groups.setdefault(s.category, ([r.frame for r in refs if r.category == s.category], []))
        groups[s.category][1].append(s)
    return groups


def mulsen_groups(args):
    from zsg_iad_ros.data.real import load_mulsen

    samples = list(load_mulsen())
    rng = np.random.default_rng(args.seed)
    groups = {}
    for cat in sorted({s.category for s in samples}):
        items = [s for s in samples if s.category == cat]
        good = [i for i, s in enumerate(items) if s.label == 0]
        taught = set(rng.choice(good, size=min(args.references, len(good)), replace=False)
                     .tolist()) if args.references and good else set()
        groups[cat] = ([items[i].frame for i in sorted(taught)],
                       [s for i, s in enumerate(items) if i not in taught])
    if args.mulsen_limit:
        n = 0
        for cat in groups:
            keep = groups[cat][1][:max(0, args.mulsen_limit - n)]
            n += len(keep)
            groups[cat] = (groups[cat][0], keep)
    return groups


# ------------------------------------------------------------------------------- detections
def detections(groups, source: str):
    """[(sample, detection)] for every sample of the groups."""
    if source == "gt":
        from zsg_iad_ros.training.grpo import detection_from_ground_truth

        return [(s, detection_from_ground_truth(s)) for _, items in groups.values() for s in items]
    from zsg_iad_ros.core.detector import Detector, DetectorConfig

    out = []
    detector = Detector(DetectorConfig())
    for cat, (refs, items) in groups.items():
        detector.reset()
        if refs:
            detector.teach([f for f in refs[:8]])
        for s in items:
            out.append((s, detector.detect(s.frame)))
        print(f"[report-benchmark] {cat}: {len(items)} parts", file=sys.stderr)
    return out


def rule_shares(pairs) -> dict:
    built_pass = defaultdict(int)
    valid = repaired = 0
    decisions = Counter()
    for s, det in pairs:
        ev = Evidence.from_detection(det, sensor_type=s.frame.sensor_type)
        for r in run_rules(build_report(det, s.frame), ev):
            built_pass[r.name] += r.passed
        report, _ = finalize_report(det, s.frame)
        valid += report["valid"]
        repaired += report["repaired"]
        decisions[report["decision"]] += 1
    n = max(1, len(pairs))
    return {"n": len(pairs), "built_pass": {k: built_pass[k] / n for k in RULES},
            "valid_after_finalize": valid / n, "repaired": repaired / n,
            "decisions": dict(decisions)}


def narrator_shares(pairs, narrator) -> dict:
    from zsg_iad_ros.core.narrator import apply_narration

    passed = defaultdict(int)
    n = accepted = 0
    seconds = []
    for s, det in pairs:
        report, _ = finalize_report(det, s.frame)
        if report["decision"] != "anomalous" or s.frame.rgb is None or not report["valid"]:
            continue
        ev = Evidence.from_detection(det, sensor_type=s.frame.sensor_type)
        t = time.perf_counter()
        text = narrator.generate_text(s.frame.rgb, report)
        seconds.append(time.perf_counter() - t)
        _, ok, results = apply_narration(report, text, ev)
        n += 1
        accepted += ok
        for r in results:
            passed[r["name"]] += r["passed"]
    return {"n_flagged": n, "accepted": accepted / max(1, n),
            "narrated_pass": {k: passed[k] / max(1, n) for k in RULES},
            "generate_s_p50": float(np.median(seconds)) if seconds else None}


def latency(pairs, repeats: int) -> dict:
    times = {"build_report": [], "run_rules": [], "finalize_report": []}
    for s, det in pairs:
        ev = Evidence.from_detection(det, sensor_type=s.frame.sensor_type)
        report = build_report(det, s.frame)
        for _ in range(repeats):
            t0 = time.perf_counter()
            build_report(det, s.frame)
            t1 = time.perf_counter()
            run_rules(report, ev)
            t2 = time.perf_counter()
            finalize_report(det, s.frame)
            t3 = time.perf_counter()
            times["build_report"].append(t1 - t0)
            times["run_rules"].append(t2 - t1)
            times["finalize_report"].append(t3 - t2)
    return {k: {"p50_ms": float(np.percentile(v, 50) * 1e3),
                "p95_ms": float(np.percentile(v, 95) * 1e3)} for k, v in times.items() if v}


def load_narrator(spec: str, tokens: int):
    if spec == "none":
        return None, "none"
    from zsg_iad_ros.core.narrator import Narrator

    if spec == "tiny":
        from zsg_iad_ros.training.tiny_models import build_tiny_qwen2_vl

        spec = build_tiny_qwen2_vl(tempfile.mkdtemp(prefix="tiny_qwen2_vl_"))
        name = "tiny random Qwen2-VL"
    else:
        name = spec
    return Narrator(spec, max_new_tokens=tokens), name


def main(argv=None) -> int:
    args = parse_args(argv)
    narrator, narrator_name = load_narrator(args.narrator, args.narrator_tokens)
    figures: Dict[str, dict] = {}
    all_pairs: List = []
    for dataset in args.datasets:
        try:
            groups = synthetic_groups(args) if dataset == "synthetic" else mulsen_groups(args)
        except (ImportError, FileNotFoundError) as err:
            print(f"[report-benchmark] {dataset}: not available ({err}); section skipped",
                  file=sys.stderr)
            figures[dataset] = {"skipped": str(err)}
            continue
        for source in args.sources:
            pairs = detections(groups, source)
            all_pairs += pairs
            entry = rule_shares(pairs)
            if narrator is not None:
                entry["narrator"] = narrator_shares(pairs, narrator)
            figures[f"{dataset}/{source}"] = entry
    figures["latency"] = latency(all_pairs, args.latency_repeats)
    if narrator is not None:
        narrator.close()

    names = list(RULES)
    print(f"\nShare of reports passing each rule as first built (before repair); narrator: "
          f"{narrator_name}")
    print(f"{'set/source':<22}{'n':>5} " + " ".join(f"{n[:12]:>12}" for n in names)
          + f" {'valid':>7} {'repaired':>9} {'narr.acc':>9}")
    for key, e in figures.items():
        if key == "latency" or "skipped" in e:
            continue
        acc = e.get("narrator", {})
        acc_s = f"{acc['accepted']:.2f}/{acc['n_flagged']}" if acc else "-"
        print(f"{key:<22}{e['n']:>5} " + " ".join(f"{e['built_pass'][n]:>12.2f}" for n in names)
              + f" {e['valid_after_finalize']:>7.2f} {e['repaired']:>9.2f} {acc_s:>9}")
        if acc:
            print(f"{'  narrated text':<22}{acc['n_flagged']:>5} "
                  + " ".join(f"{acc['narrated_pass'][n]:>12.2f}" for n in names))
    for key, e in figures.items():
        if key != "latency" and "decisions" in e:
            print(f"decisions {key}: {e['decisions']}")
    print("\nLatency per report (ms), CPU:")
    for k, v in figures["latency"].items():
        print(f"  {k:<16} p50 {v['p50_ms']:.3f}  p95 {v['p95_ms']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
