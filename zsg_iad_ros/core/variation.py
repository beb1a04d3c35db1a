"""Variation model: the per-pixel mean, spread and tolerance band of a few known-good parts in
one pose.

No ROS here. Taught from 1-8 reference images of one modality (numpy (H, W[, C]) or torch
(C, H, W), e.g. `backbones.rgb_image`, `backbones.sensor_image`,
`geometry_maps(...).as_image()`): the references are registered to a common model pose (the
medoid: the reference that registers best to the others), then per pixel and channel

    mean   = median of the aligned references (mean for one or two),
    spread = sqrt(mad^2 + noise^2 + (edge_px |grad mean|)^2 + texture^2 + loo^2 + floor^2),
    band   = [lower, upper]: the mean and every aligned reference's value, widened to the
             extremes within `tolerance_px` (min / max filters),

where `mad` is 1.4826 x the MAD across the references (0 for one), `noise` the references'
own fine-scale variation (one level per channel), the gradient term the edge tolerance of
classic variation models (a misregistration of `edge_px` pixels on a strong edge changes the
value by about |grad| x edge_px), `texture` the local RMS of the fine residual (what a single
reference tolerates of its own texture), `loo` the leave-one-out excess (how far each
reference falls outside the band of the others: the variation a few references cannot show
by themselves) and `floor` 1e-3 of the channel's range. The deviation of a query pixel is its
distance outside the band in units of the spread (0 inside), combined over channels (RMS).

A query is registered to the model pose (`VariationModel.inspect`), resampled onto the model
grid, compared, and the deviation map is brought back to the query's pixels. Everything runs
on a `grid` x `grid` model grid (default 128: images are block-averaged to it) to stay within
a few milliseconds per modality; maps come back at the query's resolution.

Missing and extra material: the references' foregrounds give where the model has material;
where the model has material and the aligned query has none (a missing tooth, a hole through
the part) or the reverse (a stray blob on the table), `missing` / `extra` are set where the
deviation exceeds `material_band`; the signed `below` / `above` maps say which side of the band
a pixel left. Both kinds raise the deviation map, so neither can hide in a feature memory's
look-alike patches. The deviation counts on and around the model's material
(`roi_margin`) and wherever the query has material.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.stats import median_abs_deviation

from .registration import (Registration, RegistrationConfig, RegistrationTemplate, to_work_grid,
                           work_grid, as_hwc, foreground_mask, is_texture, make_template,
                           register, warp_channels)

__all__ = ["VariationConfig", "VariationModel", "Deviation", "Inspection", "GridQuery",
           "image_score"]


@dataclass(frozen=True)
class VariationConfig:
    """grid: side of the model grid (px). align: register references and queries to the
    model pose (False: compare in place, the unaligned baseline).
    edge_px: misregistration tolerated on edges (px of the model grid).
    noise_k: weight of the references' fine-scale noise level in the spread.
    local_k: weight of the local texture floor (RMS of the fine residual over 5x5 px).
    band_k: weight of the MAD spread across references.
    combine: 'rms' or 'max' over channels.
    tolerance_px: positional tolerance of the band (model-grid px; min / max filter).
    envelope: the band holds every aligned reference's value besides the mean.
    loo_k: weight of the leave-one-out excess in the spread (2+ references; see
        `_loo_excess`).
    material_band: deviation (spread units) above which missing / extra material is reported.
    material_level: 0: material is where the foregrounds say (references' and query's);
        above 0: where the image's first channel exceeds this share of the references' median
        on their foregrounds (a height map: a missing tooth leaves the table's height, while a
        colour image's foreground takes in the cast shadow, which can fill the gap).
    roi_margin: the deviation counts within this many model-grid px of the model's material
        (and wherever the query has material); -1 counts everywhere.
    texture_check: test the references for a texture when `teach` is not told the kind (a
        texture stream falls back to unaligned scoring: `inspect` returns no map).

    tolerance_px, envelope, loo_k and combine were chosen on the auxiliary split's objects
    (bottle, bracket, hex nut; 4 references): best pixel AUROC / AUPRO of the aligned model
    and the smallest score shift between parts as generated and turned.
    """

    grid: int = 128
    align: bool = True
    edge_px: float = 1.0
    noise_k: float = 2.0
    local_k: float = 1.0
    band_k: float = 1.0
    combine: str = "rms"
    material_band: float = 3.0
    material_level: float = 0.0
    tolerance_px: int = 1
    loo_k: float = 1.0
    envelope: bool = True
    roi_margin: int = 4
    texture_check: bool = True
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)


@dataclass
class Deviation:
    """Deviation of an aligned image from the model, on the model grid (g, g) float32 unless
    said otherwise; 0 where the query does not cover the model grid.

    total: distance outside the tolerance band / spread, combined over channels.
    below, above: the largest per-channel deviation below / above the band (>= 0).
    missing: (g, g) bool, model has material, aligned query has none, total > band.
    extra: (g, g) bool, query has material where the model has none, total > band.
    query_material: (g, g) bool where the aligned query has material (None where `deviation`
    was not told).
    """

    total: np.ndarray
    below: np.ndarray
    above: np.ndarray
    missing: np.ndarray
    extra: np.ndarray
    query_material: Optional[np.ndarray] = None


@dataclass
class Inspection:
    """Result of `VariationModel.inspect` for one query image.

    map: (H, W) float32 deviation in spread units on the QUERY's pixels (None on fallback, or
        when `inspect` was told not to bring it back: `full=False`).
    missing, extra: (H, W) bool on the query's pixels (None where map is; `deviation` holds
        them on the model grid).
    registration: query -> model pose (identity when not aligned).
    aligned: whether the comparison used a registration.
    fallback: True when the caller should use its unaligned scoring instead (texture stream,
        failed registration); `reason` says why.
    deviation: the model-grid `Deviation` (None on fallback).
    """

    map: Optional[np.ndarray]
    missing: Optional[np.ndarray]
    extra: Optional[np.ndarray]
    registration: Registration
    aligned: bool
    fallback: bool = False
    reason: str = ""
    deviation: Optional[Deviation] = None


@dataclass
class GridQuery:
    """One query image on a model's grid, before registration (`VariationModel.on_grid`).

    image: (g, g, C) float32 (NaN where not finite); mask: (g, g, 1) float32 foreground
    fraction; shape: (H, W) of the query image."""

    image: np.ndarray
    mask: np.ndarray
    shape: Tuple[int, int]


def _grid_matrix(reg_matrix: np.ndarray, query_shape, model_shape, g: int) -> np.ndarray:
    """A full-resolution query -> model matrix expressed on the two (g, g) grids."""
    _, kq = work_grid(query_shape, g)
    _, km = work_grid(model_shape, g)
    return km @ reg_matrix @ np.linalg.inv(kq)


def _warp_stack(a: np.ndarray, m_out_to_in: np.ndarray, g: int, order: int = 1,
                cval: float = np.nan) -> np.ndarray:
    """(g, g, C) -> (g, g, C) resampled at M (u, v, 1); outside -> cval."""
    return warp_channels(a, m_out_to_in, (g, g), order, cval)


@lru_cache(maxsize=8)
def _upsample_axes(g: int, h: int, w: int):
    """Per output axis of (h, w): lower source index, weight of the upper one, and the
    nearest index, on the (g, g) model grid (pixel areas aligned, inverse of
    `to_work_grid`)."""
    f, _ = work_grid((h, w), g)

    def axis(n):
        x = np.clip((np.arange(n) + 0.5) / f - 0.5, 0, g - 1)
        i0 = np.minimum(np.floor(x).astype(np.intp), g - 2)
        return i0, (x - i0).astype(np.float32), np.clip(np.round(x).astype(np.intp), 0, g - 1)

    return axis(h), axis(w)


def _from_grid(x: np.ndarray, shape) -> np.ndarray:
    """(g, g) model-grid map -> (H, W) float32, bilinear: two gathers along the axes (no
    matrix product: BLAS threads cost more than they save on a busy 2-core CPU)."""
    (r0, tr, _), (c0, tc, _) = _upsample_axes(x.shape[0], *shape)
    x = x.astype(np.float32, copy=False)
    rows = x[r0] * (1 - tr[:, None]) + x[r0 + 1] * tr[:, None]
    return rows[:, c0] * (1 - tc[None, :]) + rows[:, c0 + 1] * tc[None, :]


def _from_grid_nearest(x: np.ndarray, shape) -> np.ndarray:
    """(g, g) model-grid map -> (H, W), nearest pixel (for masks)."""
    (_, _, ir), (_, _, ic) = _upsample_axes(x.shape[0], *shape)
    return x[np.ix_(ir, ic)]


def _grid_image(image, g: int) -> np.ndarray:
    """Image -> (g, g, C) float32 on the model grid; non-finite pixels stay NaN."""
    a = as_hwc(image)
    return np.stack([to_work_grid(a[..., c], g) for c in range(a.shape[-1])], -1)


def _local_texture(x: np.ndarray) -> np.ndarray:
    """(g, g) -> (g, g) local RMS (5x5 px) of the fine residual x - blur(x): the texture a
    single reference shows at each pixel, without the smooth edges of the part's outline
    (those are the edge tolerance's business)."""
    x = np.nan_to_num(x)
    r = x - ndimage.gaussian_filter(x, 1.0)
    return np.sqrt(np.maximum(ndimage.uniform_filter(r * r, 5), 0.0))


def _fine_noise(x: np.ndarray) -> float:
    """Robust level of a channel's fine-scale variation: 1.4826 MAD of x - blur(x)."""
    f = np.isfinite(x)
    if f.sum() < 16:
        return 0.0
    r = (x - ndimage.gaussian_filter(np.where(f, x, np.nanmedian(x)), 1.0))[f]
    return float(median_abs_deviation(r, scale="normal"))


def _tolerance_band(stack: np.ndarray, mean: np.ndarray, cfg: "VariationConfig"):
    """Lower and upper bounds (g, g, C) float32 of the normal band before the spread.

    The band holds the mean and, with `envelope`, every aligned reference's value (a tooth
    of one good gear and a gap of another are both normal where they disagree); then it is
    widened to the extremes within `tolerance_px` (a min / max filter: a part may sit that far
    off the model pose, as in variation models with a positional tolerance). Pixels no
    reference covers get an empty band at the mean."""
    lo, hi = mean.copy(), mean.copy()
    if cfg.envelope:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            lo = np.fmin(lo, np.nanmin(stack, 0))
            hi = np.fmax(hi, np.nanmax(stack, 0))
    r = int(cfg.tolerance_px)
    if r > 0:
        size = (2 * r + 1, 2 * r + 1, 1)
        lo = ndimage.minimum_filter(np.where(np.isfinite(lo), lo, np.inf), size=size)
        hi = ndimage.maximum_filter(np.where(np.isfinite(hi), hi, -np.inf), size=size)
        lo = np.where(np.isfinite(lo), lo, mean)
        hi = np.where(np.isfinite(hi), hi, mean)
    return lo.astype(np.float32), hi.astype(np.float32)


def _loo_excess(stack: np.ndarray, cfg: "VariationConfig") -> np.ndarray:
    """How far a new good part falls outside the band of the others: (g, g, C) float32.

    Each reference in turn is left out, the band is built from the rest, and its distance
    outside that band is taken; the RMS over references, spread over 2 px (a max filter, then
    a light blur), is the extra tolerance the few references cannot show by themselves (with
    parts of one type that differ in detail, e.g. gears of other tooth counts)."""
    n = stack.shape[0]
    acc = np.zeros(stack.shape[1:], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for i in range(n):
            rest = np.delete(stack, i, axis=0)
            mean = np.nanmedian(rest, 0) if n - 1 >= 3 else np.nanmean(rest, 0)
            lo, hi = _tolerance_band(rest, np.nan_to_num(mean), cfg)
            x = stack[i]
            ex = np.maximum(np.maximum(x - hi, lo - x), 0.0)
            acc += np.nan_to_num(ex) ** 2
    r = np.sqrt(acc / n)
    r = ndimage.maximum_filter(r, size=(5, 5, 1))
    return ndimage.gaussian_filter(r, sigma=(1.0, 1.0, 0)).astype(np.float32)


#: blur [px of the map] before an image score's maximum (`image_score`)
SCORE_SIGMA_PX = 2.0


def image_score(deviation_map: np.ndarray, sigma: float = SCORE_SIGMA_PX) -> float:
    """Image-level score of a deviation map (H, W): the maximum after a Gaussian blur of
    `sigma` px, so one noisy pixel does not decide.

    Deviation maps are zero outside the band's few excursions, so only the box around the
    nonzero pixels, grown by the kernel's radius, is blurred: every value in it, and the zeros
    outside, are those of the whole map's blur (the box's margin is zeros, so its reflected
    border reads what the map holds there), at a fraction of the cost."""
    m = np.nan_to_num(np.asarray(deviation_map, np.float32))
    if not m.size:
        return 0.0
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if not rows.size:
        return 0.0
    r = int(4.0 * sigma + 0.5)  # scipy's kernel radius at its default truncate=4
    box = (slice(max(rows[0] - r, 0), rows[-1] + r + 1),
           slice(max(cols[0] - r, 0), cols[-1] + r + 1))
    peak = float(ndimage.gaussian_filter(m[box], sigma, truncate=4.0).max())
    # outside the box the blur is 0
    return peak if m[box].shape == m.shape else max(peak, 0.0)


class VariationModel:
    """Per-pixel mean and spread of aligned known-good parts of one modality.

    Build with `VariationModel.teach(...)`; then `inspect(query)` per part. Attributes:
    mean, spread: (g, g, C) float32 on the model grid; lower, upper: (g, g, C) float32 the
    tolerance band (see `_tolerance_band`); material: (g, g) bool where most
    references have material; template: the model pose's `RegistrationTemplate` (None when
    not aligned); ref_registrations: each reference -> model pose; medoid: index of the
    reference that fixes the model pose; kind: 'object' or 'texture'; alignable: whether
    queries are registered; reason: why not, when not; texture_score, ref_quality (median
    quality of the references' registrations to the model pose)."""

    def __init__(self, mean, spread, lower, upper, material, template, ref_registrations,
                 medoid, kind, alignable, reason, texture_score, ref_quality, shape, config):
        self.mean: np.ndarray = mean
        self.spread: np.ndarray = spread
        self.lower: np.ndarray = lower
        self.upper: np.ndarray = upper
        self.material: np.ndarray = material
        self.template: Optional[RegistrationTemplate] = template
        self.ref_registrations: List[Registration] = ref_registrations
        self.medoid: int = medoid
        self.kind: str = kind
        self.alignable: bool = alignable
        self.reason: str = reason
        self.texture_score: float = texture_score
        self.ref_quality: float = ref_quality
        self.shape: Tuple[int, int] = shape
        self.config: VariationConfig = config
        # the level above which the image holds material (`VariationConfig.material_level`)
        self.level: Optional[float] = None
        if config.material_level > 0 and material.any():
            on_part = mean[..., 0][material]
            median = float(np.nanmedian(on_part)) if np.isfinite(on_part).any() else np.nan
            if np.isfinite(median) and median > 0:
                self.level = config.material_level * median
        k = config.roi_margin
        if k < 0 or not material.any():
            self.roi = np.ones(material.shape, bool)
        else:
            self.roi = ndimage.binary_dilation(material, iterations=k) if k > 0 else material

    # -----------------------------------------------------------------------------------------
    @classmethod
    def teach(cls, references: Sequence, masks: Optional[Sequence[np.ndarray]] = None,
              signals: Optional[Sequence] = None,
              registrations: Optional[Sequence[Registration]] = None,
              medoid: Optional[int] = None, kind: Optional[str] = None,
              config: Optional[VariationConfig] = None) -> "VariationModel":
        """Build the model from 1-8 (or more) references of one modality.

        references: images (H, W[, C]) numpy or (C, H, W) torch, all the same size.
        masks: their (H, W) bool foregrounds (estimated from the images when None).
        signals: images to register on instead of the references themselves (e.g. the RGB
            image when teaching the sensor modality of a pixel-registered frame).
        registrations: reference -> model pose registrations to reuse (e.g. the RGB model's
            `ref_registrations` for the other modalities of registered frames); skips the
            registration of the references, and `medoid` must then be given.
        kind: 'object' or 'texture' to impose the stream's kind (decided once per stream,
            e.g. from its RGB references); None: `is_texture` on the signals decides.
        """
        cfg = config or VariationConfig()
        n = len(references)
        if n == 0:
            raise ValueError("teach needs at least one reference")
        g = cfg.grid
        imgs = [as_hwc(r) for r in references]
        shape = imgs[0].shape[:2]
        if any(i.shape[:2] != shape for i in imgs):
            raise ValueError("references must share one image size")
        sig = list(signals) if signals is not None else imgs
        if masks is None:
            masks = [foreground_mask(s) for s in sig]
        masks = [np.asarray(m, bool) for m in masks]
        if kind not in (None, "object", "texture"):
            raise ValueError(f"kind must be 'object', 'texture' or None, got {kind!r}")
        if kind is not None:
            tex, tscore = kind == "texture", float("nan")
        elif cfg.texture_check:
            tex, tscore = is_texture(sig)
        else:
            tex, tscore = False, float("nan")
        kind = "texture" if tex else "object"
        alignable, reason = cfg.align and not tex, ""
        if tex:
            reason = f"texture (self-similarity {tscore:.2f}): unaligned scoring"
        elif not cfg.align:
            reason = "alignment disabled"

        template, regs, ref_q = None, [Registration.identity(shape, ok=True)] * n, float("nan")
        if registrations is not None:
            if medoid is None or len(registrations) != n:
                raise ValueError("registrations need one entry per reference and the medoid")
            regs, med = list(registrations), int(medoid)
            template = make_template(sig[med], masks[med], cfg.registration)
        elif alignable:
            templates = [make_template(s, m, cfg.registration) for s, m in zip(sig, masks)]
            if medoid is None and n > 2:
                # medoid: the reference the others register to best
                q = np.full((n, n), np.nan)
                for i in range(n):
                    for j in range(n):
                        if i != j:
                            q[i, j] = register(sig[i], templates[j], masks[i]).quality
                med = int(np.nanargmax(np.nanmean(q, axis=0)))
            else:
                med = int(medoid or 0)
            template = templates[med]
            regs = [Registration.identity(shape, quality=1.0, ok=True) if i == med else
                    register(sig[i], template, masks[i]) for i in range(n)]
            if n > 1:
                ref_q = float(np.median([r.quality for i, r in enumerate(regs) if i != med]))
        else:
            med = 0

        small = [_grid_image(i, g) for i in imgs]
        stack, mstack = [], []
        for i in range(n):
            mg = _grid_matrix(regs[i].matrix, shape, shape, g)
            inv = np.linalg.inv(mg)
            stack.append(_warp_stack(small[i], inv, g))
            mstack.append(_warp_stack(to_work_grid(masks[i].astype(np.float32), g)[..., None],
                                      inv, g, cval=0.0)[..., 0] > 0.5)
        A = np.stack(stack)  # (n, g, g, C)
        with warnings.catch_warnings():  # pixels no reference covers stay NaN
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = np.nanmedian(A, 0) if n >= 3 else np.nanmean(A, 0)
            band = (1.4826 * np.nanmedian(np.abs(A - mean[None]), 0) if n >= 2
                    else np.zeros_like(mean))
        band = np.nan_to_num(band)
        C = A.shape[-1]
        spread = np.empty_like(mean)
        for c in range(C):
            m = mean[..., c]
            noise = float(np.median([_fine_noise(s[..., c]) for s in small]))
            gy, gx = np.gradient(np.nan_to_num(m))
            edge = np.hypot(gx, gy) * cfg.edge_px
            fin = m[np.isfinite(m)]
            span = float(np.percentile(fin, 99) - np.percentile(fin, 1)) if fin.size else 1.0
            floor = max(1e-3 * span, 1e-6)
            spread[..., c] = np.sqrt((cfg.band_k * band[..., c]) ** 2
                                     + (cfg.noise_k * noise) ** 2 + edge ** 2
                                     + (cfg.local_k * _local_texture(m)) ** 2 + floor ** 2)
        if cfg.loo_k > 0 and n >= 2:
            spread = np.sqrt(spread ** 2 + (cfg.loo_k * _loo_excess(A, cfg)) ** 2)
        material = np.mean(mstack, 0) >= 0.5
        lo, hi = _tolerance_band(A, mean, cfg)
        return cls(mean.astype(np.float32), spread.astype(np.float32), lo, hi, material,
                   template, regs, med, kind, alignable, reason, tscore, ref_q, tuple(shape), cfg)

    # -----------------------------------------------------------------------------------------
    def deviation(self, aligned: np.ndarray, material: Optional[np.ndarray] = None
                  ) -> Deviation:
        """Deviation of an image already on the model grid and pose.

        aligned: (g, g, C) float32 (NaN where not covered); material: (g, g) bool where the
        aligned query has material (None: missing / extra are not computed, all False; with
        `material_level` the image's level decides where there is material, `material` still
        extends the region the deviation counts in)."""
        a = np.asarray(aligned, np.float32)
        if a.ndim == 2:
            a = a[..., None]
        if a.shape != self.mean.shape:
            raise ValueError(f"aligned image {a.shape} does not match the model {self.mean.shape}")
        # signed distance outside the tolerance band, in spread units (0 inside)
        z = (np.maximum(a - self.upper, 0.0) - np.maximum(self.lower - a, 0.0)) / self.spread
        z = np.where(np.isfinite(z), z, 0.0)
        # channels first: numpy reduces over a short last axis about 20x slower than over the
        # first, and these reductions were most of an inspection's time (same values)
        z = np.ascontiguousarray(np.moveaxis(z, -1, 0))
        if self.config.combine == "max":
            total = np.abs(z).max(0)
        else:
            total = np.sqrt((z * z).mean(0))
        below = np.maximum(-z.min(0), 0.0)
        above = np.maximum(z.max(0), 0.0)
        # only on and around the part: the model's material grown by roi_margin px, plus
        # whatever material the query brings (a stray blob anywhere is still seen)
        roi = self.roi if material is None else self.roi | np.asarray(material, bool)
        total, below, above = total * roi, below * roi, above * roi
        hot = total > self.config.material_band
        qm = None
        if material is None:
            missing = extra = np.zeros(total.shape, bool)
        else:
            have, qm = self.material, np.asarray(material, bool)
            if self.level is not None:  # NaN (not covered) is neither; it is not hot either
                with np.errstate(invalid="ignore"):
                    have, qm = self.mean[..., 0] > self.level, a[..., 0] > self.level
            missing = have & ~qm & hot
            extra = qm & ~have & hot
        return Deviation(total.astype(np.float32), below.astype(np.float32),
                         above.astype(np.float32), missing, extra, qm)

    def register(self, signal, mask: Optional[np.ndarray] = None) -> Registration:
        """Registration of a query (the same kind of image the model was taught on, or the
        signal it registers on) to the model pose."""
        if self.template is None:
            raise RuntimeError(f"this model does not register ({self.reason})")
        return register(signal, self.template, mask)

    def registration_to_reference(self, query_to_model: Registration, i: int) -> Registration:
        """Query -> reference i, composed from query -> model pose and the cached reference i
        -> model pose (no further image work)."""
        r = self.ref_registrations[i]
        m = np.linalg.inv(r.matrix) @ query_to_model.matrix
        return Registration(m, query_to_model.angle_deg - r.angle_deg,
                            query_to_model.scale / r.scale, (m[0, 2], m[1, 2]),
                            min(query_to_model.quality, r.quality),
                            query_to_model.ok and r.ok, r.query_shape,
                            query_to_model.query_shape)

    def on_grid(self, image, mask: np.ndarray) -> GridQuery:
        """A query's image and (H, W) bool foreground on this model's grid: the part of
        `inspect` that does not depend on the pose, for a caller that compares one part in
        several poses."""
        a = as_hwc(image)
        g = self.config.grid
        return GridQuery(_grid_image(a, g),
                         to_work_grid(np.asarray(mask, np.float32), g)[..., None], a.shape[:2])

    def inspect(self, image, mask: Optional[np.ndarray] = None, signal=None,
                registration: Optional[Registration] = None,
                query: Optional[GridQuery] = None, full: bool = True) -> Inspection:
        """Compare one query part with the model; the map comes back on the query's pixels.

        image: the query modality image (H, W[, C]) numpy or (C, H, W) torch.
        mask: its (H, W) bool foreground (estimated when None and needed).
        signal: image to register on instead (see `teach`); registration: a query -> model
        registration to reuse (e.g. from the RGB modality of a registered frame).
        query: the part's `on_grid` (then image and mask are not read); full: False leaves
        the map and the missing / extra masks None, only the model grid's `deviation` made
        (`to_query` brings its map back later: a caller comparing several poses saves the
        resamplings of those it does not keep).
        On a texture stream or a failed registration `fallback` is True and no map is made."""
        a = None if query is not None else as_hwc(image)
        qshape = query.shape if query is not None else a.shape[:2]
        g = self.config.grid
        if registration is None:
            if self.alignable:
                if query is not None:
                    raise ValueError("a query on the grid needs its registration")
                if mask is None:
                    mask = foreground_mask(signal if signal is not None else a)
                registration = self.register(signal if signal is not None else a, mask)
            else:
                registration = Registration(np.eye(3), 0.0, 1.0, (0.0, 0.0), float("nan"), True,
                                            self.shape, qshape)
        if self.kind == "texture":
            return Inspection(None, None, None, registration, False, True, self.reason)
        if self.alignable and not registration.ok:
            return Inspection(None, None, None, registration, False, True,
                              f"registration quality {registration.quality:.2f} below "
                              f"{self.config.registration.min_quality:.2f}")
        if query is None:
            if mask is None:
                mask = foreground_mask(signal if signal is not None else a)
            query = self.on_grid(a, mask)
        mg = _grid_matrix(registration.matrix, qshape, self.shape, g)
        same = np.allclose(mg, np.eye(3), atol=1e-9)  # in place: no resampling at all

        def to_model(x, cval=np.nan):
            return x if same else _warp_stack(x, np.linalg.inv(mg), g, 1, cval)

        aligned = to_model(query.image)
        qm = to_model(query.mask, cval=0.0)
        dev = self.deviation(aligned, qm[..., 0] > 0.5)
        if not full:
            return Inspection(None, None, None, registration, self.alignable, False,
                              self.reason, dev)
        back = self.to_query(dev.total, registration, qshape)
        missing, extra, _ = self.material_to_query(dev, registration, qshape)
        return Inspection(back, missing, extra, registration, self.alignable, False,
                          self.reason, dev)

    def material_to_query(self, dev: Deviation, registration: Registration, shape
                          ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(missing, extra, hole): a `Deviation`'s masks on the model grid and pose -> (H, W)
        bool on the pixels of the query of `shape` that `registration` took to the model pose
        (nearest; False outside). hole: the missing material that the query's own material
        encloses (a hole through the part, not a piece broken off its outline)."""
        g = self.config.grid
        hole = np.zeros_like(dev.missing)
        if dev.query_material is not None and dev.missing.any():
            hole = dev.missing & ndimage.binary_fill_holes(dev.query_material)
        code = (dev.missing + 2 * dev.extra.astype(np.float32) + 4 * hole)[..., None]
        mg = _grid_matrix(registration.matrix, shape, self.shape, g)
        if not np.allclose(mg, np.eye(3), atol=1e-9):
            code = _warp_stack(code, mg, g, 0, 0.0)
        code = _from_grid_nearest(np.round(code[..., 0]).astype(np.int8), shape)
        return (code & 1) > 0, (code & 2) > 0, (code & 4) > 0

    def to_query(self, grid_map: np.ndarray, registration: Registration, shape) -> np.ndarray:
        """(g, g) map on the model grid and pose -> (H, W) float32 on the pixels of the query
        of `shape` that `registration` took to the model pose (bilinear; 0 outside)."""
        g = self.config.grid
        mg = _grid_matrix(registration.matrix, shape, self.shape, g)
        x = grid_map[..., None]
        if not np.allclose(mg, np.eye(3), atol=1e-9):
            x = _warp_stack(x, mg, g, 1, 0.0)
        return _from_grid(x[..., 0], shape)
