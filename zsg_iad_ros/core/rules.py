"""Executable rules: small pure checks of a report against the detector's evidence.

Every rule is `rule(report, evidence) -> RuleResult`, with `score` in [0, 1] (1 = fully
satisfied) so the same functions serve as validators in the node and as verifiable rewards in
Executable-Rule GRPO (`zsg_iad_ros.training.grpo`).

Rules and their families (a family is one reward function in GRPO):
  structure  -> `structure`        the report is valid against the versioned JSON schema
  region     -> `region_overlap`   every reported region overlaps the predicted mask
                `mask_coverage`    every mask component >= `min_region_area_px` is reported
  coherence  -> `decision`         the decision agrees with score, threshold and confidence
                `coherence`        reasoning and conclusion text agree with the structured fields

Mask components use 4-connectivity (scipy's default), as `regions_from_mask` in
`core/report.py` and the detector.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from jsonschema import Draft202012Validator
from scipy import ndimage

from zsg_iad_ros.core.frame import GEOMETRY, MODALITIES, RGB, SENSOR, THERMAL, Detection

SCHEMA_VERSION = "1.0"
DECISIONS = ("normal", "anomalous", "unknown")
SEVERITIES = ("minor", "major", "critical")
#: Mask components: scipy's default 4-connectivity, as the detector labels its regions.
CONNECTIVITY = ndimage.generate_binary_structure(2, 1)
#: A mask component counts as reported when this share of its pixels lies in reported boxes.
COVERAGE_MIN_FRACTION = 0.5

_NUMBER = {"type": "number", "minimum": 0.0, "maximum": 1.0}
_MODALITY = {"enum": list(MODALITIES)}

#: JSON Schema (draft 2020-12) of a report, version `SCHEMA_VERSION`.
REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://zsg-iad-ros.example/schemas/anomaly-report-1.0.json",
    "title": "AnomalyReport",
    "type": "object",
    "required": ["schema_version", "model_id", "decision", "score", "threshold", "image_size",
                 "defects", "missing_modalities", "reasoning", "conclusion"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "model_id": {"type": "string"},
        "stamp_ns": {"type": "integer", "minimum": 0},
        "frame_id": {"type": "string"},
        "decision": {"enum": list(DECISIONS)},
        "score": _NUMBER,
        "threshold": _NUMBER,
        "image_size": {
            "type": "object", "required": ["width", "height"], "additionalProperties": False,
            "properties": {"width": {"type": "integer", "minimum": 1},
                           "height": {"type": "integer", "minimum": 1}},
        },
        "sensor_type": {"type": "string"},
        "modality_scores": {"type": "object", "additionalProperties": False,
                            "properties": {m: _NUMBER for m in MODALITIES}},
        "missing_modalities": {"type": "array", "items": _MODALITY, "uniqueItems": True},
        "defects": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "confidence", "box", "area_px", "centroid_px", "centroid_3d",
                             "location", "modalities", "severity"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "minLength": 1},
                    "confidence": _NUMBER,
                    "box": {"type": "array", "prefixItems": [
                        {"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 0},
                        {"type": "integer", "minimum": 1}, {"type": "integer", "minimum": 1}],
                        "minItems": 4, "maxItems": 4},
                    "area_px": {"type": "integer", "minimum": 1},
                    "centroid_px": {"type": "array", "items": {"type": "number", "minimum": 0},
                                    "minItems": 2, "maxItems": 2},
                    "centroid_3d": {"oneOf": [
                        {"type": "null"},
                        {"type": "array", "items": {"type": "number"}, "minItems": 3,
                         "maxItems": 3}]},
                    "location": {"type": "string"},
                    "modalities": {"type": "array", "items": _MODALITY, "uniqueItems": True},
                    "severity": {"enum": list(SEVERITIES)},
                },
            },
        },
        "reasoning": {"type": "string", "minLength": 1},
        "conclusion": {"type": "string", "minLength": 1},
        "reasoning_source": {"enum": ["rules", "narrator"]},
        "repaired": {"type": "boolean"},
        "valid": {"type": "boolean"},
    },
}
_VALIDATOR = Draft202012Validator(REPORT_SCHEMA)


def expected_decision(pred_score: float, threshold: float, confident: bool = True) -> str:
    """The decision the evidence implies: unknown without confidence (or a non-finite score),
    else anomalous when pred_score >= threshold."""
    if not confident or not math.isfinite(pred_score) or not math.isfinite(threshold):
        return "unknown"
    return "anomalous" if pred_score >= threshold else "normal"


@dataclass
class RuleResult:
    name: str
    passed: bool
    reason: str
    score: float  # [0, 1]

    def as_dict(self) -> dict:
        return {"name": self.name, "passed": bool(self.passed), "reason": self.reason,
                "score": float(self.score)}


@dataclass
class Evidence:
    """What the rules check a report against (built from a `Detection`).

    pred_mask: (H, W) bool on the RGB grid.
    labels, component_areas: label image (H, W) int32 and component pixel counts (4-connectivity),
        computed once here so several rules share it.
    """

    pred_mask: np.ndarray
    pred_score: float
    threshold: float
    modalities_present: Dict[str, bool]
    min_region_area_px: int = 16
    confident: bool = True
    sensor_type: str = THERMAL
    labels: np.ndarray = field(init=False, repr=False)
    component_areas: List[int] = field(init=False, repr=False)

    def __post_init__(self):
        mask = np.asarray(self.pred_mask)
        if mask.ndim != 2:
            raise ValueError(f"pred_mask must be (H, W), got shape {mask.shape}")
        self.pred_mask = mask.astype(bool, copy=False)
        labels, n = ndimage.label(self.pred_mask, structure=CONNECTIVITY)
        self.labels = labels
        self.component_areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].tolist()

    @classmethod
    def from_detection(cls, detection: Detection, min_region_area_px: int = 16,
                       sensor_type: str = THERMAL) -> "Evidence":
        return cls(pred_mask=detection.pred_mask, pred_score=float(detection.pred_score),
                   threshold=float(detection.threshold),
                   modalities_present=dict(detection.modalities_present),
                   min_region_area_px=int(min_region_area_px),
                   confident=bool(detection.confident), sensor_type=sensor_type)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(width, height)."""
        return int(self.pred_mask.shape[1]), int(self.pred_mask.shape[0])

    @property
    def expected_decision(self) -> str:
        return expected_decision(self.pred_score, self.threshold, self.confident)

    @property
    def missing_modalities(self) -> List[str]:
        return [m for m in MODALITIES if not self.modalities_present.get(m, False)]

    def large_components(self) -> List[int]:
        """Labels (1-based) of the components with at least `min_region_area_px` pixels."""
        return [i + 1 for i, a in enumerate(self.component_areas) if a >= self.min_region_area_px]


# --------------------------------------------------------------------------- locations
ROWS = ("upper", "centre", "lower")
COLS = ("left", "centre", "right")
LOCATIONS = tuple(("centre" if r == c == "centre" else f"{r} {c}") for r in ROWS for c in COLS)


def location_word(centroid_px: Sequence[float], image_size: Tuple[int, int]) -> str:
    """3x3 grid cell of a pixel centroid (u, v) in an image of (width, height)."""
    w, h = image_size
    col = COLS[min(2, max(0, int(3 * float(centroid_px[0]) / w)))]
    row = ROWS[min(2, max(0, int(3 * float(centroid_px[1]) / h)))]
    return "centre" if row == col == "centre" else f"{row} {col}"


# --------------------------------------------------------------------------- vocabularies
#: Defect type -> phrases that name it in text. Types outside this table are matched by their
#: own name (underscores as spaces).
DEFECT_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    # each phrase names exactly one type; a type's own name (underscores as spaces) is listed
    "crack": ("crack", "cracks", "cracked", "fracture"),
    "scratch": ("scratch", "scratches", "scratched", "abrasion"),
    "hole": ("hole", "holes", "puncture", "perforation"),
    "blowhole": ("blowhole", "blowholes", "blow hole", "blow holes"),
    "dent": ("dent", "dents", "dented", "indentation"),
    "bump": ("bump", "bumps", "bulge", "bulges", "protrusion", "swelling"),
    "stain": ("stain", "stains", "stained", "blotch"),
    "color": ("color", "colour", "discoloration", "discolouration", "color defect",
              "colour defect"),
    "contamination": ("contamination", "contaminated", "contaminant", "contaminants", "debris"),
    "foreign_body": ("foreign body", "foreign bodies", "foreign object", "foreign objects"),
    "broken": ("broken", "breakage", "chipped", "chip"),
    "fray": ("fray", "frayed", "fraying"),
    "void": ("void", "voids", "cavity", "gas pore"),
    "inclusion": ("inclusion", "inclusions"),
    "delamination": ("delamination", "delaminated"),
    "hot_spot": ("hot spot", "hot spots", "hotspot", "overheating", "overheated"),
    "cold_spot": ("cold spot", "cold spots", "coldspot"),
    "missing_part": ("missing part", "missing parts", "missing component"),
    "extra_part": ("extra part", "extra parts", "extra component", "stray part"),
    "misalignment": ("misalignment", "misaligned"),
    "corrosion": ("corrosion", "rust", "corroded"),
    "deformation": ("deformation", "deformed", "warp", "warped"),
    "porosity": ("porosity", "porous"),
}
#: Modality -> phrases naming it. "colour" is not an RGB word here: it names a defect type.
MODALITY_WORDS: Dict[str, Tuple[str, ...]] = {
    RGB: ("rgb", "visible", "camera image"),
    SENSOR: ("thermal", "thermography", "infrared", "ir", "x-ray", "xray", "x ray", "radiograph",
             "radiographic", "sensor"),
    GEOMETRY: ("depth", "3d", "point cloud", "geometry", "geometric", "scan"),
}
_NUMBER_WORDS = {"no": 0, "zero": 0, "a single": 1, "single": 1, "one": 1, "two": 2, "three": 3,
                 "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
                 "eleven": 11, "twelve": 12}
_COUNT_RE = re.compile(
    r"(?<![\w.])(\d+|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) +
    r")\s+(?:[a-z][a-z-]*\s+){0,2}?(defects?|regions?|anomalies|areas?)\b")
_MISSING_RE = re.compile(r"\b(missing|unavailable|absent|not available|no input)\b")
_LOC_SYNONYMS = ((r"\btop\b", "upper"), (r"\bbottom\b", "lower"),
                 (r"\bcent(?:er|ral)\b", "centre"),
                 (r"\bmiddle\b", "centre"), (r"(?<=[a-z])-(?=(?:left|right|centre)\b)", " "))
_LOC_RE = re.compile(r"\b(?:(upper|lower|centre) (left|right|centre)|(left|right) (?:centre))\b")
_DECISION_PATTERNS = {
    # order matters: normal and unknown phrases are removed before anomalous words are searched
    "normal": (r"\bno (?:[a-z]+ ){0,2}?(?:defects?|anomal(?:y|ies)|flaws?)\b",
               r"\bnot (?:anomalous|defective)\b", r"\b(?:defect|anomaly)[- ]free\b",
               r"\bnormal\b", r"\bgood\b", r"\bpass(?:es|ed)?\b", r"\baccept(?:s|ed)?\b",
               r"\bok\b"),
    "unknown": (r"\bunknown\b", r"\bundetermined\b", r"\binconclusive\b", r"\bundecided\b",
                r"\bcannot (?:be )?decided?\b", r"\binsufficient evidence\b"),
    "anomalous": (r"\banomalous\b", r"\bdefective\b", r"\breject(?:s|ed)?\b",
                  r"\banomal(?:y|ies)\b", r"\bdefects?\b", r"\bflaws?\b"),
}
# phrases where a decision word names a quantity, not a verdict
_NEUTRAL_RE = re.compile(r"\banomaly (?:score|map)s?\b")


def _normalise(text: str) -> str:
    text = " " + text.lower().replace("_", " ") + " "
    return re.sub(r"\s+", " ", text)


@lru_cache(maxsize=256)
def _phrase_matcher(items: Tuple[Tuple[str, Tuple[str, ...]], ...]):
    """One compiled alternation of all phrases, longest first (so the longest phrase wins at a
    position), and the phrase -> key map."""
    keys = {p: k for k, ps in items for p in ps}
    alternation = "|".join(re.escape(p) for p in sorted(keys, key=len, reverse=True))
    return re.compile(r"(?<![\w-])(?:" + alternation + r")(?![\w-])"), keys


def _find_phrases(text: str, table: Dict[str, Iterable[str]]) -> Tuple[set, str]:
    """Keys whose phrases occur in `text` (longest match at each position; matches are blanked
    so a shorter phrase inside them does not count again); returns (keys, remaining text)."""
    pattern, keys = _phrase_matcher(tuple((k, tuple(ps)) for k, ps in table.items()))
    found = {keys[m.group(0)] for m in pattern.finditer(text)}
    return found, pattern.sub(" ", text)


def defect_vocabulary(extra_types: Iterable[str] = ()) -> Dict[str, Tuple[str, ...]]:
    vocab = dict(DEFECT_SYNONYMS)
    for t in extra_types:
        t = canonical_type(t)
        if t not in vocab:
            vocab[t] = (t.replace("_", " "),)
    return vocab


def canonical_type(defect_type: str) -> str:
    """Map a type name or synonym to the vocabulary key ("Foreign body" -> "foreign_body")."""
    t = str(defect_type).strip().lower().replace("-", "_").replace(" ", "_")
    if t in DEFECT_SYNONYMS:
        return t
    spaced = t.replace("_", " ")
    for key, phrases in DEFECT_SYNONYMS.items():
        if spaced in phrases:
            return key
    return t


def parse_text(text: str, defect_types: Iterable[str] = ()) -> dict:
    """Facts stated by a report text, read with fixed vocabularies.

    Returns {"types": set, "locations": set, "counts": list[int], "modalities": set (outside
    missing-input sentences), "missing": set, "decisions": set}.
    """
    norm = _normalise(text)
    types, rest = _find_phrases(norm, defect_vocabulary(defect_types))
    loc_text = norm
    for pat, rep in _LOC_SYNONYMS:
        loc_text = re.sub(pat, rep, loc_text)
    locations = set()
    for m in _LOC_RE.finditer(loc_text):
        if m.group(3):
            locations.add(f"centre {m.group(3)}")
        else:
            locations.add("centre" if m.group(1) == m.group(2) == "centre" else
                          f"{m.group(1)} {m.group(2)}")
    loc_text = _LOC_RE.sub(" ", loc_text)
    if re.search(r"\bcentre\b", loc_text):
        locations.add("centre")
    counts = [int(n) if n.isdigit() else _NUMBER_WORDS[n] for n, _ in _COUNT_RE.findall(norm)]
    modalities, missing = set(), set()
    for sentence in re.split(r"(?<=[.;!?])\s+", rest):  # defect names blanked ("missing part")
        mods, _ = _find_phrases(sentence, MODALITY_WORDS)
        (missing if _MISSING_RE.search(sentence) else modalities).update(mods)
    decision_text = _NEUTRAL_RE.sub(" ", rest)
    decisions = set()
    for decision, patterns in _DECISION_PATTERNS.items():
        for pat in patterns:
            if re.search(pat, decision_text):
                decisions.add(decision)
                decision_text = re.sub(pat, " ", decision_text)
    return {"types": types, "locations": locations, "counts": counts, "modalities": modalities,
            "missing": missing, "decisions": decisions}


def strongest_modality(report) -> Optional[str]:
    """Modality with the highest finite score in `modality_scores` (ties: `MODALITIES` order),
    or None."""
    scores = report.get("modality_scores") if isinstance(report, dict) else None
    if not isinstance(scores, dict):
        return None
    best = None
    for m in MODALITIES:
        s = scores.get(m)
        if isinstance(s, (int, float)) and math.isfinite(s) and (best is None or s > scores[best]):
            best = m
    return best


# --------------------------------------------------------------------------- rules
def _all_finite(value) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def rule_structure(report, evidence: Optional[Evidence] = None) -> RuleResult:
    """Valid against `REPORT_SCHEMA`, all numbers finite. Score: share of required top-level
    fields that are present and valid (0 when the report is not an object)."""
    name = "structure"
    if not isinstance(report, dict):
        return RuleResult(name, False, f"report is a {type(report).__name__}, not an object", 0.0)
    bad, messages = set(), []
    for err in _VALIDATOR.iter_errors(report):
        path = list(err.absolute_path)
        if path:
            bad.add(str(path[0]))
        elif err.validator == "required":
            bad.update(p for p in REPORT_SCHEMA["required"] if p not in report)
        else:
            bad.add("<root>")
        messages.append(f"{'/'.join(map(str, path)) or '<root>'}: {err.message}")
    for key, value in report.items():
        if not _all_finite(value):
            bad.add(key)
            messages.append(f"{key}: contains a non-finite number")
    if not messages:
        return RuleResult(name, True, "valid against schema " + SCHEMA_VERSION, 1.0)
    required = REPORT_SCHEMA["required"]
    score = sum(1 for k in required if k not in bad) / len(required)
    if "<root>" in bad or any(k not in REPORT_SCHEMA["properties"] for k in bad):
        score = max(0.0, score - 0.1)
    return RuleResult(name, False, "; ".join(messages[:4]), round(score, 4))


def _defects(report) -> list:
    defects = report.get("defects") if isinstance(report, dict) else None
    return [d for d in defects if isinstance(d, dict)] if isinstance(defects, list) else []


def _box(defect) -> Optional[Tuple[int, int, int, int]]:
    box = defect.get("box")
    try:
        x, y, w, h = (int(round(float(v))) for v in box)
    except (TypeError, ValueError, OverflowError):
        return None
    return (x, y, w, h) if w > 0 and h > 0 else None


def rule_region_overlap(report, evidence: Evidence) -> RuleResult:
    """Every reported region lies in the image, overlaps the predicted mask, and its location
    word matches its centroid. Score: share of regions that do."""
    name = "region_overlap"
    if not isinstance(report, dict):
        return RuleResult(name, False, "report is not an object", 0.0)
    defects = _defects(report)
    if not defects:
        return RuleResult(name, True, "no regions reported", 1.0)
    w_img, h_img = evidence.image_size
    problems = []
    for i, d in enumerate(defects):
        box = _box(d)
        if box is None:
            problems.append(f"region {i}: no valid box")
            continue
        x, y, w, h = box
        if x < 0 or y < 0 or x + w > w_img or y + h > h_img:
            problems.append(f"region {i}: box {list(box)} outside the {w_img}x{h_img} image")
            continue
        if not evidence.pred_mask[y:y + h, x:x + w].any():
            problems.append(f"region {i}: box {list(box)} does not overlap the predicted mask")
            continue
        c = d.get("centroid_px")
        if "location" in d and isinstance(c, (list, tuple)) and len(c) == 2:
            try:
                want = location_word(c, evidence.image_size)
            except (TypeError, ValueError):
                want = None
            if want != d["location"]:
                problems.append(f"region {i}: location '{d['location']}' but centroid is in the "
                                f"{want}")
    score = 1.0 - len(problems) / len(defects)
    if problems:
        return RuleResult(name, False, "; ".join(problems[:4]), score)
    return RuleResult(name, True, f"all {len(defects)} regions overlap the mask", 1.0)


def rule_mask_coverage(report, evidence: Evidence) -> RuleResult:
    """When the report or the evidence says anomalous, every mask component of at least
    `min_region_area_px` pixels has at least `COVERAGE_MIN_FRACTION` of its pixels inside the
    reported boxes. Score: share of components covered. Normal and unknown reports list no
    regions (checked by `rule_decision`)."""
    name = "mask_coverage"
    if not isinstance(report, dict):
        return RuleResult(name, False, "report is not an object", 0.0)
    decision = report.get("decision")
    comps = evidence.large_components()
    if "anomalous" not in (decision, evidence.expected_decision) or not comps:
        return RuleResult(name, True, f"{len(comps)} components to cover for a "
                          f"'{decision}' report", 1.0)
    covered = np.zeros_like(evidence.pred_mask)
    for d in _defects(report):
        box = _box(d)
        if box is not None:
            x, y, w, h = box
            covered[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = True
    inside = np.bincount(evidence.labels[covered],
                         minlength=len(evidence.component_areas) + 1)[comps]
    areas = np.asarray([evidence.component_areas[c - 1] for c in comps], dtype=float)
    frac = np.asarray(inside, dtype=float) / areas
    missed = [int(a) for a, f in zip(areas, frac) if f < COVERAGE_MIN_FRACTION]
    score = 1.0 - len(missed) / len(comps)
    if missed:
        return RuleResult(name, False, f"{len(missed)} of {len(comps)} mask components not "
                          f"reported (areas {missed[:5]} px)", score)
    return RuleResult(name, True, f"all {len(comps)} mask components reported", 1.0)


def rule_decision(report, evidence: Evidence) -> RuleResult:
    """The decision equals the one implied by score, threshold and detector confidence; the
    reported score and threshold are the detector's; normal and unknown reports list no regions."""
    name = "decision"
    if not isinstance(report, dict):
        return RuleResult(name, False, "report is not an object", 0.0)
    want = evidence.expected_decision
    got = report.get("decision")
    problems = []
    if got != want:
        problems.append(f"decision '{got}' but score {evidence.pred_score:.3f} vs threshold "
                        f"{evidence.threshold:.3f} (confident={evidence.confident}) means "
                        f"'{want}'")
    for key, value in (("score", evidence.pred_score), ("threshold", evidence.threshold)):
        v = report.get(key)
        if not isinstance(v, (int, float)) or not math.isclose(float(v), value, abs_tol=1e-4):
            problems.append(f"{key} {v!r} differs from the detector's {value:.4f}")
    if got in ("normal", "unknown") and _defects(report):
        problems.append(f"a '{got}' report lists {len(_defects(report))} defect regions")
    if problems:
        return RuleResult(name, False, "; ".join(problems), 0.0)
    return RuleResult(name, True, f"decision '{got}' agrees with the score", 1.0)


def rule_coherence(report, evidence: Optional[Evidence] = None) -> RuleResult:
    """Reasoning and conclusion state the same defect types, location words, count, supporting
    and missing modalities and decision as the structured fields. Score: share of the six
    checks that pass."""
    name = "coherence"
    if not isinstance(report, dict):
        return RuleResult(name, False, "report is not an object", 0.0)
    reasoning = report.get("reasoning") if isinstance(report.get("reasoning"), str) else ""
    conclusion = report.get("conclusion") if isinstance(report.get("conclusion"), str) else ""
    defects = _defects(report)
    types = {canonical_type(d.get("type", "")) for d in defects}
    size = report.get("image_size") or {}
    if evidence is not None:
        image_size = evidence.image_size
    else:
        image_size = (size.get("width", 1), size.get("height", 1))
    locations = set()
    for d in defects:
        c = d.get("centroid_px")
        try:
            locations.add(location_word(c, image_size))
        except (TypeError, ValueError, IndexError, ZeroDivisionError):
            pass
    modalities = {m for d in defects for m in (d.get("modalities") or []) if m in MODALITIES}
    if report.get("decision") == "anomalous" and not defects:
        top = strongest_modality(report)  # without regions the text names the strongest input
        modalities = {top} if top else set()
    missing = {m for m in (report.get("missing_modalities") or []) if m in MODALITIES}
    decision = report.get("decision")
    said = parse_text(reasoning + " " + conclusion, types)
    said_conclusion = parse_text(conclusion, types)
    problems = []
    if said["types"] != types:
        problems.append(f"text names types {sorted(said['types'])}, report has {sorted(types)}")
    if said["locations"] != locations:
        problems.append(f"text says locations {sorted(said['locations'])}, centroids are in "
                        f"{sorted(locations)}")
    if any(n != len(defects) for n in said["counts"]) or (len(defects) > 1 and not said["counts"]):
        problems.append(f"text counts {said['counts']}, report has {len(defects)} regions")
    if said["modalities"] != modalities or said["missing"] != missing:
        problems.append(f"text names modalities {sorted(said['modalities'])} (missing "
                        f"{sorted(said['missing'])}), report has {sorted(modalities)} (missing "
                        f"{sorted(missing)})")
    if said["decisions"] != {decision}:
        problems.append(f"text states decisions {sorted(said['decisions'])}, report says "
                        f"'{decision}'")
    if said_conclusion["decisions"] != {decision}:
        problems.append(f"conclusion states {sorted(said_conclusion['decisions'])}, report says "
                        f"'{decision}'")
    checks = 6
    failed = len(problems)
    if failed:
        return RuleResult(name, False, "; ".join(problems), 1.0 - failed / checks)
    return RuleResult(name, True, "text agrees with the structured fields", 1.0)


Rule = Callable[[dict, Evidence], RuleResult]
RULES: Dict[str, Rule] = {
    "structure": rule_structure,
    "region_overlap": rule_region_overlap,
    "mask_coverage": rule_mask_coverage,
    "decision": rule_decision,
    "coherence": rule_coherence,
}
RULE_FAMILIES: Dict[str, Tuple[str, ...]] = {
    "structure": ("structure",),
    "region": ("region_overlap", "mask_coverage"),
    "coherence": ("decision", "coherence"),
}


def run_rules(report, evidence: Evidence, names: Optional[Iterable[str]] = None
              ) -> List[RuleResult]:
    """Run the named rules (all by default) in `RULES` order."""
    names = list(RULES) if names is None else list(names)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise KeyError(f"unknown rules {unknown}; known: {list(RULES)}")
    return [RULES[n](report, evidence) for n in names]


def family_score(report, evidence: Evidence, family: str) -> float:
    """Mean rule score of one family (the GRPO reward of that family)."""
    if family not in RULE_FAMILIES:
        raise KeyError(f"unknown rule family '{family}'; known: {list(RULE_FAMILIES)}")
    results = run_rules(report, evidence, RULE_FAMILIES[family])
    return float(np.mean([r.score for r in results]))
