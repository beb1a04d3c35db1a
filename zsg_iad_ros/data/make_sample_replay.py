"""Build the bundled replay bag `zsg_iad_ros/resources/sample_replay/` and its reference bag
`zsg_iad_ros/resources/sample_reference/` (deterministic).

    python -m zsg_iad_ros.data.make_sample_replay [--out DIR] [--reference-out DIR] [--size 160]

Twelve procedural parts of two test categories of one X-ray cell (gear, capsule), six per
category in the order good, good, defect, good, defect, defect, so a streaming detector sees
normal parts of a category before its first defect. Each category is one product (one design,
`generate_sample(..., design=DESIGN)`), as a cell's production stream is, lying in any pose
under the cell's lamp. Defects are held-out types (see `splits.py`), so nothing in the bag was
seen in training. Images are 160x160 to keep the bag small (about 7 MB, mcap).

The reference bag holds four other good parts per category: the known-good parts a cell
captures at set-up for teach mode (`reference_path` of the node). None of them is in the replay.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from ..core.frame import Sample
from .bags import bag_info, write_bag
from .splits import split_defects
from .synthetic import generate_sample

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "resources" / "sample_replay"
DEFAULT_REFERENCE_OUT = DEFAULT_OUT.parent / "sample_reference"
N_REFERENCES = 4
#: the product of each category's stream (the generator's first design)
DESIGN = 0
CATEGORIES = ("gear", "capsule")
ORDER = ("good", "good", 0, "good", 1, 2)  # ints index the category's held-out defects
PREFERRED = {"gear": ("crack", "missing_part", "void"),
             "capsule": ("misalignment", "bump", "contamination")}


def replay_samples(size: int = 160) -> List[Sample]:
    out = []
    for c_i, cat in enumerate(CATEGORIES):
        heldout = split_defects("test", cat)
        defects = [d for d in PREFERRED[cat] if d in heldout]
        for k, item in enumerate(ORDER):
            defect = item if isinstance(item, str) else defects[item]
            out.append(generate_sample(cat, defect, seed=9000 + 100 * c_i + k, size=size,
                                       design=DESIGN))
    return out


def reference_samples(size: int = 160) -> List[Sample]:
    """Good parts for teach mode, seeds disjoint from `replay_samples`."""
    return [generate_sample(cat, "good", seed=9500 + 100 * c_i + k, size=size, design=DESIGN)
            for c_i, cat in enumerate(CATEGORIES) for k in range(N_REFERENCES)]


def _write(out: Path, samples: List[Sample]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / out.name  # the bag file is named after its directory
        write_bag(bag, samples, storage="mcap", rate_hz=2.0)
        out.mkdir(parents=True, exist_ok=True)
        for old in list(out.glob("*.mcap")) + [out / "metadata.yaml"]:
            old.unlink(missing_ok=True)
        for f in bag.iterdir():
            shutil.move(str(f), out / f.name)
    print(f"wrote {len(samples)} parts to {out}: {bag_info(out).bytes / 1e6:.1f} MB")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--reference-out", type=Path, default=DEFAULT_REFERENCE_OUT)
    p.add_argument("--size", type=int, default=160)
    args = p.parse_args(argv)
    samples = replay_samples(args.size)
    for s in samples:
        print(f"{s.sample_id:45s} {s.description}")
    _write(args.out, samples)
    _write(args.reference_out, reference_samples(args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
