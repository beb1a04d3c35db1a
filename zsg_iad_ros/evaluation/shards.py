"""Offline evaluation cut into shards that can run anywhere (no Ray here: `fleet.py` ships them).

The detector keeps its memory, history and taught references per stream and nothing across
streams, so a run splits exactly along streams: a shard is one configuration, one draw and one
stream's parts in scoring order (with `stream_memory="per-bag"`, one stream of one bag). A shard
reads the bags it needs, builds a fresh detector, teaches it the draw's references of its
stream and scores its parts; the driver puts the shards' results back into scoring order, so the
metric tables equal those of the single-process run.

    scans = [scan_bag(p) for p in paths]             # labels and streams only, no images kept
    plan = plan_evaluation(parts, presents, ...)     # offline.py: order, configs, references
    shards = plan_shards(readable_scans, plan, stream_memory)
    outputs = [run_shard(s, detector_factory) for s in shards]   # or as Ray tasks
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from zsg_iad_ros.evaluation.bagset import describe_error, read_bag_parts, recorded_parts
from zsg_iad_ros.evaluation.offline import (CARRY, PER_BAG, DetectorFactory, EvaluationPlan,
                                            WorstExamples, check_stream_memory, is_plotted,
                                            run_detector)
from zsg_iad_ros.evaluation.results import SampleResult


@dataclass
class PartRecord:
    """What planning needs of one recorded part (its images stay in the bag)."""

    stream: str
    category: str
    label: int
    sample_id: str
    present: Dict[str, bool]


@dataclass
class BagScan:
    """A bag read whole once: its parts in recorded order, or why it could not be read."""

    path: str
    parts: List[PartRecord] = field(default_factory=list)
    error: str = ""
    recorded: Optional[int] = None  # parts per the bag's metadata, for unreadable bags

    @property
    def readable(self) -> bool:
        return not self.error


def scan_bag(path: str) -> BagScan:
    """Read a bag whole (so a corrupt one is found before any part is scored) and keep only the
    labels, streams and modalities of its parts."""
    try:
        samples = read_bag_parts(path)
    except Exception as e:  # noqa: BLE001 - any read failure skips the bag, with its reason
        return BagScan(str(path), error=describe_error(e), recorded=recorded_parts(path))
    return BagScan(str(path), [PartRecord(s.frame.stream, s.category, int(s.label),
                                          s.sample_id, dict(s.frame.present))
                               for s in samples])


@dataclass
class Shard:
    """One configuration x draw x stream (x bag with per-bag memory) of an evaluation.

    score:      global part indices to score, in scoring order.
    references: category -> global indices taught before scoring (this stream's only).
    locations:  global index -> (bag path, position in the bag) of every part used.
    sample_ids: global index -> sample_id seen by the scan (checked when the part is read).
    examples:   how many worst parts of each kind to keep images of (plotted run only).
    """

    config: str
    modalities: Tuple[str, ...]
    draw: int
    stream: str
    bag: Optional[str]
    score: List[int]
    references: Dict[str, List[int]]
    locations: Dict[int, Tuple[str, int]]
    sample_ids: Dict[int, str]
    examples: int = 0
    pixel_stride: int = 1

    @property
    def label(self) -> str:
        where = f"stream {self.stream!r}" + (f" of bag {self.bag}" if self.bag else "")
        draw = f" draw {self.draw + 1}" if self.draw else ""
        return f"{self.config}{draw}, {where}"

    def bags(self) -> List[str]:
        return list(dict.fromkeys(path for path, _ in self.locations.values()))


@dataclass
class ShardOutput:
    config: str
    draw: int
    results: List[SampleResult]
    worst_defective: List[SampleResult]
    worst_good: List[SampleResult]
    model_id: str = ""
    device: str = ""


def plan_shards(scans: Sequence[BagScan], plan: EvaluationPlan, stream_memory: str = CARRY,
                pixel_stride: int = 1, n_examples: int = 4) -> List[Shard]:
    """Shards of `plan` over the parts of the readable `scans` (global index = position in
    their concatenation, as `offline.read_readable_bags` numbers them)."""
    check_stream_memory(stream_memory)
    parts: List[PartRecord] = []
    locations: List[Tuple[str, int]] = []
    bag_of: List[int] = []
    for k, scan in enumerate(scans):
        if not scan.readable:
            raise ValueError(f"unreadable bag {scan.path} cannot be planned ({scan.error})")
        parts += scan.parts
        locations += [(scan.path, pos) for pos in range(len(scan.parts))]
        bag_of += [k] * len(scan.parts)
    categories_of_bag: Dict[int, set] = {}
    for p, k in zip(parts, bag_of):
        categories_of_bag.setdefault(k, set()).add(p.category)
    shards = []
    for cname, mods in plan.configs:
        for d in range(plan.n_draws):
            groups: Dict[tuple, List[int]] = {}
            for i in plan.scored(d):
                key = (parts[i].stream,) if stream_memory == CARRY else (
                    parts[i].stream, bag_of[i])
                groups.setdefault(key, []).append(i)
            for key, score in groups.items():
                stream = key[0]
                bag = key[1] if stream_memory == PER_BAG else None
                # As in the single-process run: every category's references are taught (per
                # bag: those of the bag's categories); a shard needs only its stream's.
                refs = {cat: idx for cat, idx in plan.references[d].items()
                        if idx and parts[idx[0]].stream == stream
                        and (bag is None or cat in categories_of_bag[bag])}
                used = score + [i for idx in refs.values() for i in idx]
                shards.append(Shard(
                    config=cname, modalities=tuple(mods), draw=d, stream=stream,
                    bag=None if bag is None else scans[bag].path, score=score,
                    references=refs, locations={i: locations[i] for i in used},
                    sample_ids={i: parts[i].sample_id for i in used},
                    examples=n_examples if is_plotted(cname, d) else 0,
                    pixel_stride=pixel_stride))
    return shards


def read_shard_parts(shard: Shard) -> dict:
    """global index -> Sample for every part the shard uses, each bag read once (up to the
    last part needed)."""
    wanted: Dict[str, Dict[int, int]] = {}
    for i, (path, pos) in shard.locations.items():
        wanted.setdefault(path, {})[pos] = i
    samples = {}
    for path, positions in wanted.items():
        last = max(positions)
        for pos, sample in enumerate(read_bag_parts(path)):
            if pos in positions:
                samples[positions[pos]] = sample
            if pos >= last:
                break
        for pos, i in positions.items():
            got = samples.get(i)
            if got is None or got.sample_id != shard.sample_ids[i]:
                raise ValueError(f"{path}: part {pos} is not the one scanned (expected "
                                 f"{shard.sample_ids[i]!r}); did the bag change during the run?")
    return samples


def run_shard(shard: Shard, detector_factory: DetectorFactory) -> ShardOutput:
    """Score one shard with a fresh detector (what a Ray task runs)."""
    samples = read_shard_parts(shard)
    detector = detector_factory(shard.modalities)
    for cat, idx in shard.references.items():
        detector.teach([samples[i].frame for i in idx])
    examples = WorstExamples(shard.examples)
    results = run_detector(((i, samples[i]) for i in shard.score), detector,
                           pixel_stride=shard.pixel_stride, examples=examples)
    return ShardOutput(shard.config, shard.draw, results, examples.defective, examples.good,
                       str(getattr(detector, "model_id", "")),
                       str(getattr(detector, "device", "")))
