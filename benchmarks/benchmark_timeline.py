#!/usr/bin/env python3
"""Where one part's time goes on the detector's two threads: the median start and end of each
step, on the calling thread and on the comparison thread (`Detector._comparison_worker`).

  python benchmarks/benchmark_timeline.py                       # aligned gear, 20 parts, ~1 min
  python benchmarks/benchmark_timeline.py --no-variation --parts 40

The detector is taught `--references` good parts of one design of `--category` and then
inspects `--parts` further good parts (the first 3 are a warm-up and not counted), as the
README's latency command does for its aligned row. Each step is one of the detector's own
methods, timed by a wrapper around it (its start and end relative to `detect`'s start, and the
thread it ran on); a step that runs twice in a part is listed twice (#1, #2). The wrappers cost
a few microseconds a call. A step's duration on a busy thread includes its waits for the GIL:
compare it with the step alone (`cProfile`) to see how much the other thread slows it.
"""
from __future__ import annotations

import argparse
import functools
import threading
import time
from collections import Counter, defaultdict

import numpy as np

from zsg_iad_ros.core.detector import Detector, DetectorConfig
from zsg_iad_ros.data.synthetic import generate_sample

#: the detector's steps (methods) timed; the static ones are wrapped as static methods
STEPS = ("_flat_images", "_features", "_geometry_job", "_geometry_images", "_comparison_job",
         "_timed_symmetry_maps", "_inspect_aligned", "_score_symmetry", "_grounding_rgb",
         "_score_aligned", "_memory_entry_job", "_evidence", "_regions")
STATIC_STEPS = ("_speck_maps", "_upsample")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--category", default="gear")
    p.add_argument("--design", type=int, default=1)
    p.add_argument("--references", type=int, default=4)
    p.add_argument("--parts", type=int, default=20, help="parts counted (after 3 warm-up parts)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--no-variation", action="store_true",
                   help="without the aligned comparison (variation: false)")
    return p.parse_args(argv)


class Recorder:
    """Wraps the detector's steps (on the class, so both threads' calls are seen) and keeps
    (thread, step, start ms, end ms) of the part being inspected."""

    def __init__(self):
        self.events = []
        self.t0 = 0.0

    def wrap(self, name: str, static: bool = False) -> None:
        f = getattr(Detector, name)

        @functools.wraps(f)
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                self.events.append((threading.current_thread().name, name,
                                    (t - self.t0) * 1e3,
                                    (time.perf_counter() - self.t0) * 1e3))

        setattr(Detector, name, staticmethod(timed) if static else timed)

    def start(self) -> None:
        self.events = []
        self.t0 = time.perf_counter()


def main(argv=None) -> int:
    args = parse_args(argv)

    def good(seed):
        return generate_sample(args.category, "good", seed, size=args.size,
                               design=args.design).frame

    warm = 3
    parts = [good(10_000 + i) for i in range(args.parts + warm)]
    taught = [good(20_000 + i) for i in range(args.references)]
    rec = Recorder()
    for name in STEPS:
        rec.wrap(name)
    for name in STATIC_STEPS:
        rec.wrap(name, static=True)
    det = Detector(DetectorConfig(variation=not args.no_variation))
    det.teach(taught)
    spans, walls = defaultdict(list), []
    for i, frame in enumerate(parts):
        rec.start()
        det.detect(frame)
        wall = (time.perf_counter() - rec.t0) * 1e3
        det.revise_held()
        if i < warm:
            continue
        walls.append(wall)
        seen = Counter()
        for thread, name, a, b in rec.events:
            where = "calling" if thread == threading.main_thread().name else "comparison"
            seen[where, name] += 1
            spans[where, name, seen[where, name]].append((a, b))
    print(f"{args.category} of design {args.design}, {args.references} references, "
          f"variation {not args.no_variation}: {len(walls)} parts, "
          f"median {np.median(walls):.1f} ms a part (p95 {np.percentile(walls, 95):.1f})")
    print("\n| thread | step | start [ms] | end [ms] | duration [ms] |")
    print("| --- | --- | --- | --- | --- |")
    rows = sorted(spans.items(), key=lambda kv: np.median([a for a, _ in kv[1]]))
    for (where, name, k), v in rows:
        a = np.median([s for s, _ in v])
        b = np.median([e for _, e in v])
        d = np.median([e - s for s, e in v])
        print(f"| {where} | {name} #{k} | {a:.1f} | {b:.1f} | {d:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
