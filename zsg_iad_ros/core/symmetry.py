"""Self-comparison: a part that repeats itself around a centre (a gear's teeth, a flange's bolt
holes, a disc) or mirrors itself across an axis (a capsule, a pin, a bar) is its own reference.

No ROS here. Where every part is a design of its own (tooth counts, sizes), neither the
references nor the stream's earlier parts show what this part should look like; but a gear with
n teeth should look the same turned by 360 / n degrees. A missing or broken tooth, a bump on one
side or an off-centre bore breaks that. Written here: no installed library (numpy, scipy,
open3d, torch) detects rotational or mirror symmetry.

1. `find_symmetry(foreground)`: the part's outline, resampled in polar coordinates around its
   centroid (the centre of any rotationally symmetric shape; with the foreground taken from
   the height map, cast shadows do not shift it); the strongest angular frequency of its
   extent whose pitch brings it back onto itself gives the order n (a disc, which matches
   under every turn, counts as continuous). `mismatch`, the area fraction that does not
   come back under one to four pitches (0 for a perfect match), says how symmetric the part
   is; None when the part is too small, fills the view, is scattered blobs, or no turn
   matches within `max_mismatch`.
   A part of order 2 at most (a capsule) is not compared under turns; given its height map,
   it may be under mirrors instead: the axes (through the centroid) across which its outline
   comes back, kept where its height map comes back too (a capsule's does, a circuit
   board's components do not: the outline alone cannot tell them apart).
2. `deviation(image, symmetry)`: each modality image (C, H, W) in polar coordinates is
   compared with itself turned by k * 360 / n (up to 8 turns), or mirrored (a mirror across
   an axis at angle phi takes the polar angle a to 2 phi - a: a reversal of the angle
   samples), within a tolerance of one sample in radius and angle (an envelope, as in a
   variation model); per comparison, the distance outside the envelope in units of the
   channel's typical distance (under mirrors: its span), combined over channels (RMS); per
   pixel the median over the turns, so a defect counts where it lies and not where the turns
   carry it. Under one or two comparisons (two mirrors, or the two turns of order 3), the
   smaller of the two and a 3 x 3 median (too few comparisons for their median to remove
   isolated noise); a single mirror cannot say which side of its axis is off and marks both.
   Back on the working grid: a (128, 128) map, 0 outside the part (`to_image` brings it to
   the image's pixels).
3. `image_score(map, foreground)`: the mean of the top 0.3 % of the part's pixels.

Everything runs on a 128 x 128 working grid (block means): on 2 cores about 15 ms for the
symmetry (about 10 ms more for mirror axes) and 10 ms per modality.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from .registration import as_hwc, to_work_grid, work_grid

__all__ = ["Symmetry", "find_symmetry", "deviation", "to_image", "image_score", "MAX_MISMATCH"]

#: working grid side (px) and polar samples per turn
GRID = 128
N_ANGLES = 256
#: outline mismatch (area fraction) up to which a part counts as rotationally symmetric.
#: The test split's gears (14-25 teeth) sit at 0.02-0.05 with their cast shadows left out
#: (height foreground; the finest teeth are a few working-grid pixels wide); a toothed
#: outline traced on the grid at 0.02-0.05 (a gear with a tooth missing stays under 0.05).
MAX_MISMATCH = 0.08
#: at most this many turns are compared per pixel
MAX_TURNS = 8
#: median outline mismatch below which every turn matches (a disc: continuous symmetry)
CONTINUOUS = 0.03
#: lowest order a part is compared under: with 2 (a bar, a capsule) a defect and the place half
#: a turn away differ alike, so the map cannot say which is off, and lighting and colour
#: schemes (a capsule's cap) are seldom symmetric under half a turn
MIN_ORDER = 3
#: highest order resolved (N_ANGLES / MAX_ORDER samples per period at least)
MAX_ORDER = 36
#: share of the foreground the largest component must hold (one part, not scattered blobs)
MIN_MAIN_SHARE = 0.8
#: mean distance of the height map outside its mirrored envelope, in units of its span on the
#: part, up to which a mirror axis counts: the test split's capsules 0-2e-5, its circuit
#: boards (symmetric outline, components placed at random) 3e-4 to 9e-3
MIRROR_CONTENT = 1e-4
#: at most this many mirror axes are compared (a capsule's long and short axes)
MAX_AXES = 2


@dataclass(frozen=True)
class Symmetry:
    """centre: (row, col) on the working grid; order: n (0 for a disc: every turn matches);
    mismatch: area fraction of the outline that does not come back under one to four turns of
    360 / n degrees (for a disc: the median over all turns), or under the mirrors; radius: the
    part's largest radius plus a margin (working-grid px); axes: mirror axes, each as s (the
    axis at s * 180 / N_ANGLES degrees from the column axis), compared where the order is not
    (below MIN_ORDER); content: how far the height map misses its mirror image under the best
    axis (`MIRROR_CONTENT`; 0 without axes)."""

    centre: Tuple[float, float]
    order: int
    mismatch: float
    radius: int
    axes: Tuple[int, ...] = ()
    content: float = 0.0

    @property
    def symmetric(self) -> bool:
        """Whether the part counts as symmetric: comparable, and its outline (and, under
        mirrors, its height map) come back within MAX_MISMATCH (MIRROR_CONTENT)."""
        return (self.comparable and self.mismatch <= MAX_MISMATCH
                and self.content <= MIRROR_CONTENT)

    @property
    def rotational(self) -> bool:
        """Whether the part is compared under turns (a disc, or order >= MIN_ORDER)."""
        return self.order == 0 or self.order >= MIN_ORDER

    @property
    def comparable(self) -> bool:
        """Whether parts of this symmetry are compared with themselves (under turns or
        mirrors)."""
        return self.rotational or bool(self.axes)

    @property
    def turns(self) -> np.ndarray:
        """The turns compared, in polar samples (fractional); none for a mirror symmetry."""
        if not self.rotational:
            return np.zeros(0)
        n = self.order or MAX_TURNS
        ks = np.arange(1, n)
        if ks.size > MAX_TURNS:
            ks = ks[np.linspace(0, ks.size - 1, MAX_TURNS).round().astype(int)]
        return ks * N_ANGLES / n


def _polar(channels: np.ndarray, centre, radius: int, cval: Optional[float] = None
           ) -> np.ndarray:
    """(C, G, G) -> (C, radius, N_ANGLES) samples at integer radii and N_ANGLES angles
    (bilinear; outside the grid the nearest pixel, or `cval`)."""
    r = np.arange(radius, dtype=np.float32)[:, None]
    a = 2 * np.pi * np.arange(N_ANGLES, dtype=np.float32) / N_ANGLES
    yy, xx = centre[0] + r * np.sin(a)[None], centre[1] + r * np.cos(a)[None]
    mode = "nearest" if cval is None else "constant"
    return np.stack([ndimage.map_coordinates(c, [yy, xx], order=1, mode=mode,
                                             cval=cval or 0.0) for c in channels])


def _turned(p: np.ndarray, shift: float) -> np.ndarray:
    """p (..., N_ANGLES) sampled `shift` samples further round (linear between samples)."""
    i = int(np.floor(shift))
    f = shift - i
    a = np.roll(p, -i, -1)
    return a if f == 0 else (1 - f) * a + f * np.roll(p, -i - 1, -1)


def _mirrored(p: np.ndarray, s: int) -> np.ndarray:
    """p (..., N_ANGLES) mirrored across the axis at s * 180 / N_ANGLES degrees: the sample at
    angle index a takes the one at s - a."""
    return np.roll(p[..., ::-1], s + 1, axis=-1)


def _outline_mismatch(fpolar: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Area-weighted mismatch of a polar mask (R, A) with itself turned by 1..A/2 samples."""
    w = np.maximum(radii, 1.0)[:, None]
    area = float((fpolar * w).sum()) or 1.0
    return np.array([float((np.abs(fpolar - np.roll(fpolar, s, 1)) * w).sum()) / area
                     for s in range(1, N_ANGLES // 2 + 1)])


def _pitch_mismatch(fpolar: np.ndarray, radii: np.ndarray, order: int) -> float:
    """Area-weighted mismatch of a polar mask with itself turned by one to four pitches of
    360 / order degrees (fractional turns), averaged."""
    w = np.maximum(radii, 1.0)[:, None]
    area = float((fpolar * w).sum()) or 1.0
    ks = range(1, min(order - 1, 4) + 1)
    return float(np.mean([(np.abs(fpolar - _turned(fpolar, k * N_ANGLES / order)) * w).sum()
                          for k in ks])) / area


def _order(polar: np.ndarray, radii: np.ndarray, m: np.ndarray) -> int:
    """Symmetry order of a polar mask, 0 for a disc (every turn matches: `m`, the outline's
    mismatch under turns of 1..A/2 samples, stays low). The outline's extent along each ray
    repeats n times round a part of order n: the strongest angular frequencies of that extent
    (2..MAX_ORDER) are the candidates, and the finest of them whose pitch brings the outline
    back about as well as the best one does is the order (a gear with an even number of teeth
    also matches itself under half a turn). Taking the order from the mismatch's first dip
    instead was one tooth off on some generated gears (docs/DETECTOR.md)."""
    if float(np.median(m)) < CONTINUOUS:
        return 0
    extent = polar.sum(axis=0)
    power = np.abs(np.fft.rfft(extent - extent.mean()))
    cands = np.arange(2, min(MAX_ORDER, power.size - 1) + 1)
    cands = cands[power[cands] >= 0.3 * power[cands].max()]
    miss = np.array([_pitch_mismatch(polar, radii, int(n)) for n in cands])
    return int(cands[miss <= 1.5 * miss.min() + 0.005].max())


def _mirror_axes(fpolar: np.ndarray, radii: np.ndarray) -> Tuple[List[int], float]:
    """Candidate mirror axes of a polar mask, best first (at most MAX_AXES, each a local
    minimum of the outline's mismatch about as low as the best one), and the best mismatch."""
    w = np.maximum(radii, 1.0)[:, None]
    area = float((fpolar * w).sum()) or 1.0
    # for a 0/1 mask |a - b| = a + b - 2ab, and sum_a P[a] P[s - a] is P's circular
    # self-convolution: every axis (0..180 degrees in half-sample steps) at once
    f = np.fft.rfft(fpolar, axis=1)
    conv = np.fft.irfft(f * f, n=N_ANGLES, axis=1)
    m = 2.0 * (area - (conv * w).sum(axis=0)) / area
    best = float(m.min())
    minima = [s for s in np.argsort(m, kind="stable")
              if m[s] <= 1.5 * best + 0.005
              and m[s] <= m[(s - 1) % N_ANGLES] and m[s] <= m[(s + 1) % N_ANGLES]]
    axes = [int(s) for s in minima[:MAX_AXES]]
    exact = [float((np.abs(fpolar - _mirrored(fpolar, s)) * w).sum()) / area for s in axes]
    return axes, min(exact) if exact else 1.0


def _span(vals: np.ndarray) -> np.ndarray:
    """(C, N) channel values on the part -> (C,) their span (5th to 95th percentile)."""
    return np.percentile(vals, 95, axis=1) - np.percentile(vals, 5, axis=1) + 1e-12


def _content_mismatch(hpolar: np.ndarray, inside: np.ndarray, s: int) -> float:
    """Mean distance of the height map (1, R, A in polar coordinates) outside its envelope
    mirrored across axis s, in units of its span on the part (`inside`, polar)."""
    d = _envelope_distance(hpolar, [lambda q: _mirrored(q, s)])[0, 0]
    return float(d[inside].mean() / _span(hpolar[:, inside])[0])


def find_symmetry(foreground: np.ndarray, max_mismatch: float = MAX_MISMATCH,
                  min_area: int = 200, height: Optional[np.ndarray] = None,
                  max_content: float = MIRROR_CONTENT) -> Optional[Symmetry]:
    """Rotational symmetry of the part in `foreground` ((H, W) bool, any size; estimated on
    the working grid), or None (too small, touching every border, or not symmetric). Where
    the order is below MIN_ORDER and `height` (the part's height map, as the foreground) is
    given, its mirror symmetry instead when the height map comes back under the mirror
    within `max_content` (`Symmetry.content`)."""
    fg = _work_mask(foreground)
    if fg.sum() < min_area:
        return None
    if fg[0].any() and fg[-1].any() and fg[:, 0].any() and fg[:, -1].any():
        return None  # fills the view: a surface, not a part
    lab, n = ndimage.label(fg)
    if n > 1:  # one part: its largest component, unless the foreground is scattered blobs
        areas = ndimage.sum(fg, lab, index=np.arange(1, n + 1))
        if areas.max() < MIN_MAIN_SHARE * fg.sum():
            return None
        fg = lab == 1 + int(np.argmax(areas))
    ys, xs = np.nonzero(fg)
    centre = (float(ys.mean()), float(xs.mean()))
    radius = int(np.ceil(np.hypot(ys - centre[0], xs - centre[1]).max())) + 6
    radii = np.arange(radius, dtype=np.float32)
    polar = _polar(fg.astype(np.float32)[None], centre, radius, cval=0.0)[0]
    m = _outline_mismatch(polar, radii)
    order = _order(polar, radii, m)
    if order == 0:
        return Symmetry(centre, 0, float(np.median(m)), radius)
    mismatch = _pitch_mismatch(polar, radii, order)
    if order < MIN_ORDER and height is not None:
        axes, outline = _mirror_axes(polar, radii)
        hpolar = _polar(_channels(height)[:1], centre, radius)
        content = min((_content_mismatch(hpolar, polar > 0.5, s) for s in axes),
                      default=np.inf)
        if content <= max_content and outline <= max_mismatch:
            return Symmetry(centre, order, outline, radius, tuple(axes), content)
    if mismatch > max_mismatch:
        return None
    return Symmetry(centre, order, mismatch, radius)


def _channels(image) -> np.ndarray:
    """(C, GRID, GRID) float32 on the working grid (NaN -> the channel's median)."""
    a = as_hwc(image)
    out = []
    for c in range(a.shape[-1]):
        x = a[..., c]
        fin = np.isfinite(x)
        if not fin.all():
            x = np.where(fin, x, np.median(x[fin]) if fin.any() else 0.0).astype(np.float32)
        out.append(to_work_grid(x, GRID) if x.shape != (GRID, GRID) else x)
    return np.stack(out)


def deviation(image, sym: Symmetry, foreground: Optional[np.ndarray] = None) -> np.ndarray:
    """(GRID, GRID) float32 map on the working grid (`to_work_grid` of the image): how far
    each pixel of the part differs from the same place turned or mirrored by the part's
    symmetry, in units of the channel's typical difference (under mirrors: of its span); 0
    outside the part (`foreground`, (H, W) bool of the image; None: within the symmetry's
    radius). `to_image` brings it back to the image."""
    a = as_hwc(image)
    fg_work = None if foreground is None else _work_mask(foreground)
    # the image sits in the working grid's top-left corner: the part must lie within it (an
    # (H, W) map sliced as if it were (C, H, W) is one row of pixels)
    h, w = a.shape[:2]
    f, _ = work_grid((h, w), GRID)
    if fg_work is not None and (fg_work[math.ceil(h / f):].any()
                                or fg_work[:, math.ceil(w / f):].any()):
        raise ValueError(f"the part's foreground lies outside the {h} x {w} px image (an (H, W) "
                         "map taken for a (C, H, W) one?)")
    p = _polar(_channels(a), sym.centre, sym.radius)  # (C, R, A)
    if fg_work is not None:
        inside = _polar(fg_work.astype(np.float32)[None], sym.centre, sym.radius,
                        cval=0.0)[0] > 0.5
    else:
        inside = np.ones(p.shape[1:], bool)
    if not inside.any():
        return np.zeros((GRID, GRID), np.float32)
    moves = [lambda q, t=float(t): _turned(q, t) for t in sym.turns]
    moves += [lambda q, s=s: _mirrored(q, s) for s in sym.axes]
    d = _envelope_distance(p, moves)  # (K, C, R, A)
    vals = p[:, inside]
    if sym.rotational:
        # the channel's typical difference inside the part (RMS over turns and pixels),
        # floored at 1e-3 of the channel's range on the part
        span = vals.max(axis=1) - vals.min(axis=1)
        typical = np.sqrt((d[:, :, inside] ** 2).mean(axis=(0, 2))) + 1e-3 * span + 1e-12
    else:
        # the channel's span on the part: under a mirror most of the part matches within the
        # envelope, so the typical difference would be the defect's own
        typical = _span(vals)
    d = np.sqrt(((d / typical[None, :, None, None]) ** 2).mean(axis=1))  # (K, R, A)
    if d.shape[0] >= 3:
        dev = _median_first_axis(d)
    else:  # isolated disagreements (noise) would stand: a 3 x 3 median removes them
        padded = np.pad(d.min(axis=0), ((1, 1), (0, 0)), mode="edge")  # radius: no wrap
        dev = ndimage.median_filter(padded, size=3, mode="wrap")[1:-1]  # angle: wraps
    dev = np.where(inside, dev, 0.0).astype(np.float32)
    # back to the working grid (the angle wraps round)
    rr, aa = _grid_in_polar(sym.centre)
    wrapped = np.concatenate([dev, dev[:, :1]], axis=1)
    out = ndimage.map_coordinates(wrapped, [rr, aa], order=1, mode="constant", cval=0.0)
    out[rr > sym.radius - 1] = 0.0
    if fg_work is not None:
        out[~fg_work] = 0.0
    return out.astype(np.float32)


def _median_first_axis(d: np.ndarray) -> np.ndarray:
    """np.median(d, axis=0), to the same bits: numpy partitions along a short first axis
    about twice as slowly as a sort does."""
    if np.isnan(d).any():
        return np.median(d, axis=0)
    s, h = np.sort(d, axis=0), d.shape[0] // 2
    return s[h] if d.shape[0] % 2 else (s[h - 1] + s[h]) / 2


@lru_cache(maxsize=4)
def _grid_in_polar(centre: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Radius and angle sample (N_ANGLES per turn) of each working-grid pixel about `centre`
    (computed once for a part's modalities)."""
    yy, xx = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    rr = np.hypot(yy - centre[0], xx - centre[1])
    aa = np.mod(np.arctan2(yy - centre[0], xx - centre[1]), 2 * np.pi)
    aa *= N_ANGLES / (2 * np.pi)
    rr.flags.writeable = aa.flags.writeable = False
    return rr, aa


def _envelope_distance(p: np.ndarray, moves) -> np.ndarray:
    """(K, C, R, A): how far p (C, R, A) lies outside the envelope of each moved copy of
    itself (`moves`: functions of a polar array). One sample of tolerance in radius and angle
    (turns are fractional, outlines and edges sampled on a grid): the envelope of the moved
    image is the moved envelope."""
    hi, lo = _within_one_sample(p, np.maximum), _within_one_sample(p, np.minimum)
    return np.stack([np.maximum(np.maximum(p - move(hi), move(lo) - p), 0.0)
                     for move in moves])


def _within_one_sample(p: np.ndarray, op) -> np.ndarray:
    """The largest (`op` np.maximum) or smallest (np.minimum) value of p (C, R, A) within one
    sample in radius (the nearest at its ends) and angle (wrapping round): scipy's 3 x 3
    maximum_filter / minimum_filter with modes ("nearest", "wrap"), to the same bits, by
    shifted copies (ten times faster on a part's polar image)."""
    m = op(p, np.concatenate([p[:, :1], p[:, :-1]], 1))
    m = op(m, np.concatenate([p[:, 1:], p[:, -1:]], 1))
    return op(op(m, np.roll(m, 1, -1)), np.roll(m, -1, -1))


def to_image(work_map: np.ndarray, shape) -> np.ndarray:
    """A (GRID, GRID) working-grid map on an image's (H, W) pixels (bilinear)."""
    h, w = shape
    f, _ = work_grid((h, w), GRID)
    iv = np.clip((np.arange(h) + 0.5) / f - 0.5, 0, GRID - 1)
    iu = np.clip((np.arange(w) + 0.5) / f - 0.5, 0, GRID - 1)
    vv, uu = np.meshgrid(iv, iu, indexing="ij")
    return ndimage.map_coordinates(work_map, [vv, uu], order=1).astype(np.float32)


def _work_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (GRID, GRID) bool on the working grid."""
    m = np.asarray(mask, dtype=bool)
    return m if m.shape == (GRID, GRID) else to_work_grid(m.astype(np.float32), GRID) > 0.5


def image_score(dev: np.ndarray, foreground: Optional[np.ndarray] = None,
                top: float = 0.003) -> float:
    """Mean of the top `top` fraction (at least 3) of the map's values on the part
    (`foreground` of the image or of the working grid)."""
    v = np.asarray(dev, np.float32)
    if foreground is not None:
        on_grid = v.shape == (GRID, GRID)
        v = v[_work_mask(foreground) if on_grid else np.asarray(foreground, bool)]
    v = v.ravel()
    if v.size == 0:
        return 0.0
    k = max(3, int(top * v.size))
    return float(np.partition(v, v.size - min(k, v.size))[-min(k, v.size):].mean())
