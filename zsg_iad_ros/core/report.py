"""Structured inspection report: deterministic builder, rule check and repair.

`build_report(detection, frame)` turns the detector's outputs into a JSON-ready dict valid
against `REPORT_SCHEMA` (version `SCHEMA_VERSION`, defined with the rules in `core/rules.py`)
with a generated reasoning text. `finalize_report` runs the executable rules, rebuilds failing
parts from the evidence (pred_mask, pred_score, threshold) and reruns them; the report's
`valid` field is True only when every rule passes.
"""
from __future__ import annotations

import json
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from zsg_iad_ros.core.frame import (GEOMETRY, MODALITIES, RGB, SENSOR, THERMAL, XRAY,
                                    CameraIntrinsics, DefectRegion, Detection, Frame)
from zsg_iad_ros.core.rules import (CONNECTIVITY, DECISIONS, LOCATIONS, REPORT_SCHEMA,
                                    SCHEMA_VERSION, Evidence, canonical_type, expected_decision,
                                    location_word, run_rules, strongest_modality)

__all__ = ["SCHEMA_VERSION", "REPORT_SCHEMA", "DECISIONS", "LOCATIONS", "build_report",
           "finalize_report", "regions_from_mask", "reasoning_text", "severity_of",
           "report_to_json", "modality_name"]

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve")


def modality_name(modality: str, sensor_type: str = THERMAL) -> str:
    """Word used in report text for a modality key."""
    if modality == SENSOR:
        return "X-ray" if sensor_type == XRAY else "thermal"
    return {RGB: "RGB", GEOMETRY: "depth"}.get(modality, modality)


def severity_of(area_px: int, confidence: float, image_area_px: int) -> str:
    """minor | major | critical from the region's share of the image and its confidence."""
    share = area_px / max(1, image_area_px)
    if share >= 0.05 or confidence >= 0.9:
        return "critical"
    if share >= 0.01 or confidence >= 0.7:
        return "major"
    return "minor"


def _count_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def _join(words: Sequence[str]) -> str:
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _fnum(x, lo=0.0, hi=1.0) -> float:
    """Python float clipped to [lo, hi]; NaN stays NaN (the structure rule rejects it)."""
    x = float(x)
    return x if math.isnan(x) else min(hi, max(lo, x))


def _display_type(defect_type: str) -> str:
    return canonical_type(defect_type).replace("_", " ")


def reasoning_text(report: dict) -> Tuple[str, str]:
    """(reasoning, conclusion) generated from a report's structured fields.

    Names the defect types, their location words, the count, the supporting modalities, the
    missing modalities and the decision, in the words the coherence rule reads.
    """
    decision = report["decision"]
    defects = report["defects"]
    sensor_type = report.get("sensor_type", THERMAL)
    score, threshold = report["score"], report["threshold"]
    size = (report["image_size"]["width"], report["image_size"]["height"])
    sentences = []
    if decision == "anomalous":
        if defects:
            n = len(defects)
            parts = []
            for d in defects:
                loc = location_word(d["centroid_px"], size)
                mods = [modality_name(m, sensor_type) for m in d["modalities"]]
                support = f", supported by {_join(mods)}" if mods else ""
                name = _display_type(d["type"])
                article = "an" if name[:1] in "aeiou" else "a"
                parts.append(f"{article} {name} in the {loc} ({d['area_px']} px, "
                             f"{d['severity']}{support})")
            sentences.append(f"Found {_count_word(n)} defect region{'s' if n > 1 else ''}: "
                             + "; ".join(parts) + ".")
            sentences.append(f"The score {score:.2f} is at or above the threshold "
                             f"{threshold:.2f}, so the part is anomalous.")
            types = sorted({_display_type(d["type"]) for d in defects})
            conclusion = (f"Anomalous: {_count_word(n)} defect region{'s' if n > 1 else ''} "
                          f"({_join(types)}); reject the part.")
        else:
            sentences.append(f"The score {score:.2f} is at or above the threshold "
                             f"{threshold:.2f}, so the part is anomalous, but no region was "
                             f"localised in the image.")
            top = strongest_modality(report)
            if top is not None:
                sentences.append(f"The strongest evidence comes from the "
                                 f"{modality_name(top, sensor_type)} input (score "
                                 f"{report['modality_scores'][top]:.2f}).")
            conclusion = "Anomalous without a localised region; reject the part."
    elif decision == "normal":
        sentences.append(f"No defect region was found: the score {score:.2f} is below the "
                         f"threshold {threshold:.2f}, so the part is normal.")
        conclusion = "Normal: no defects; accept the part."
    else:
        sentences.append(f"The detector lacked the evidence to decide (no usable input or no "
                         f"reference yet); the score {score:.2f} against the threshold "
                         f"{threshold:.2f} is inconclusive.")
        conclusion = "Unknown: inspect the part by hand."
    if report["missing_modalities"]:
        names = [modality_name(m, sensor_type) for m in report["missing_modalities"]]
        sentences.append(f"Missing input: {_join(names)}.")
    return " ".join(sentences), conclusion


def _defect_from_region(region: DefectRegion, image_size: Tuple[int, int]) -> dict:
    x, y, w, h = (int(round(float(v))) for v in region.bbox_xywh)
    u, v = (float(c) for c in region.centroid_px)
    c3 = region.centroid_3d
    if c3 is not None:
        c3 = [float(c) for c in c3]
        if not all(math.isfinite(c) for c in c3):
            c3 = None
    return {
        "type": canonical_type(region.defect_type or "anomaly"),
        "confidence": _fnum(region.confidence),
        "box": [x, y, w, h],
        "area_px": int(region.area_px),
        "centroid_px": [round(u, 2), round(v, 2)],
        "centroid_3d": c3,
        "location": location_word((u, v), image_size),
        "modalities": [m for m in MODALITIES if m in set(region.modalities)],
        "severity": region.severity,
    }


def build_report(detection: Detection, frame: Optional[Frame] = None) -> dict:
    """Report dict (JSON-ready, schema `SCHEMA_VERSION`) from a detection, deterministic.

    Defects come from `detection.regions` as the detector found them; a normal or unknown
    decision lists none. `frame` (optional) adds the stamp, frame id and sensor type.
    """
    mask_shape = np.shape(detection.pred_mask) if detection.pred_mask is not None else ()
    if len(mask_shape) != 2 or min(mask_shape) < 1:
        raise ValueError(f"detection.pred_mask must be (H, W), got shape {mask_shape}")
    h, w = mask_shape
    decision = expected_decision(float(detection.pred_score), float(detection.threshold),
                                 bool(detection.confident))
    sensor_type = frame.sensor_type if frame is not None else THERMAL
    report = {
        "schema_version": SCHEMA_VERSION,
        "model_id": str(detection.model_id),
        "decision": decision,
        "score": _fnum(detection.pred_score),
        "threshold": _fnum(detection.threshold),
        "image_size": {"width": int(w), "height": int(h)},
        "sensor_type": sensor_type,
        # a modality without a finite score (absent or failed) is left out
        "modality_scores": {m: _fnum(s) for m, s in detection.modality_scores.items()
                            if m in MODALITIES and s is not None and math.isfinite(float(s))},
        "missing_modalities": list(detection.missing_modalities),
        "defects": ([_defect_from_region(r, (w, h)) for r in detection.regions]
                    if decision == "anomalous" else []),
        "reasoning_source": "rules",
    }
    if frame is not None:
        report["stamp_ns"] = int(frame.stamp_ns)
        report["frame_id"] = str(frame.frame_id)
    report["reasoning"], report["conclusion"] = reasoning_text(report)
    return report


def _centroid_3d(component: np.ndarray, frame: Optional[Frame]) -> Optional[List[float]]:
    """Mean 3D point of a pixel component: organized clouds index it directly, unorganized
    clouds are projected with the pinhole intrinsics (a few lines of numpy, kept here so the
    report does not depend on the geometry module)."""
    if frame is None or frame.points is None:
        return None
    pts = np.asarray(frame.points, dtype=np.float64)
    if pts.ndim == 3 and pts.shape[:2] == component.shape:
        sel = pts[component]
    elif pts.ndim == 2 and pts.shape[1] == 3 and frame.intrinsics is not None:
        k: CameraIntrinsics = frame.intrinsics
        z = pts[:, 2]
        ok = np.isfinite(pts).all(axis=1) & (z > 0)
        p = pts[ok]
        u = np.round(k.fx * p[:, 0] / p[:, 2] + k.cx).astype(np.int64)
        v = np.round(k.fy * p[:, 1] / p[:, 2] + k.cy).astype(np.int64)
        h, w = component.shape
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        p, u, v = p[inside], u[inside], v[inside]
        sel = p[component[v, u]]
    else:
        return None
    sel = sel[np.isfinite(sel).all(axis=1)]
    if len(sel) == 0:
        return None
    return [round(float(c), 5) for c in sel.mean(axis=0)]


def regions_from_mask(pred_mask: np.ndarray, anomaly_map: Optional[np.ndarray] = None, *,
                      min_region_area_px: int = 16, defect_type: str = "anomaly",
                      modality_maps: Optional[Dict[str, np.ndarray]] = None,
                      prior_regions: Iterable[DefectRegion] = (),
                      frame: Optional[Frame] = None) -> List[DefectRegion]:
    """One `DefectRegion` per 4-connected component of `pred_mask` with at least
    `min_region_area_px` pixels, ordered by area (largest first).

    pred_mask: (H, W) bool. anomaly_map: (H, W) float in [0, 1]; confidence = its mean over the
    component (1.0 without a map). Type and modalities come from the prior region whose box
    contains the component's centroid when there is one; otherwise the type is `defect_type`
    and the supporting modalities are those whose map, averaged over the component, reaches
    half the strongest modality's average and exceeds its own average outside the mask.
    """
    mask = np.asarray(pred_mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"pred_mask must be (H, W), got {mask.shape}")
    h, w = mask.shape
    labels, n = ndimage.label(mask, structure=CONNECTIVITY)
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    areas = ndimage.sum_labels(mask, labels, idx).astype(int)
    centroids = ndimage.center_of_mass(mask, labels, idx)
    slices = ndimage.find_objects(labels)
    conf = (ndimage.mean(np.asarray(anomaly_map, dtype=np.float64), labels, idx)
            if anomaly_map is not None else np.ones(n))
    maps = {m: np.asarray(a, dtype=np.float64) for m, a in (modality_maps or {}).items()
            if a is not None and np.asarray(a).shape == mask.shape}
    inside = {m: ndimage.mean(a, labels, idx) for m, a in maps.items()}
    outside = {m: float(a[~mask].mean()) if (~mask).any() else 0.0 for m, a in maps.items()}
    priors = list(prior_regions)
    regions = []
    for i in np.argsort(-areas, kind="stable"):
        if areas[i] < min_region_area_px:
            continue
        sl = slices[i]
        v, u = centroids[i]
        prior = next((r for r in priors if r.bbox_xywh[0] <= u < r.bbox_xywh[0] + r.bbox_xywh[2]
                      and r.bbox_xywh[1] <= v < r.bbox_xywh[1] + r.bbox_xywh[3]), None)
        if prior is not None:
            rtype, mods = prior.defect_type, list(prior.modalities)
        else:
            rtype = defect_type
            strongest = max((inside[m][i] for m in maps), default=0.0)
            mods = [m for m in MODALITIES if m in maps and inside[m][i] > outside[m]
                    and inside[m][i] >= 0.5 * strongest and strongest > 0]
        c = _fnum(conf[i]) if math.isfinite(conf[i]) else 0.0
        c3 = _centroid_3d(labels == (i + 1), frame) if frame is not None else None
        regions.append(DefectRegion(
            defect_type=rtype, confidence=c,
            bbox_xywh=(sl[1].start, sl[0].start, sl[1].stop - sl[1].start,
                       sl[0].stop - sl[0].start),
            area_px=int(areas[i]), centroid_px=(float(u), float(v)),
            centroid_3d=tuple(c3) if c3 is not None else None,
            modalities=mods, severity=severity_of(int(areas[i]), c, h * w)))
    return regions


def _repair(detection: Detection, frame: Optional[Frame], min_region_area_px: int) -> dict:
    """Rebuild regions from the predicted mask and everything else from the evidence."""
    top_type = max(detection.hypotheses, key=lambda hyp: hyp.similarity).defect_type \
        if detection.hypotheses else "anomaly"
    regions = regions_from_mask(detection.pred_mask, detection.anomaly_map,
                                min_region_area_px=min_region_area_px, defect_type=top_type,
                                modality_maps=detection.modality_maps,
                                prior_regions=detection.regions, frame=frame)
    rebuilt = Detection(
        anomaly_map=detection.anomaly_map, pred_mask=detection.pred_mask,
        pred_score=detection.pred_score, threshold=detection.threshold,
        modality_scores=detection.modality_scores, modalities_present=detection.modalities_present,
        regions=regions, hypotheses=detection.hypotheses, model_id=detection.model_id,
        confident=detection.confident)
    return build_report(rebuilt, frame)


def finalize_report(detection: Detection, frame: Optional[Frame] = None,
                    min_region_area_px: int = 16) -> Tuple[dict, List[dict]]:
    """Build, check with every rule, repair from the evidence where a rule fails, check again.

    Returns (report, rule results as dicts {"name", "passed", "reason", "score"}). The report
    carries `valid` (all rules pass after the last check) and `repaired` (a rebuild happened).
    """
    evidence = Evidence.from_detection(detection, min_region_area_px,
                                       sensor_type=frame.sensor_type if frame else THERMAL)
    report = build_report(detection, frame)
    results = run_rules(report, evidence)
    repaired = False
    if not all(r.passed for r in results):
        report = _repair(detection, frame, min_region_area_px)
        results = run_rules(report, evidence)
        repaired = True
    report["repaired"] = repaired
    report["valid"] = all(r.passed for r in results)
    return report, [r.as_dict() for r in results]


def _finite_or_none(value):
    if isinstance(value, np.generic):  # numpy scalars that slipped into the dict
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def report_to_json(report: dict) -> str:
    """Compact, strict JSON text: a non-finite number (only in an invalid report) is written
    as null, never as the non-standard NaN token."""
    return json.dumps(_finite_or_none(report), allow_nan=False, separators=(",", ":"))
