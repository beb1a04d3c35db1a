"""Zero-shot protocol on the procedural parts: train on auxiliary data, test on the unseen.

The detector may be trained (grounding module, report writer) only on the **auxiliary** split;
it is evaluated on the **test** split, whose part categories are disjoint from the auxiliary
ones and whose defect types were never planted in training (held out). Good parts of the test
categories are never seen in training either, so the detector meets each test category cold.

Auxiliary categories (training):
    brushed_metal, wood, moulded_plastic, ceramic_tile (surfaces), bottle, bracket, hex_nut
    (objects) -- thermal: brushed_metal, wood, moulded_plastic, hex_nut;
    X-ray: ceramic_tile, bottle, bracket.
Test categories (evaluation):
    cast_metal, woven_fabric, pcb (surfaces), gear, capsule (objects) -- thermal: woven_fabric,
    pcb; X-ray: cast_metal, gear, capsule.
Auxiliary defect types: scratch, hole, stain, dent, hot_spot, inclusion, extra_part.
Held-out defect types: crack, bump, contamination, cold_spot, void, missing_part, misalignment.

Each modality-exclusive family has a held-out member, so the test split checks that evidence
from every modality is used: contamination (RGB only), bump (geometry only), cold_spot
(thermal only), void (X-ray only); crack, missing_part and misalignment show in all three.

`split_specs(split, n_good, n_defective, seed)` lists, per category of the split, `n_good`
good parts and `n_defective` defective parts cycling through the split's defect types that
apply to that category (in the category's default sensor), so with `n_defective` >= the number
of applicable types every one appears. Sample seeds are derived from (split, seed, category,
index) and are distinct within a split, so the list is deterministic and has no duplicates.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator, List, Optional

from ..core.frame import Sample
from .synthetic import (CATEGORIES, DEFECT_TYPES, GOOD, applicable_defects, generate_sample,
                        has_design)

__all__ = ["AUX_CATEGORIES", "TEST_CATEGORIES", "AUX_DEFECTS", "HELDOUT_DEFECTS", "SPLITS",
           "SampleSpec", "split_specs", "iter_split", "split_categories", "split_defects"]

AUX_CATEGORIES = ("brushed_metal", "wood", "moulded_plastic", "ceramic_tile", "bottle",
                  "bracket", "hex_nut")
TEST_CATEGORIES = ("cast_metal", "woven_fabric", "pcb", "gear", "capsule")
AUX_DEFECTS = ("scratch", "hole", "stain", "dent", "hot_spot", "inclusion", "extra_part")
HELDOUT_DEFECTS = ("crack", "bump", "contamination", "cold_spot", "void", "missing_part",
                   "misalignment")
SPLITS = ("aux", "test")

assert not set(AUX_CATEGORIES) & set(TEST_CATEGORIES)
assert not set(AUX_DEFECTS) & set(HELDOUT_DEFECTS)
assert set(AUX_CATEGORIES) | set(TEST_CATEGORIES) == set(CATEGORIES)
assert set(AUX_DEFECTS) | set(HELDOUT_DEFECTS) == set(DEFECT_TYPES)


@dataclass(frozen=True)
class SampleSpec:
    """Everything `generate_sample` needs to render one part."""

    category: str
    defect_type: str
    seed: int
    sensor_type: Optional[str] = None
    design: Optional[int] = None

    def generate(self, size: int = 256) -> Sample:
        return generate_sample(self.category, self.defect_type, self.seed, size=size,
                               sensor_type=self.sensor_type, design=self.design)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_categories(split: str) -> tuple:
    _check_split(split)
    return AUX_CATEGORIES if split == "aux" else TEST_CATEGORIES


def split_defects(split: str, category: Optional[str] = None) -> tuple:
    """Defect types of a split, restricted to those applicable to `category` when given."""
    _check_split(split)
    names = AUX_DEFECTS if split == "aux" else HELDOUT_DEFECTS
    if category is None:
        return names
    ok = set(applicable_defects(category))
    return tuple(d for d in names if d in ok)


def _seed(split: str, seed: int, category: str, index: int) -> int:
    # 31-bit, process-stable; distinct indices give distinct seeds within (split, category)
    base = zlib.crc32(f"{split}/{seed}/{category}".encode()) & 0x3FFFFFFF
    return (base + index * 7919) % (2 ** 31)


def split_specs(split: str, n_good: int, n_defective: int, seed: int = 0,
                one_design: bool = False) -> List[SampleSpec]:
    """Per-category good and defective sample specs of `split` ('aux' or 'test').

    one_design: all parts of an object category (and all boards of a circuit-board category)
    share one design (see `generate_sample`), as in a cell that inspects one product; by
    default every part is a design of its own."""
    _check_split(split)
    for name, n in (("n_good", n_good), ("n_defective", n_defective), ("seed", seed)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    specs: List[SampleSpec] = []
    for cat in split_categories(split):
        defects = split_defects(split, cat)
        st = CATEGORIES[cat].sensor_type
        # the design number: a seed index no part of the split uses
        design = (_seed(split, seed, cat, n_good + n_defective)
                  if one_design and has_design(cat) else None)
        i = 0
        for _ in range(n_good):
            specs.append(SampleSpec(cat, GOOD, _seed(split, seed, cat, i), st, design))
            i += 1
        for j in range(n_defective if defects else 0):
            specs.append(SampleSpec(cat, defects[j % len(defects)], _seed(split, seed, cat, i),
                                    st, design))
            i += 1
    return specs


def iter_split(split: str, n_good: int, n_defective: int, seed: int = 0,
               size: int = 256, one_design: bool = False) -> Iterator[Sample]:
    """Render the samples of `split_specs(...)` lazily, in order."""
    for spec in split_specs(split, n_good, n_defective, seed, one_design):
        yield spec.generate(size)
