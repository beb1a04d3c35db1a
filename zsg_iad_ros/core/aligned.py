"""Aligned comparison for the detector: each part is registered to the pose of its stream's
references and compared pixel by pixel with their variation model (`variation.py`,
docs/ALIGNMENT.md), as inspection cells do for one product in any pose.

No ROS here. The feature memory compares each patch with look-alike patches anywhere on the
references, so a missing tooth or a shifted cap, whose patches all look normal, passes; the
variation model compares every pixel with the same place on the aligned references. Its map is
calibrated like a feature-memory map: each reference against a model of the others
(leave-one-out) gives the normal scores whose median / MAD set loc / scale, so normal parts
score about N(0, 1) and the detector fuses it with the feature memory's score.

Only for pixel-registered frames (one registration serves every modality: the references on
the height map, the RGB image or the second sensor's, whichever makes them agree best; a part
on each of them, in the pose where it looks most normal), object streams (a
texture has no pose to align: `is_texture` on the references decides) and 2 or more
references (one cannot calibrate itself).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.stats import median_abs_deviation

from .frame import GEOMETRY, RGB, SENSOR
from .scoring import ScoreStats
from .registration import (Registration, RegistrationTemplate, as_hwc, is_texture,
                           make_template, register)
from .variation import (SCORE_SIGMA_PX, Deviation, VariationConfig, VariationModel, _grid_image,
                        _grid_matrix, _warp_stack, image_score)


#: floor of the scale of a variation model's image score [spread units]
SCALE_FLOOR = 1.0
#: modalities whose image a part may be registered on, in order of preference (the height map
#: first: it sees no lighting; docs/DETECTOR.md, "Aligned comparison")
REGISTER_ON = (GEOMETRY, RGB, SENSOR)
#: a later candidate of REGISTER_ON replaces an earlier one only where it brings the worst
#: reference's leave-one-out deviation below this share of the earlier one's: with a few
#: references the two are often within noise of each other, and a misregistered reference
#: (the case to catch) deviates several times more than a well registered one
SWITCH_BELOW = 0.5
#: the RGB image's channels: its luminance bands (`backbones.rgb_image`), then its
#: chromaticity (`backbones.chromaticity`; `detector._aligned_inputs`)
RGB_BANDS = 3
#: channels of each modality's image that registration sees (all when absent): the RGB image's
#: luminance bands, not its chromaticity, which is nearly constant on a grey part and,
#: standardised for registration, would be noise there
REGISTRATION_CHANNELS = {RGB: RGB_BANDS}
#: the chromaticity joins the RGB model only where the references' parts carry colour: the
#: 90th percentile of their pixels' distance from neutral grey (in shares of intensity), median
#: over the references, above this. Grey parts sit at their noise, about 0.01 (synthetic gears);
#: coloured capsules and boards at 0.09-0.27. On grey parts it only added noise (gears of several
#: designs fell from 0.67 to 0.52 image AUROC; docs/DETECTOR.md, "Aligned comparison").
COLOUR_MIN = 0.04
#: the model grid of a stream whose references all lie in one pose (parts held in a fixture):
#: small components of a board, about 2 x 1 px on the default 128-px grid, lie inside the band's
#: positional tolerance there and are seen at 256 px; parts taught in any pose stay on the
#: default grid, where 256 px made them worse (docs/DETECTOR.md, "Model grid")
FIXTURE_GRID = 256
#: a part lies in the model pose when it registers onto it turned by at most this many degrees,
#: or matches it held unturned nearly as well as turned (NCC within IN_POSE_NCC): a symmetric
#: part (a gear) in a fixture registers as well one tooth on
FIXTURE_ANGLE_DEG = 3.0
IN_POSE_NCC = 0.05
#: a foreground is in pieces (`in_pieces`) where its area outside its largest piece is at
#: least this share of that piece: synthetic boards 0.055-5.1 (median 0.83); parts on a table
#: (gears, capsules, bottles, brackets, hex nuts; 12 designs, 2 poses each) at most 0.003,
#: specks of glare or shadow that the foreground keeps beside the part
PIECES_MIN = 0.02
#: candidate poses of one part (`inspect`) closer than this [px, at the part's corners and
#: centre] are compared once: well within the models' positional tolerance (a pixel of their
#: grid, 1-2 px of the image); at 0.5 px the twin compared was not always the better pose
SAME_POSE_PX = 0.25


def _colourful(images: Sequence[Dict[str, object]], fgs: Sequence[np.ndarray]) -> bool:
    """Whether the references' parts carry colour (`COLOUR_MIN`)."""
    spread = []
    for im, fg in zip(images, fgs):
        chroma = as_hwc(im[RGB])[..., RGB_BANDS:]
        if chroma.shape[-1] == 0 or not np.any(fg):
            return False
        dist = np.sqrt(((chroma - 1.0 / 3.0) ** 2).sum(-1))[np.asarray(fg, bool)]
        spread.append(float(np.percentile(dist, 90)))
    return float(np.median(spread)) > COLOUR_MIN


def _as_models_see(models: Dict[str, VariationModel], images: Dict[str, object]
                   ) -> Dict[str, object]:
    """A part's modality images cut to the channels its stream's models were taught: a grey
    stream's RGB model has no chromaticity channels (`teach`)."""
    model = models.get(RGB)
    if model is None or RGB not in images:
        return images
    a = as_hwc(images[RGB])
    return {**images, RGB: a[..., :model.mean.shape[-1]]}


def _registration_image(modality: str, image) -> np.ndarray:
    """The part of a modality image that parts are registered on, (H, W, C)."""
    a = as_hwc(image)
    n = REGISTRATION_CHANNELS.get(modality)
    return a if n is None else a[..., :n]


@dataclass
class AlignedStream:
    """Per stream: one variation model per modality (all in one pose) and the calibration of
    each model's image score."""

    models: Dict[str, VariationModel]
    stats: Dict[str, ScoreStats]
    #: the modality whose image parts are registered on
    on: str = RGB
    #: the model pose's (medoid reference's) image in the other modalities of REGISTER_ON, as
    #: registration templates: each part is also registered on those (see `inspect`)
    templates: Dict[str, RegistrationTemplate] = field(default_factory=dict)
    #: the model pose's image in modality `on` over the whole view, as a registration
    #: template: each part is also registered on its whole view (see `inspect`); None where
    #: every reference's foreground is one piece (`in_pieces`)
    view: Optional[RegistrationTemplate] = None

    #: on a finer grid than the default, the same references' models on the default grid, for
    #: parts not in the model pose (`for_part`)
    coarse: Optional["AlignedStream"] = None
    #: calibration of the hue-speck score (core/hue_specks.py; `coloured_speck_map` where
    #: `colour`), from the references' own scores; None for coloured parts in pieces and
    #: where the parts have no height map
    hue: Optional[ScoreStats] = None
    #: the references' speck maps' `hue_specks.pixel_level`, with `hue`
    hue_pixels: Optional[float] = None
    #: of a grey part, the calibration of its brightness specks' map (core/brightness_specks.py:
    #: the references' peaks, for the scale) and the references' `hue_specks.pixel_level` of
    #: that map; None for parts that carry colour and where the parts have no height map
    bright: Optional[ScoreStats] = None
    bright_pixels: Optional[float] = None

    @property
    def grid(self) -> int:
        """Side of the models' grid [px]."""
        return self.models[self.on].config.grid

    @property
    def colour(self) -> bool:
        """Whether the RGB model compares the part's chromaticity (its references carry
        colour, `COLOUR_MIN`) besides the luminance bands."""
        return self.models[RGB].mean.shape[-1] > RGB_BANDS

    @property
    def weights(self) -> Dict[str, float]:
        """Per modality, the weight of its image score when `inspect` ranks a part's poses:
        1 / the scale of its normal scores, so each counts in units of its own normal
        variation."""
        return {m: 1.0 / st.scale for m, st in self.stats.items()}


def _on_grid(images: Dict[str, object], g: int) -> Dict[str, Tuple[np.ndarray, tuple]]:
    """{modality: ((g, g, C) image on the model grid, its full (H, W))} of one part."""
    return {m: (_grid_image(v, g), as_hwc(v).shape[:2]) for m, v in images.items()}


def _distance(part: Dict[str, Tuple[np.ndarray, tuple]], reg: Registration,
              model: Dict[str, Tuple[np.ndarray, tuple]], g: int) -> float:
    """How much one part's modality images (`_on_grid`), turned into the model pose by `reg`,
    differ from the model pose's own (the medoid reference's, `_on_grid`): mean absolute
    difference over the pixels both cover, in units of the medoid image's robust spread per
    channel, summed over the modalities."""
    total = 0.0
    for m, (r, shape) in model.items():
        q, qshape = part[m]
        a = _warp_stack(q, np.linalg.inv(_grid_matrix(reg.matrix, qshape, shape, g)), g)
        for c in range(r.shape[-1]):
            x, y = a[..., c], r[..., c]
            both = np.isfinite(x) & np.isfinite(y)
            if both.sum() < 16:
                continue
            yc = y[both]
            unit = max(float(median_abs_deviation(yc, scale="normal")), 1e-6)
            total += float(np.mean(np.abs(x[both] - yc))) / unit
    return total


def _resolve_poses(images: Sequence[Dict[str, object]], base: VariationModel
                   ) -> Optional[List[Registration]]:
    """The references' registrations with ambiguous poses settled by every modality, or None
    when nothing changes.

    A near-symmetric shape (a capsule's outline or height map is the same turned by 180
    degrees) registers almost equally well in several poses, and the registration signal
    alone may take the wrong one for a reference: a capsule whose cap then lies at the other
    end would teach the colour model that either end may be either colour. Each reference
    takes, among its registration and the alternatives that pass, the pose in which all its
    modalities differ least from the medoid's (as `inspect` does for a part)."""
    g = base.config.grid
    model = _on_grid(images[base.medoid], g)
    regs, changed = list(base.ref_registrations), False
    for i, reg in enumerate(regs):
        alts = [a for a in reg.alternatives if a.ok]
        if i == base.medoid or not alts:
            continue
        cands = [reg] + alts
        part = _on_grid(images[i], g)
        best = int(np.argmin([_distance(part, r, model, g) for r in cands]))
        if best:
            regs[i], changed = cands[best], True
    return regs if changed else None


def _modality_config(config: VariationConfig, modality: str) -> VariationConfig:
    """The variation model's settings for one modality. The height map is metric and
    smoothed: its only fine structure is the part's outline, which the band's positional
    tolerance already holds; the edge and texture terms of the spread (made for shading and
    surface texture in images) would count the outline again and tolerate a whole missing
    gear tooth (measured: docs/DETECTOR.md, "Aligned comparison"). Its height says where
    there is material (half the part's median height), which the colour image's foreground,
    cast shadow included, does not."""
    if modality == GEOMETRY:
        return dataclasses.replace(config, edge_px=0.0, local_k=0.0, material_level=0.5)
    return config


def _build(images: Sequence[Dict[str, object]], fgs: Sequence[np.ndarray],
           config: VariationConfig, on: str
           ) -> Tuple[Dict[str, VariationModel], Dict[str, RegistrationTemplate],
                      Optional[RegistrationTemplate]]:
    """Models of every modality the references (of an object stream) share, all registered on
    modality `on`, the model pose's registration templates in the other modalities of
    REGISTER_ON, and its template in modality `on` over the whole view where a reference's
    foreground is in pieces (`in_pieces`; else None)."""
    kind = "object"  # `teach` has ruled a texture out
    own = [im[on] for im in images]
    signals = [_registration_image(on, im[on]) for im in images]
    base = VariationModel.teach(own, masks=fgs, signals=signals, kind=kind,
                                config=_modality_config(config, on))
    regs = _resolve_poses(images, base)
    if regs is not None:
        base = VariationModel.teach(own, masks=fgs, signals=signals, registrations=regs,
                                    medoid=base.medoid, kind=kind,
                                    config=_modality_config(config, on))
    models = {on: base}
    for m in images[0]:
        if m != on and all(m in im for im in images):
            models[m] = VariationModel.teach(
                [im[m] for im in images], masks=fgs, signals=signals,
                registrations=base.ref_registrations, medoid=base.medoid, kind=kind,
                config=_modality_config(config, m))
    med = images[base.medoid]
    templates = {m: make_template(_registration_image(m, med[m]), fgs[base.medoid],
                                  config.registration)
                 for m in REGISTER_ON if m != on and m in med}
    reg_on = _registration_image(on, med[on])
    view = (make_template(reg_on, np.ones(reg_on.shape[:2], bool), config.registration)
            if in_pieces(fgs) else None)
    return models, templates, view


def in_pieces(foregrounds: Sequence[np.ndarray]) -> bool:
    """Whether any of these foregrounds is in pieces (a board's components and pads): its
    area outside its largest piece is PIECES_MIN of that piece or more. Registration centres
    a part on its largest piece, which can change from part to part, so such parts are also
    registered on the whole view (`candidate_poses`). A part lying on a table is one piece,
    its holes filled, and its whole view registers it as its outline does, at the cost of one
    more registration."""
    for fg in foregrounds:
        lab, n = ndimage.label(fg)
        if n > 1:
            areas = np.bincount(lab.ravel())[1:]
            if areas.sum() - areas.max() >= PIECES_MIN * areas.max():
                return True
    return False


def candidate_poses(models: Dict[str, VariationModel], images: Dict[str, object],
                    foreground: np.ndarray, on: str = RGB,
                    templates: Optional[Dict[str, RegistrationTemplate]] = None,
                    view: Optional[RegistrationTemplate] = None,
                    registration: Optional[Registration] = None) -> List[Registration]:
    """The poses `inspect` compares a part in (arguments as there), best registration first.

    A near-symmetric part matches in several poses (a capsule turned by 180 degrees, a gear
    one tooth on) with almost the same NCC, and the images disagree on a part's pose where
    one of them is unreliable (shading and shadows move over a turned part in the colour
    image; a height map is blind to print): the candidates are the best pose on each image
    and the next-best ones on `on`'s."""
    images = _as_models_see(models, images)
    best = registration or models[on].register(_registration_image(on, images[on]),
                                               foreground)
    cands = [best] + [a for a in best.alternatives if a.ok]
    if view is not None:
        # A board filling the view has no outline: its foreground is its scattered components
        # and pads, and the largest piece, where registration centres a part, can change from
        # board to board (two good boards of one layout registered 90 degrees or a quarter of
        # the view off, deviating by 40-80 spread units). Its whole view registers it.
        reg = register(_registration_image(on, images[on]), view,
                       np.ones(np.shape(foreground), bool))
        if reg.ok:
            cands.append(reg)
    for m, t in (templates or {}).items():
        if m in images:
            reg = register(_registration_image(m, images[m]), t, foreground)
            if reg.ok:
                cands.append(reg)
    return cands


@dataclass
class Comparison:
    """One modality of a part compared in register with its variation model (`inspect`).

    map: (H, W) float32 deviation in spread units on the part's pixels; score: its
    `image_score`. `material()` says where material is missing or extra."""

    map: np.ndarray
    score: float
    model: VariationModel
    deviation: Deviation
    registration: Registration

    def material(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(missing, extra, hole), (H, W) bool on the part's pixels: where the references have
        material and the part has none beyond the tolerance (a missing tooth), the reverse (a
        stray blob), and the missing material the part's own encloses (a hole through it).
        Brought back on request: only a flagged part's regions ask."""
        return self.model.material_to_query(self.deviation, self.registration, self.map.shape)

    def relief(self) -> np.ndarray:
        """(H, W) float32 on the part's pixels: the deviation above the band minus the
        deviation below it, in spread units. Of a one-channel image, the height map: > 0 where
        the part stands higher than its references, < 0 where lower."""
        dev = self.deviation
        return self.model.to_query(dev.above - dev.below, self.registration, self.map.shape)


def inspect(models: Dict[str, VariationModel], images: Dict[str, object],
            foreground: np.ndarray, on: str = RGB,
            templates: Optional[Dict[str, RegistrationTemplate]] = None,
            view: Optional[RegistrationTemplate] = None,
            registration: Optional[Registration] = None,
            weights: Optional[Dict[str, float]] = None
            ) -> Dict[str, Comparison]:
    """{modality: `Comparison`} of one part's
    modality images ({modality: (C, H, W) tensor or (H, W, C) array}) and its (H, W)
    foreground, registered on the image of modality `on` (the one the models were built to
    register on; `registration`, where the caller has it already: `for_part`) and on the
    other images `templates` hold; empty when every registration fails (the caller keeps its
    unaligned maps).

    The part is compared in the candidate pose (`candidate_poses`) in which it deviates least
    from the models (image scores summed over modalities, taken on the model grid, each
    times its `weights` entry: `AlignedStream.weights` once the models are calibrated, 1
    while they are taught), so an ambiguous or misled match cannot make a good part look
    defective, while a real defect deviates in every pose. Unweighted, a modality whose good
    parts vary widely (the colour image of a capsule, on which each lamp casts its own shading
    and shadow) outweighed one that varies little: good capsules in the references' own pose were
    compared turned by half a turn, where their X-ray deviated by 16 spread units
    (docs/DETECTOR.md, "Aligned comparison")."""
    images = _as_models_see(models, images)  # cut once: `candidate_poses` finds them cut
    cands = candidate_poses(models, images, foreground, on, templates, view, registration)
    # the part on each model's grid once; each pose then only resamples it
    grids = {m: model.on_grid(images[m], foreground)
             for m, model in models.items() if m in images}
    best, low, seen = None, np.inf, []
    for reg in cands:
        # the images often agree on a pose to a fraction of a pixel: compared once
        if any(_pose_gap(reg, r) < SAME_POSE_PX for r in seen):
            continue
        seen.append(reg)
        devs, total = {}, 0.0
        for m, grid in grids.items():
            ins = models[m].inspect(None, registration=reg, query=grid, full=False)
            if ins.fallback:
                break
            devs[m] = ins.deviation
            # the poses are ranked on the model grid, with the blur of `image_score` on the
            # query's pixels scaled to it: only the chosen pose's maps are brought back
            total += (1.0 if weights is None else weights[m]) * image_score(
                devs[m].total, SCORE_SIGMA_PX * models[m].config.grid / max(grid.shape))
            if total >= low:  # scores are >= 0: this pose cannot win any more
                break
        else:
            best, low = (reg, devs), total
    if best is None:
        return {}
    reg, devs = best
    out = {}
    for m, dev in devs.items():
        full = models[m].to_query(dev.total, reg, grids[m].shape)
        out[m] = Comparison(full, image_score(full), models[m], dev, reg)
    return out


def _pose_gap(a: Registration, b: Registration) -> float:
    """Largest distance [px] between where two registrations of one query put its corners
    and centre."""
    h, w = a.query_shape
    pts = np.array([[0, w, 0, w, w / 2], [0, 0, h, h, h / 2], [1, 1, 1, 1, 1]], float)
    return float(np.abs((a.matrix @ pts - b.matrix @ pts)[:2]).max())


def teach(images: List[Dict[str, object]], foregrounds: List[np.ndarray], quantile: float,
          config: Optional[VariationConfig] = None,
          fixture_grid: Optional[int] = None) -> Optional[AlignedStream]:
    """Variation models and their calibration from the modality images and (H, W) foregrounds
    of 2..8 known-good, pixel-registered parts of one stream. None when the stream cannot be
    compared in register (fewer than 2 references, no RGB image to register on, a texture).

    quantile: the per-modality quantile the detector's threshold sits at (widens the scale for
    few references, as for the feature memory: `ScoreStats.of_scores`).
    fixture_grid: when given, a stream whose references all lie in one pose (`in_one_pose`)
    is taught again on this grid (at most the images' side), when finer than `config`'s; the
    models on `config`'s grid stay for parts that are not in that pose (`for_part`)."""
    cfg = config or VariationConfig()
    found = _teach(images, foregrounds, quantile, cfg)
    if found is None or fixture_grid is None:
        return found
    # no finer than the images themselves
    fine = min([int(fixture_grid)] + [min(as_hwc(im[found.on]).shape[:2]) for im in images])
    if fine <= cfg.grid or not in_one_pose(found, images, foregrounds):
        return found
    # registered on the image chosen on the default grid: choosing again on the finer one
    # would triple the cost of teaching it
    fixed = _teach(images, foregrounds, quantile, dataclasses.replace(cfg, grid=fine), found.on)
    if fixed is None:
        return found
    fixed.coarse = found
    return fixed


def in_model_pose(model: VariationModel, signal, foreground: np.ndarray,
                  reg: Registration) -> bool:
    """Whether a part whose registration image `signal` registered onto `model`'s pose as
    `reg` lies in that pose, up to a shift (FIXTURE_ANGLE_DEG, IN_POSE_NCC)."""
    if not reg.ok:
        return False
    if abs((reg.angle_deg + 180.0) % 360.0 - 180.0) <= FIXTURE_ANGLE_DEG:
        return True
    held = register(signal, model.template, foreground, fixed_angle=0.0)
    return held.ok and held.quality >= reg.quality - IN_POSE_NCC


def in_one_pose(stream: AlignedStream, images: Sequence[Dict[str, object]],
                foregrounds: Sequence[np.ndarray]) -> bool:
    """Whether the references `stream` was taught on (their modality images and foregrounds,
    as given to `teach`) all lie in its model pose, up to a shift: parts held in a fixture."""
    model = stream.models[stream.on]
    return all(in_model_pose(model, _registration_image(stream.on, im[stream.on]), fg, reg)
               for im, fg, reg in zip(images, foregrounds, model.ref_registrations))


def for_part(stream: AlignedStream, images: Dict[str, object], foreground: np.ndarray
             ) -> Tuple[AlignedStream, Optional[Registration]]:
    """The models to inspect one part with, and the part's registration on their image `on`
    where this had to compute it (for `inspect`): the stream's own, or, where they lie on a
    finer grid and the part is not in their pose (a part turned away from the fixture's pose),
    the default grid's (`AlignedStream.coarse`; no registration): a finer grid resolves the
    resampling of a turned part into deviations."""
    if stream.coarse is None:
        return stream, None
    model = stream.models[stream.on]
    signal = _registration_image(stream.on, _as_models_see(stream.models, images)[stream.on])
    reg = model.register(signal, foreground)
    if in_model_pose(model, signal, foreground, reg):
        return stream, reg
    return stream.coarse, None


def _teach(images: List[Dict[str, object]], foregrounds: List[np.ndarray], quantile: float,
           cfg: VariationConfig, on_only: Optional[str] = None) -> Optional[AlignedStream]:
    """`teach` on the grid of `cfg`, registering on modality `on_only` where given (else on
    the one of REGISTER_ON that makes the references agree best)."""
    n = len(images)
    if n < 2 or any(RGB not in im for im in images):
        return None
    fgs = list(foregrounds)
    if cfg.texture_check and is_texture([_registration_image(RGB, im[RGB]) for im in images])[0]:
        return None
    if not _colourful(images, fgs):  # hue adds nothing but noise on grey parts: bands only
        images = [{**im, RGB: as_hwc(im[RGB])[..., :RGB_BANDS]} for im in images]
    # Register the references on the height map, the RGB image or the second sensor's,
    # whichever makes them agree best when each is compared with a model of the others
    # (leave-one-out): lighting moves shading and shadows over a turned part in the colour
    # image, a height map or an X-ray sees none of it, while a flat part leaves the height map
    # nothing to register on and a thermal field may hold too little structure.
    best = None
    for on in [m for m in REGISTER_ON if all(m in im for im in images) and on_only in (None, m)]:
        models, templates, view = _build(images, fgs, cfg, on)
        loo: Dict[str, List[float]] = {m: [] for m in models}
        for i in range(n):
            rest = [j for j in range(n) if j != i]
            others, t, v = _build([images[j] for j in rest], [fgs[j] for j in rest], cfg, on)
            for m, found in inspect(others, images[i], fgs[i], on, t, v).items():
                loo[m].append(found.score)
        # Deviations are in units of the models' per-pixel spread: a few references cannot
        # show that normal parts' peaks agree more closely than that unit, hence its floor.
        stats = {m: ScoreStats.of_scores(v, quantile=quantile, min_abs_scale=SCALE_FLOOR)
                 for m, v in loo.items() if v}
        if not stats:
            continue
        # judged by the reference that deviates most: one part misregistered out of a few
        # decides, a reference that failed to register worst of all. Per reference the median
        # over modalities: a misregistered reference deviates in most of them, while one
        # modality's own noise (the colour image's moving highlights) must not decide.
        worst = (np.inf if any(len(v) < n for v in loo.values())
                 else max(float(np.median([v[i] for v in loo.values()])) for i in range(n)))
        if best is None or worst < SWITCH_BELOW * best[0]:
            best = (worst, AlignedStream({m: models[m] for m in stats}, stats, on, templates,
                                         view))
    return None if best is None else best[1]
