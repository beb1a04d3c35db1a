"""Aligned comparison for the detector: each part is registered to the pose of its stream's
references and compared pixel by pixel with their variation model (`variation.py`,
docs/ALIGNMENT.md), as inspection cells do for one product in any pose.

No ROS here. The feature memory compares each patch with look-alike patches anywhere on the
references, so a missing tooth or a shifted cap, whose patches all look normal, passes; the
variation model compares every pixel with the same place on the aligned references. Its map is
calibrated like a feature-memory map: each reference against a model of the others
(leave-one-out) gives the normal scores whose median / MAD set loc / scale, so normal parts
score about N(0, 1) and the detector fuses it with the feature memory's score.

Only for pixel-registered frames (one registration serves every modality: on the RGB image
or on the second sensor's, whichever makes the references agree best), object streams (a
texture has no pose to align: `is_texture` on the references decides) and 2 or more
references (one cannot calibrate itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .frame import RGB, SENSOR
from .scoring import ScoreStats
from .registration import is_texture
from .variation import VariationConfig, VariationModel, image_score


#: floor of the scale of a variation model's image score [spread units]
SCALE_FLOOR = 1.0
#: modalities whose image a part may be registered on, in order of preference
REGISTER_ON = (RGB, SENSOR)
#: a later candidate of REGISTER_ON replaces an earlier one only where it brings the worst
#: reference's leave-one-out deviation below this share of the earlier one's: with a few
#: references the two are often within noise of each other, and a misregistered reference
#: (the case to catch) deviates several times more than a well registered one
SWITCH_BELOW = 0.5


@dataclass
class AlignedStream:
    """Per stream: one variation model per modality (all in one pose) and the calibration of
    each model's image score."""

    models: Dict[str, VariationModel]
    stats: Dict[str, ScoreStats]
    #: the modality whose image parts are registered on
    on: str = RGB


def _build(images: Sequence[Dict[str, object]], fgs: Sequence[np.ndarray],
           config: VariationConfig, on: str) -> Dict[str, VariationModel]:
    """Models of every modality the references (of an object stream) share, all registered on
    modality `on`."""
    kind = "object"  # `teach` has ruled a texture out
    base = VariationModel.teach([im[on] for im in images], masks=fgs, kind=kind, config=config)
    models = {on: base}
    signals = [im[on] for im in images]
    for m in images[0]:
        if m != on and all(m in im for im in images):
            models[m] = VariationModel.teach(
                [im[m] for im in images], masks=fgs, signals=signals,
                registrations=base.ref_registrations, medoid=base.medoid, kind=kind,
                config=config)
    return models


def inspect(models: Dict[str, VariationModel], images: Dict[str, object],
            foreground: np.ndarray, on: str = RGB) -> Dict[str, Tuple[np.ndarray, float]]:
    """{modality: ((H, W) deviation map in spread units, its `image_score`)} of one part's
    modality images ({modality: (C, H, W) tensor or (H, W, C) array}) and its (H, W)
    foreground, registered once on the image of modality `on` (the one the models were built
    to register on); empty when the registration fails (the caller keeps its unaligned
    maps)."""
    best = models[on].register(images[on], foreground)
    # A near-symmetric part matches in several poses (a capsule turned by 180 degrees, a gear
    # one tooth on) with almost the same NCC: the pose in which the part deviates least from
    # the models (deviations summed over modalities, all in spread units) is taken, so an
    # ambiguous match cannot make a good part look defective, while a real defect deviates in
    # every pose.
    out, low = {}, np.inf
    for reg in (best,) + tuple(a for a in best.alternatives if a.ok):
        maps = {}
        for m, model in models.items():
            if m in images:
                ins = model.inspect(images[m], mask=foreground, registration=reg)
                if ins.fallback:
                    break
                maps[m] = (ins.map, image_score(ins.map))
        else:
            total = sum(score for _, score in maps.values())
            if total < low:
                out, low = maps, total
    return out


def teach(images: List[Dict[str, object]], foregrounds: List[np.ndarray], quantile: float,
          config: Optional[VariationConfig] = None) -> Optional[AlignedStream]:
    """Variation models and their calibration from the modality images and (H, W) foregrounds
    of 2..8 known-good, pixel-registered parts of one stream. None when the stream cannot be
    compared in register (fewer than 2 references, no RGB image to register on, a texture).

    quantile: the per-modality quantile the detector's threshold sits at (widens the scale for
    few references, as for the feature memory: `ScoreStats.of_scores`)."""
    cfg = config or VariationConfig()
    n = len(images)
    if n < 2 or any(RGB not in im for im in images):
        return None
    fgs = list(foregrounds)
    if cfg.texture_check and is_texture([im[RGB] for im in images])[0]:
        return None
    # Register on the RGB image or on the second sensor's, whichever makes the references
    # agree best when each is compared with a model of the others (leave-one-out): lighting
    # moves shading and shadows over a turned part in the colour image, an X-ray sees none of
    # it, while a thermal field may hold too little structure to register on.
    best = None
    for on in [m for m in REGISTER_ON if all(m in im for im in images)]:
        models = _build(images, fgs, cfg, on)
        loo: Dict[str, List[float]] = {m: [] for m in models}
        for i in range(n):
            rest = [j for j in range(n) if j != i]
            others = _build([images[j] for j in rest], [fgs[j] for j in rest], cfg, on)
            for m, (_, score) in inspect(others, images[i], fgs[i], on).items():
                loo[m].append(score)
        # Deviations are in units of the models' per-pixel spread: a few references cannot
        # show that normal parts' peaks agree more closely than that unit, hence its floor.
        stats = {m: ScoreStats.of_scores(v, quantile=quantile, min_abs_scale=SCALE_FLOOR)
                 for m, v in loo.items() if v}
        if not stats:
            continue
        # judged by the reference that deviates most (summed over modalities): one part
        # misregistered out of a few decides; a reference that failed to register, worst of all
        worst = (np.inf if any(len(v) < n for v in loo.values())
                 else max(sum(v[i] for v in loo.values()) for i in range(n)))
        if best is None or worst < SWITCH_BELOW * best[0]:
            best = (worst, AlignedStream({m: models[m] for m in stats}, stats, on))
    return None if best is None else best[1]
