#!/usr/bin/env python3
"""Offline evaluation of many bags: one process vs Ray workers, in one run on the same bags.

  python benchmarks/benchmark_fleet.py                      # 8 small bags, 2 Ray workers
  python benchmarks/benchmark_fleet.py --bags 16 --workers 4 --stream-memory carry

Writes --bags synthetic bags (test split, --n-good/--n-defective parts per category each),
scores them with `evaluate_bags` in this process and with `evaluate_bags_on_ray` on a local Ray
with --workers workers, checks that both give the same scores, and prints wall time and per-part
throughput of each, their ratio, and the time projected for 10,000 such bags as 2-core workers
are added.

Wall times include reading the bags and, for Ray, its start, the scans, the model load in each
worker and the shut-down (Ray's start is also shown alone); this process loads the model once
before its timed runs. This process runs once with torch's default thread count and once with
one thread, as each Ray worker does (Ray's default for a one-CPU task), so the gain of running
processes side by side shows apart from that of the thread count. Figures depend on the load
of the machine: compare them only within one run.
The projection assumes shards that scale out (per-bag memory, or at least as many streams as
workers), bags on storage every node reads, and the driver's memory for the pixel data (see
docs/EVALUATION.md); per-worker throughput is that of the Ray run after Ray's start (so this
short run's model loads and scans weigh on it), and Ray's start is added once.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

from zsg_iad_ros.data.bags import write_bag
from zsg_iad_ros.data.splits import iter_split
from zsg_iad_ros.evaluation.fleet import evaluate_bags_on_ray, import_ray, ray_session
from zsg_iad_ros.evaluation.offline import default_detector_factory, evaluate_bags

FLEET_BAGS = 10_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bags", type=int, default=8, help="bags to write and evaluate")
    p.add_argument("--n-good", type=int, default=1, help="good parts per category and bag")
    p.add_argument("--n-defective", type=int, default=1,
                   help="defective parts per category and bag")
    p.add_argument("--size", type=int, default=128, help="image size of the generated parts")
    p.add_argument("--image-size", type=int, default=None,
                   help="detector input size (default: the detector's own)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (local Ray)")
    p.add_argument("--stream-memory", choices=("carry", "per-bag"), default="per-bag",
                   help="per-bag (default): bags independent, the mode that scales with bags")
    p.add_argument("--pixel-stride", type=int, default=1)
    p.add_argument("--progress-every", type=int, default=0, help="progress lines (0: none)")
    p.add_argument("--keep", default=None, help="write the bags here and keep them")
    return p.parse_args(argv)


def write_bags(folder: str, args) -> list:
    paths = []
    for k in range(args.bags):
        path = os.path.join(folder, f"shift_{k:02d}")
        write_bag(path, iter_split("test", args.n_good, args.n_defective, seed=k,
                                   size=args.size))
        paths.append(path)
    return paths


def scores(record):
    return np.array([r.pred_score for r in record["runs"]["all"].draws[0]])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bags < 1 or args.workers < 2 or args.workers > (os.cpu_count() or 1) * 4:
        sys.exit("--bags must be >= 1 and --workers in [2, 4 x CPUs]")
    folder = args.keep or tempfile.mkdtemp(prefix="zsg-fleet-bench-")
    os.makedirs(folder, exist_ok=True)
    try:
        bags = write_bags(folder, args)
        config = {} if args.image_size is None else {"image_size": args.image_size}
        factory = default_detector_factory(device="cpu", **config)
        kw = dict(stream_memory=args.stream_memory, pixel_stride=args.pixel_stride,
                  progress_every=args.progress_every, name="benchmark")
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        factory(("rgb", "sensor", "geometry"))  # model loaded once here, before the timed runs
        t_load = time.perf_counter() - t0

        t0 = time.perf_counter()
        single = evaluate_bags(bags, factory, **kw)
        t_single = time.perf_counter() - t0
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            single_1 = evaluate_bags(bags, factory, **kw)
            t_single_1 = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)

        ray = import_ray()
        t0 = time.perf_counter()
        with ray_session(ray, args.workers, None):
            t_start = time.perf_counter() - t0
            fanned = evaluate_bags_on_ray(bags, factory, workers=args.workers, **kw)
            shards = fanned["inputs"]["execution"]["shards"]
        t_ray = time.perf_counter() - t0
        load_after = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    n = int(single["configs"]["all"]["overall"]["n_samples"])
    a, b, c = scores(single), scores(fanned), scores(single_1)
    same = (a.shape == b.shape == c.shape and float(np.max(np.abs(a - b))) <= 1e-6
            and float(np.max(np.abs(a - c))) <= 1e-6)
    per_bag = n / args.bags
    r_single, r_single_1, r_ray = n / t_single, n / t_single_1, n / t_ray
    print(f"{args.bags} bags x {per_bag:.0f} parts ({n} parts, parts {args.size} px, detector "
          f"{args.image_size or 'default'} px, stream memory {args.stream_memory}), "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"scores identical (|diff| <= 1e-6): {same}")
    print("")
    print("| run | wall [s] | parts/s | s/part |")
    print("| --- | --- | --- | --- |")
    print(f"| single process, torch {threads} threads (model loaded before: {t_load:.1f} s) | "
          f"{t_single:.1f} | {r_single:.2f} | {1 / r_single:.2f} |")
    print(f"| single process, torch 1 thread | {t_single_1:.1f} | {r_single_1:.2f} | "
          f"{1 / r_single_1:.2f} |")
    print(f"| Ray, {args.workers} workers x 1 thread, {shards} shards (Ray start {t_start:.1f} s; "
          f"model loads included) | {t_ray:.1f} | {r_ray:.2f} | {1 / r_ray:.2f} |")
    print("")
    print(f"Ray / single wall time: {t_ray / t_single:.2f}x (vs 1 thread: "
          f"{t_ray / t_single_1:.2f}x); throughput Ray / single: {r_ray / r_single:.2f}x "
          f"(vs 1 thread: {r_ray / r_single_1:.2f}x)")
    parts = FLEET_BAGS * per_bag
    # A 2-core worker machine scores what the local workers scored here after Ray's start
    # (model loads and scans of this short run included: conservative); each added one adds
    # the same throughput; Ray's start is paid once.
    r_node = n / (t_ray - t_start)
    print(f"\nProjected for {FLEET_BAGS} such bags ({parts:.0f} parts) at {r_node:.2f} parts/s "
          f"per added 2-core worker; single process {parts / r_single / 3600:.1f} h:")
    print("| 2-core workers | hours |")
    print("| --- | --- |")
    for k in (1, 2, 4, 8, 16, 32):
        print(f"| {k} | {(t_start + parts / (k * r_node)) / 3600:.2f} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
