"""Generator and bag throughput (prints figures; no assertions).

    python -m zsg_iad_ros.data.benchmark [--n 40] [--size 256]

Reports samples/s of `generate_sample` per category (good and defective parts alternating)
and overall, then the bag write/read rate and bytes per part.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .bags import bag_info, read_bag, write_bag
from .splits import split_specs
from .synthetic import CATEGORIES, applicable_defects, generate_sample


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20, help="samples per category")
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)
    generate_sample("gear", "good", 0, size=args.size)  # warm caches
    # CPU time is reported beside wall time: on a shared machine wall time mostly measures
    # the other processes
    total_n, total_t, total_c = 0, 0.0, 0.0
    for cat in CATEGORIES:
        defects = applicable_defects(cat)
        t, c = time.perf_counter(), time.process_time()
        for i in range(args.n):
            generate_sample(cat, "good" if i % 2 == 0 else defects[i % len(defects)], i,
                            size=args.size)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        total_n, total_t, total_c = total_n + args.n, total_t + dt, total_c + dc
        print(f"{cat:16s} {args.n / dt:6.1f} samples/s wall, {args.n / dc:6.1f} per CPU-s")
    print(f"{'all':16s} {total_n / total_t:6.1f} samples/s wall, {total_n / total_c:6.1f} per "
          f"CPU-s at {args.size}x{args.size}")
    samples = [s.generate(args.size) for s in split_specs("test", 1, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("mcap", "sqlite3"):
            path = Path(tmp) / storage
            t = time.perf_counter()
            write_bag(path, samples, storage=storage)
            tw = time.perf_counter() - t
            t = time.perf_counter()
            n = sum(1 for _ in read_bag(path))
            tr = time.perf_counter() - t
            info = bag_info(path)
            print(f"bag {storage:8s} write {len(samples) / tw:6.1f} parts/s, read "
                  f"{n / tr:6.1f} parts/s, {info.bytes / len(samples) / 1e6:.2f} MB/part")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
