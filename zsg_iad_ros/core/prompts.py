"""Sentence banks: state prompts for language scores (WinCLIP-style) and anomaly-describing
sentences per defect type for grounding (which defect a region most resembles)."""
from __future__ import annotations

from typing import Dict, List, Tuple

NORMAL_STATES = ["flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                 "{} without defect", "{} without damage"]
ANOMALOUS_STATES = ["damaged {}", "broken {}", "{} with flaw", "{} with defect",
                    "{} with damage", "{} with a crack", "{} with a scratch"]
TEMPLATES = ["a photo of a {}.", "a close-up photo of the {}.", "an industrial photo of a {}.",
             "a cropped photo of the {}."]


def state_prompts(obj: str = "object") -> Tuple[List[str], List[str]]:
    """(normal, anomalous) prompt lists for an object name."""
    def expand(states):
        return [t.format(s.format(obj)) for s in states for t in TEMPLATES]
    return expand(NORMAL_STATES), expand(ANOMALOUS_STATES)


#: defect type -> describing sentences. Types cover appearance, thermal / X-ray (internal) and
#: geometric defects; the sentences say in which modality the evidence shows, which is what the
#: grounding module can verify from its slots.
DEFECT_SENTENCES: Dict[str, List[str]] = {
    "scratch": ["a thin linear scratch on the surface",
                "a long narrow mark scraped into the surface"],
    "crack": ["a crack running across the part", "a thin jagged fracture line in the material"],
    "stain": ["a stain or discoloured patch on the surface",
              "contamination leaving a dark spot on the surface"],
    "color": ["a region with the wrong colour", "a discoloured area that differs in hue"],
    "hole": ["a small hole in the surface", "a round pit where material is missing"],
    "dent": ["a dent pressed into the surface", "a shallow depression in the shape"],
    "bump": ["a raised bump on the surface", "a bulge protruding from the shape"],
    "deformation": ["the part is bent or deformed", "the shape is warped out of its form"],
    "missing": ["a piece of the part is missing", "a broken-off edge with missing material"],
    "hot_spot": ["a hot spot in the thermal image",
                 "a local area much warmer than its surroundings"],
    "cold_spot": ["a cold spot in the thermal image", "a region cooler than the rest of the part"],
    "void": ["an internal void visible in the x-ray image",
             "a hidden cavity inside the material, brighter in transmission"],
    "inclusion": ["a dense foreign inclusion inside the part",
                  "an internal particle that absorbs more x-rays"],
    "delamination": ["an internal delamination between layers",
                     "subsurface separation seen only by the thermal or x-ray sensor"],
}

#: generic fallback when no sentence matches well
UNKNOWN_TYPE = "anomaly"

#: internal defect types -> the second sensors that can see them; no camera or depth sensor
#: sees inside a part
INTERNAL_TYPES: Dict[str, Tuple[str, ...]] = {
    "void": ("xray",), "inclusion": ("xray",), "delamination": ("thermal", "xray"),
    "hot_spot": ("thermal",), "cold_spot": ("thermal",)}
#: types that may show in the second sensor alone besides the internal ones (a subsurface crack)
SENSOR_ONLY_TYPES = ("crack",)


def type_fits_evidence(defect_type: str, modalities, sensor_type: str) -> bool:
    """Whether a region seen by `modalities` (those whose map flags it) of a cell whose second
    sensor is `sensor_type` can be a `defect_type`: an internal defect needs that sensor to see
    it, and a region only that sensor sees (nothing on the surface or in the shape) is internal
    or a subsurface crack. Unknown types and regions with no modality fit anything."""
    mods = set(modalities)
    if not mods:
        return True
    if defect_type in INTERNAL_TYPES:
        return "sensor" in mods and sensor_type in INTERNAL_TYPES[defect_type]
    if mods == {"sensor"}:
        return defect_type in SENSOR_ONLY_TYPES
    return True


def sentence_bank(extra: Dict[str, List[str]] | None = None) -> Tuple[List[str], List[str]]:
    """Flattened (sentences, defect_types) from DEFECT_SENTENCES plus optional extra entries."""
    bank = dict(DEFECT_SENTENCES)
    for k, v in (extra or {}).items():
        bank[k] = list(bank.get(k, [])) + list(v)
    sentences, types = [], []
    for t, ss in bank.items():
        for s in ss:
            sentences.append(s)
            types.append(t)
    return sentences, types
