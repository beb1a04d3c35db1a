#!/usr/bin/env python3
"""Which type does a flagged part's region get? Region types per planted defect type, for
objects of one design compared in register (`variation: true`) and, with `--compare`, without.

  python benchmarks/benchmark_region_types.py              # seed 0, ~1.5 min
  python benchmarks/benchmark_region_types.py --seed 1 --compare

Per object category of the synthetic test split, every part one design
(`split_specs(..., one_design=True)`: the design and parts of `benchmark_detector.py --sections
synthetic_design` with the same --seed, --n-good, --n-defective and --references): the
detector is taught the category's first `--references` good parts and inspects its defective
ones (`update_memory=False`). A region counts for its part's defect type where its box overlaps the
ground truth, else as "off". Prints, per category and defect type, how many regions got each
type; a reject / repair cell acts on these types (reject_gate's `non_repairable_types`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

from zsg_iad_ros.core.detector import Detector, DetectorConfig
from zsg_iad_ros.data.splits import split_specs
from zsg_iad_ros.data.synthetic import CATEGORIES, GOOD


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="split seed: design, parts and poses")
    p.add_argument("--references", type=int, default=4)
    p.add_argument("--n-good", type=int, default=6,
                   help="good parts per category besides the references (sets the design)")
    p.add_argument("--n-defective", type=int, default=14, help="defective parts per category")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--compare", action="store_true",
                   help="also without the aligned comparison (variation: false)")
    p.add_argument("--json", default="", help="also write the counts to this file")
    return p.parse_args(argv)


def region_types(args, variation: bool) -> dict:
    """{category: {defect type: Counter(region type, or 'off:<type>' off the ground truth;
    'parts' and 'flagged': how many parts of that type were inspected and flagged)}}"""
    specs = [s for s in split_specs("test", args.n_good + args.references, args.n_defective,
                                    seed=args.seed, one_design=True)
             if CATEGORIES[s.category].kind == "object"]
    out: dict = defaultdict(lambda: defaultdict(Counter))
    for cat in sorted({s.category for s in specs}):
        mine = [s for s in specs if s.category == cat]
        det = Detector(DetectorConfig(variation=variation))
        good = [s for s in mine if s.defect_type == GOOD][:args.references]
        det.teach([s.generate(args.size).frame for s in good])
        for spec in mine:
            if spec.defect_type == GOOD:
                continue
            sample = spec.generate(args.size)
            found = det.detect(sample.frame, update_memory=False)
            out[cat][spec.defect_type]["parts"] += 1
            out[cat][spec.defect_type]["flagged"] += int(found.is_anomalous)
            for region in found.regions:
                x, y, w, h = region.bbox_xywh
                on = sample.gt_mask[y:y + h, x:x + w].any()
                out[cat][spec.defect_type][("" if on else "off:") + region.defect_type] += 1
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = {"aligned": region_types(args, True)}
    if args.compare:
        runs["unaligned"] = region_types(args, False)
    for name, found in runs.items():
        print(f"\n## {name} (seed {args.seed}, {args.references} references)")
        print("| category | defect | flagged | region types |\n| --- | --- | --- | --- |")
        for cat, by_defect in found.items():
            for defect, types in sorted(by_defect.items()):
                said = ", ".join(f"{t} {n}" for t, n in types.most_common()
                                 if t not in ("parts", "flagged")) or "-"
                print(f"| {cat} | {defect} | {types['flagged']} of {types['parts']} | {said} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: {c: {d: dict(t) for d, t in v.items()} for c, v in r.items()}
                       for k, r in runs.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
