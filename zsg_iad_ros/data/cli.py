"""`zsg-generate`: write a split of procedural parts, or real samples, into a ROS 2 bag.

    zsg-generate --split test --n-good 5 --n-defective 10 --seed 0 --out bags/test.mcap
    zsg-generate --split aux --n-good 20 --n-defective 40 --out bags/aux --storage sqlite3
    zsg-generate --real mulsen --out bags/mulsen
    zsg-generate --real magnetic_tile --out bags/tile

`--out` names the bag directory (rosbag2 bags are directories; a trailing .mcap/.db3 is kept
as part of the name). Prints progress, samples/s and the bag size.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from .bags import bag_info, write_bag


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zsg-generate", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--split", choices=["aux", "test"], help="procedural zero-shot split")
    src.add_argument("--real", choices=["mulsen", "magnetic_tile"], help="real samples")
    p.add_argument("--n-good", type=int, default=5, help="good parts per category")
    p.add_argument("--n-defective", type=int, default=10, help="defective parts per category")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image size of procedural parts [px]")
    p.add_argument("--categories", nargs="*", help="restrict to these categories")
    p.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--rate", type=float, default=5.0, help="parts per second in the bag")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.split:
        from .splits import split_specs
        specs = split_specs(args.split, args.n_good, args.n_defective, args.seed)
        if args.categories:
            specs = [s for s in specs if s.category in set(args.categories)]
        total = len(specs)
        samples = (s.generate(args.size) for s in specs)
        what = f"{args.split} split"
    else:
        from .real import load_magnetic_tile, load_mulsen
        if args.real == "mulsen":
            items = load_mulsen(categories=args.categories or None)
        else:
            items = load_magnetic_tile()
        total = len(items)
        samples = iter(items)
        what = args.real
    if total == 0:
        print("nothing to write (no categories selected?)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    step = max(1, total // 20)

    def progress(n):
        if n % step == 0 or n == total:
            dt = time.perf_counter() - t0
            print(f"[{n}/{total}] {n / dt:.1f} samples/s", flush=True)

    try:
        n = write_bag(args.out, samples, storage=args.storage, rate_hz=args.rate,
                      progress=progress)
    except (FileExistsError, ValueError) as e:
        print(f"zsg-generate: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    info = bag_info(args.out)
    print(f"wrote {n} parts ({what}) to {args.out} [{args.storage}]: "
          f"{info.bytes / 1e6:.1f} MB, {n / dt:.1f} samples/s (generate + write)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
