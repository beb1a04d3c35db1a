"""Offline evaluation of many bags on Ray: a local Ray for one machine, or an existing cluster.

    record = evaluate_bags_on_ray(paths, default_detector_factory(), workers=8,
                                  ray_address="auto")

1. Every bag is scanned by a Ray task (read whole; labels and streams kept, images dropped): an
   unreadable bag is skipped with its reason before anything is scored.
2. The driver plans the run exactly as the single-process run does (order, configurations,
   reference draws) and cuts it into shards along streams (`shards.py`).
3. Shards run as Ray tasks, at most `workers` at a time. A task whose worker dies is retried
   once (`max_retries`); after that, or on an error in the task, its parts are counted as
   failed and its bags reported with the reason, and the run goes on.
4. The results are put back into scoring order and tabulated by the same code as the
   single-process run, into the same record (metrics.json, summary.md, figures).

Ray is imported only here, and only when a run asks for more than one worker. The bags must be
readable at the same paths on every node (shared storage), and the package installed there.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections import deque
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Tuple

from zsg_iad_ros.evaluation.bagset import (EVALUATED, FAILED, SKIPPED, BagOutcome,
                                           describe_error, inputs_record)
from zsg_iad_ros.evaluation.offline import (CARRY, DetectorFactory, RunOutput, WorstExamples,
                                            add_config, check_stream_memory, default_run_name,
                                            draw_metrics, drop_maps, is_plotted, new_record,
                                            no_readable_bag, plan_evaluation)
from zsg_iad_ros.evaluation.progress import ProgressMeter
from zsg_iad_ros.evaluation.shards import (BagScan, Shard, ShardOutput, plan_shards, run_shard,
                                           scan_bag)

RAY_REQUIREMENT = "requirements/ray.txt"


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise RuntimeError(f"--workers > 1 runs on Ray, which is not installed ({e}); install "
                           f"the pinned version: pip install -r {RAY_REQUIREMENT}") from e
    return ray


@contextmanager
def ray_session(ray, workers: int, address: Optional[str]):
    """Yields a description of where the tasks run. Reuses a Ray already initialised in this
    process (and leaves it running); otherwise starts a local Ray with `workers` CPUs (address
    None) or connects to `address` ('auto', 'ray://host:port'), and shuts down afterwards."""
    if ray.is_initialized():
        yield "Ray session of the caller"
        return
    temp_dir = None
    try:
        if address is None:
            # Own temp dir: sessions of other users of /tmp/ray are left alone; no dashboard.
            temp_dir = tempfile.mkdtemp(prefix="zsg-ray-")
            ray.init(num_cpus=workers, include_dashboard=False, _temp_dir=temp_dir,
                     log_to_driver=False, logging_level=logging.WARNING)
            where = "local Ray"
        else:
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except Exception as e:  # noqa: BLE001 - reported with the address tried
                raise RuntimeError(f"cannot connect to Ray at {address!r}: "
                                   f"{describe_error(e)}") from e
            where = f"Ray cluster at {address}"
        yield where
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _task_error(ray, e: BaseException, max_retries: int) -> str:
    """One line saying why a task failed; a dead worker says it was retried."""
    if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None:
        return describe_error(e.cause)
    if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                      ray.exceptions.ObjectLostError)):
        return (f"worker died {max_retries + 1} time(s) ({max_retries} retry): "
                f"{describe_error(e)}")
    return describe_error(e)


def _scan_all(ray, paths: Sequence[str], workers: int, max_retries: int
              ) -> Tuple[List[BagScan], Dict[str, str]]:
    """Scans in path order, and the bags whose scan task itself failed (path -> reason)."""
    task = ray.remote(num_cpus=1, max_retries=max_retries)(scan_bag)
    pending = {}
    scans: Dict[str, BagScan] = {}
    failed: Dict[str, str] = {}
    queue = deque(paths)
    while queue or pending:
        while queue and len(pending) < 2 * workers:  # scans are short: keep workers fed
            path = queue.popleft()
            pending[task.remote(path)] = path
        done, _ = ray.wait(list(pending), num_returns=1)
        path = pending.pop(done[0])
        try:
            scans[path] = ray.get(done[0])
        except ray.exceptions.RayError as e:
            failed[path] = _task_error(ray, e, max_retries)
    return [scans[p] for p in paths if p in scans], failed


def _run_shards(ray, shards: Sequence[Shard], factory_ref, workers: int, max_retries: int,
                meter: ProgressMeter, on_output) -> List[Tuple[Shard, str]]:
    """Run shards, at most `workers` at a time; `on_output(shard, output)` for each success.
    Returns the failed shards with their reasons."""
    task = ray.remote(num_cpus=1, max_retries=max_retries)(run_shard)
    queue = deque(shards)
    pending: Dict[object, Shard] = {}
    failures = []
    done_count = 0
    while queue or pending:
        while queue and len(pending) < workers:
            shard = queue.popleft()
            pending[task.remote(shard, factory_ref)] = shard
        done, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(done[0])
        done_count += 1
        try:
            output = ray.get(done[0])
        except ray.exceptions.RayError as e:
            failures.append((shard, _task_error(ray, e, max_retries)))
            meter.update(len(shard.score), failed=len(shard.score),
                         stage=f"{done_count}/{len(shards)} shards")
            continue
        on_output(shard, output)
        meter.update(len(shard.score), stage=f"{done_count}/{len(shards)} shards")
    return failures


class _Assembler:
    """Collects shard outputs per configuration and draw; once a draw is complete, puts its
    results back into scoring order and computes its tables (then frees unplotted maps)."""

    def __init__(self, plan, shards: Sequence[Shard]):
        self.plan = plan
        self.rank = [{i: k for k, i in enumerate(plan.scored(d))} for d in range(plan.n_draws)]
        self.expected: Dict[tuple, int] = {}
        for s in shards:
            self.expected[(s.config, s.draw)] = self.expected.get((s.config, s.draw), 0) + 1
        self.outputs: Dict[tuple, List[ShardOutput]] = {k: [] for k in self.expected}
        self.finished: Dict[tuple, Tuple[list, dict, ShardOutput]] = {}

    def add(self, shard: Shard, output: Optional[ShardOutput]) -> None:
        """`output` None: the shard failed (its parts are missing from the tables)."""
        key = (shard.config, shard.draw)
        if output is not None:
            self.outputs[key].append(output)
        self.expected[key] -= 1
        if self.expected[key] == 0:
            self._finish(key)

    def _finish(self, key) -> None:
        outputs = self.outputs.pop(key)
        if not outputs:
            return
        rank = self.rank[key[1]]
        results = sorted((r for o in outputs for r in o.results), key=lambda r: rank[r.index])
        metrics = draw_metrics(results)
        if not is_plotted(*key):
            drop_maps(results)
        self.finished[key] = (results, metrics, outputs[0])

    def record_into(self, record: dict, n_examples: int) -> None:
        for cname, mods in self.plan.configs:
            draws = [self.finished.get((cname, d)) for d in range(self.plan.n_draws)]
            draws = [x for x in draws if x is not None]
            if not draws:
                continue  # every shard of this configuration failed: reported in inputs
            run = RunOutput(cname, mods, [results for results, _, _ in draws])
            run.model_id, run.device = draws[0][2].model_id, draws[0][2].device
            if cname == "all" and (cname, 0) in self.finished:
                examples = WorstExamples(n_examples)
                # Offered in scoring order, as the single-process run saw them (same ties).
                for r in self.finished[(cname, 0)][0]:
                    if r.rgb is not None:
                        examples.offer(r)
                run.worst_defective, run.worst_good = examples.defective, examples.good
            add_config(record, run, [metrics for _, metrics, _ in draws])


def evaluate_bags_on_ray(paths: Sequence[str], detector_factory: DetectorFactory, *,
                         workers: int = 2, ray_address: Optional[str] = None,
                         stream_memory: str = CARRY, references: int = 0, draws: int = 1,
                         seed: int = 0, order_seed: Optional[int] = None,
                         ablate_modalities: bool = False, pixel_stride: int = 1,
                         n_examples: int = 4, progress_every: int = 25,
                         name: Optional[str] = None, max_retries: int = 1) -> dict:
    """`offline.evaluate_bags` with the parts scored by Ray tasks; returns the same record
    (plus `inputs.execution` saying where it ran). `detector_factory` must pickle (the default
    factory does) and is called in the workers."""
    if workers < 1 or max_retries < 0 or pixel_stride < 1:
        raise ValueError("workers must be >= 1, max_retries >= 0 and pixel_stride >= 1")
    check_stream_memory(stream_memory)
    if not paths:
        raise ValueError("no bag given")
    paths = [str(p) for p in paths]
    ray = import_ray()
    with ray_session(ray, workers, ray_address) as where:
        scans, scan_failures = _scan_all(ray, paths, workers, max_retries)
        readable = [s for s in scans if s.readable]
        outcomes = {s.path: BagOutcome(s.path, SKIPPED, s.recorded, s.error)
                    for s in scans if not s.readable}
        outcomes.update({p: BagOutcome(p, FAILED, None, why) for p, why in scan_failures.items()})
        if not readable:
            raise no_readable_bag([outcomes[p] for p in paths])
        parts = [p for s in readable for p in s.parts]
        plan = plan_evaluation(parts, (p.present for p in parts), references=references,
                               draws=draws, seed=seed, order_seed=order_seed,
                               ablate_modalities=ablate_modalities)
        shards = plan_shards(readable, plan, stream_memory, pixel_stride, n_examples)
        # Per draw, longest shards first: fewer workers idle at the end of the run.
        shards.sort(key=lambda s: (plan.configs.index((s.config, s.modalities)), s.draw,
                                   -len(s.score)))
        name = name or default_run_name(paths)
        meter = ProgressMeter(plan.total_scored(), name, every=progress_every)
        assembler = _Assembler(plan, shards)
        failures = _run_shards(ray, shards, ray.put(detector_factory), workers, max_retries,
                               meter, assembler.add)
        for shard, _ in failures:
            assembler.add(shard, None)
        meter.close()
        ray_version = ray.__version__
    if not any(config == "all" for config, _ in assembler.finished):
        # Nothing to tabulate (the summary and figures are built on the all-modality run).
        raise RuntimeError("every shard of the all-modality run failed: " + "; ".join(
            f"{s.label}: {why}" for s, why in failures[:5]))
    record = new_record(name, len(parts), plan, references=references, seed=seed,
                        order_seed=order_seed, pixel_stride=pixel_stride)
    assembler.record_into(record, n_examples)
    record["protocol"]["stream_memory"] = stream_memory
    failed_parts, why_by_bag = _failed_parts(shards, failures)
    for s in readable:
        reasons = why_by_bag.get(s.path)
        outcomes[s.path] = (BagOutcome(s.path, FAILED, len(s.parts), "; ".join(reasons))
                            if reasons else BagOutcome(s.path, EVALUATED, len(s.parts)))
    record["inputs"] = inputs_record(
        [outcomes[p] for p in paths], failed_parts,
        {"workers": workers, "engine": f"{where} (Ray {ray_version})", "shards": len(shards),
         "failed_shards": len(failures), "max_retries": max_retries})
    return record


def _failed_parts(shards: Sequence[Shard], failures) -> Tuple[int, Dict[str, List[str]]]:
    """Unique parts missing from some table, and per bag the reasons of its failed shards."""
    lost = set()
    why: Dict[str, List[str]] = {}
    for shard, reason in failures:
        lost.update(shard.score)
        scored_bags = {shard.locations[i][0] for i in shard.score}
        for path in shard.bags():
            if path in scored_bags:
                text = f"{shard.label}: {reason}"
                if text not in why.setdefault(path, []):
                    why[path].append(text)
    return len(lost), why
