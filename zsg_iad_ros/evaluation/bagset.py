"""The bags of an offline evaluation: finding them, reading them whole, and what became of each.

`find_bags` turns the command line's BAG_OR_DIR_OR_GLOB arguments into bag paths. A bag is a
rosbag2 directory (it holds `metadata.yaml`) or a bare `.mcap` / `.db3` file outside such a
directory. A folder that is not a bag stands for every bag below it; a glob for every match.

A bag is read whole before any of its parts is scored (`read_bag_parts`): a corrupt bag is then
skipped as a unit, with its reason, in the single-process run and on Ray alike, instead of
feeding half its parts to the detector's stream memory.
"""
from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from zsg_iad_ros.core.frame import Sample

BAG_FILE_SUFFIXES = (".mcap", ".db3")
GLOB_CHARS = "*?["

#: What became of a bag.
EVALUATED, SKIPPED, FAILED = "evaluated", "skipped", "failed"


def is_bag_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metadata.yaml"))


def _bags_below(folder: str) -> List[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if is_bag_dir(root):
            found.append(root)
            dirs[:] = []  # a bag's storage files are not bags of their own
            continue
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.endswith(BAG_FILE_SUFFIXES)]
    return found


def find_bags(specs: Sequence[str]) -> List[str]:
    """Bag paths named by bag paths, folders of bags and glob patterns, in the order given
    (each folder and glob sorted), without duplicates. Raises ValueError naming every argument
    that names no bag."""
    paths: List[str] = []
    problems = []
    for spec in specs:
        if any(c in spec for c in GLOB_CHARS) and not os.path.exists(spec):
            matches = sorted(glob.glob(spec))
            if not matches:
                problems.append(f"no path matches {spec!r}")
                continue
        else:
            matches = [spec]
        for m in matches:
            if not os.path.exists(m):
                problems.append(f"bag not found: {m}")
            elif os.path.isdir(m) and not is_bag_dir(m):
                below = _bags_below(m)
                if below:
                    paths += below
                else:
                    problems.append(f"no bag in folder {m} (a bag is a folder with "
                                    f"metadata.yaml or a {'/'.join(BAG_FILE_SUFFIXES)} file)")
            else:
                paths.append(m)
    if problems:
        raise ValueError("; ".join(problems))
    seen, unique = set(), []
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def bag_name(path: str) -> str:
    return os.path.basename(str(path).rstrip("/")) or str(path)


def recorded_parts(path: str) -> Optional[int]:
    """Parts a bag says it holds (ground-truth messages in its metadata.yaml, else the largest
    topic count); None when the metadata cannot be read. Used to count the parts of a bag that
    cannot be read itself."""
    import yaml

    meta = os.path.join(path, "metadata.yaml") if os.path.isdir(path) else None
    if meta is None or not os.path.isfile(meta):
        return None
    try:
        with open(meta) as f:
            info = yaml.safe_load(f)["rosbag2_bagfile_information"]
        counts = {t["topic_metadata"]["name"]: int(t["message_count"])
                  for t in info["topics_with_message_count"]}
    except Exception:  # noqa: BLE001 - unreadable metadata only means "count unknown"
        return None
    from zsg_iad_ros.data.bags import TOPIC_GT
    return counts.get(TOPIC_GT, max(counts.values(), default=0))


def describe_error(e: BaseException) -> str:
    """One line: exception type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def read_bag_parts(path: str) -> List[Sample]:
    """Every part of a bag, read whole (raises on any read or decode error)."""
    from zsg_iad_ros.data.bags import read_bag

    parts = list(read_bag(path))
    if not parts:
        raise ValueError("the bag holds no parts")
    return parts


@dataclass
class BagOutcome:
    """What became of one bag: evaluated, skipped (unreadable) or failed (its scoring failed,
    e.g. a worker died twice). `parts` is None when unknown (unreadable bag, no metadata)."""

    path: str
    status: str
    parts: Optional[int]
    reason: str = ""

    @property
    def name(self) -> str:
        return bag_name(self.path)

    def to_json(self) -> dict:
        return dict(asdict(self), name=self.name)


def inputs_record(outcomes: Sequence[BagOutcome], failed_parts: int,
                  execution: Dict[str, object]) -> dict:
    """The `inputs` entry of an evaluation record: bags and parts evaluated, skipped and failed,
    with the reason for each bag that was not evaluated."""
    by_status = {s: [o for o in outcomes if o.status == s] for s in (EVALUATED, SKIPPED, FAILED)}
    readable = [o for o in outcomes if o.status != SKIPPED]
    skipped_known = [o.parts for o in by_status[SKIPPED] if o.parts is not None]
    return {
        "bags": {"found": len(outcomes), **{s: len(v) for s, v in by_status.items()}},
        "parts": {"evaluated": sum(o.parts or 0 for o in readable) - failed_parts,
                  "skipped": sum(skipped_known),
                  "skipped_bags_of_unknown_size": len(by_status[SKIPPED]) - len(skipped_known),
                  "failed": failed_parts},
        "not_evaluated": [o.to_json() for o in outcomes if o.status != EVALUATED],
        "execution": dict(execution),
    }
