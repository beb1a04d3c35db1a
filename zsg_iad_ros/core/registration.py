"""Registration of a part to its references: image (rotation, scale, shift), point cloud (ICP),
plus the cheap foreground estimate and the texture test that decide whether to register at all.

No ROS here. Images are numpy (H, W) or (H, W, C) arrays, or torch (C, H, W) tensors (as the
modality images of `backbones.rgb_image` / `geometry_maps(...).as_image()` come); everything
returned is numpy.

Image registration (`register`) is a Fourier-Mellin phase correlation written here on numpy's
FFT (no installed library offers it without OpenCV or scikit-image):

1. each image is reduced to one signal on a 128 x 128 working grid (channels robustly
   standardised and averaged), its background level removed and weighted by a soft
   foreground mask, so the part and not the table or the vignette drives the match;
2. rotation and scale: the magnitude spectrum of the windowed signal, centred on the part's
   foreground centroid, is translation invariant; in log-polar coordinates a rotation and a
   scale become a shift, found by phase correlation (the `n_peaks` best peaks are kept). The
   magnitude spectrum is point symmetric, so each angle is known modulo 180 degrees: both
   candidates are tried;
3. translation: the centroids are matched, then phase correlation of the turned query with
   the reference gives the residual shift (the best one near the centroids and the best one
   anywhere); the candidate whose aligned signal has the highest normalised cross-correlation
   (NCC) wins (the shifted signal comes from the Fourier shift theorem, not a second warp);
   an optional refinement fits a parabola through the NCC of three angles;
4. quality: NCC of the aligned pair inside the reference's foreground, with
   `ok = quality >= min_quality`.

Reflections are never searched, so a mirrored part is aligned as well as a rotation allows and
its residual shows as a defect.

A `RegistrationTemplate` caches everything of a reference that does not depend on the query
(its spectrum in log-polar coordinates, its signal, foreground and centroid): build it once at
teach time, then each `register` costs a few FFTs and warps of the query.

Point clouds: unorganized (N, 3) clouds are aligned with a support-plane + principal-axis
initial guess and open3d point-to-plane ICP (`align_clouds`); organized clouds on the image grid
reuse the image registration (`rigid_from_registration` turns it into a 4x4 transform,
`region_centroid_3d` reads a model-frame region's 3D centroid in the query's cloud).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, sparse

__all__ = ["RegistrationConfig", "RegistrationTemplate", "Registration", "as_hwc",
           "frame_foreground", "work_grid", "to_work_grid", "registration_signal",
           "foreground_mask", "make_template", "register",
           "register_images", "texture_score", "is_texture", "TEXTURE_THRESHOLD",
           "layout_agreement", "LAYOUT_THRESHOLD",
           "CloudAlignment", "align_clouds", "transform_points", "rigid_from_registration",
           "region_centroid_3d", "similarity_matrix"]

#: `texture_score` above which a stream counts as a texture (chosen on the auxiliary split's
#: categories: surfaces scored >= 0.25, objects <= 0.14 with 6 parts each).
TEXTURE_THRESHOLD = 0.2
#: `layout_agreement` from which self-similar references count as one layout, not a texture:
#: about halfway between textures and boards of different layouts (at most 0.27) and boards
#: of one layout (0.73 and more; docs/DETECTOR.md, "Boards of one layout")
LAYOUT_THRESHOLD = 0.45


@dataclass(frozen=True)
class RegistrationConfig:
    """work_size: side of the square grid on which rotation and scale are estimated (px).
    n_angles: log-polar samples over 180 degrees; n_radii: log-spaced radius samples.
    allow_scale: estimate a scale in `scale_range`; otherwise scale is fixed to 1.
    whiten: exponent of the cross-power normalisation (1 = pure phase correlation; below 1
        keeps some magnitude weighting, more robust between different parts of one type).
    refine_deg: half-step of the NCC angle refinement (0 disables it).
    max_shift: largest residual shift searched once the foreground centroids are matched, as
        a fraction of the image side (parts of one type differ in length: an unbounded search
        slides a cylinder along its axis).
    n_peaks: rotation / scale peaks of the log-polar correlation tried (x2 for 180 degrees);
        with more than two candidates, or `select_by_ncc`, the NCC of the aligned pair picks.
    min_quality: NCC below which the registration is flagged as failed (`ok=False`).

    whiten, max_shift, n_peaks and allow_scale were chosen on the auxiliary split's objects
    (bottle, bracket, hex nut: pairs of different parts registered against the generator's
    poses). Quality there: the same part turned > 0.95; different parts of one type 0.30-0.96
    (median 0.65, 10 % below 0.49); parts of different types 0.31-0.70 (median 0.44); noise
    < 0.3. `min_quality` = 0.3 keeps every good part of a type and flags a failed turn, an
    empty or garbled view; it does not tell a part of a wrong type (that is the variation
    model's and the feature memory's business).
    """

    work_size: int = 128
    n_angles: int = 360
    n_radii: int = 96
    allow_scale: bool = True
    scale_range: Tuple[float, float] = (0.8, 1.25)
    whiten: float = 0.5
    refine_deg: float = 0.0
    max_shift: float = 0.03
    n_peaks: int = 3
    select_by_ncc: bool = False
    #: next-best poses kept in `Registration.alternatives` (at least 5 degrees apart)
    n_alternatives: int = 2
    min_quality: float = 0.3


# ---------------------------------------------------------------------------------------------
# input conversion

def as_hwc(image) -> np.ndarray:
    """numpy (H, W) / (H, W, C) or torch (C, H, W) / (H, W) -> (H, W, C) float32 numpy."""
    if hasattr(image, "detach"):  # torch tensor: channels first
        a = image.detach().cpu().numpy()
        if a.ndim == 3:
            a = np.moveaxis(a, 0, -1)
    else:
        a = np.asarray(image)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"image must be (H, W), (H, W, C) or a (C, H, W) tensor, got {a.shape}")
    return a


#: the MAD of N(0, 1), Phi^-1(3/4), which scipy's `median_abs_deviation(..., scale="normal")`
#: divides by
MAD_NORMAL = 0.6744897501960817


def _robust_z(x: np.ndarray) -> np.ndarray:
    """(H, W) -> (x - median) / (1.4826 MAD) over finite pixels; non-finite -> 0."""
    f = np.isfinite(x)
    if not f.any():
        return np.zeros(x.shape, np.float32)
    v = x[f]
    if v.size > 16384:  # a strided subsample gives the same median
        v = v[:: v.size // 16384]
    med = np.median(v)
    # scipy.stats.median_abs_deviation(v, scale="normal") written out, to the same bits: its
    # argument handling took longer than the two medians (a part's registrations make 8 calls)
    mad = float(np.median(np.abs(v - med)) / MAD_NORMAL)
    med = float(med)
    scale = max(mad, 1e-3 * (float(v.max()) - float(v.min())), 1e-12)
    return np.where(f, (x - med) / scale, 0.0).astype(np.float32)


def registration_signal(image) -> np.ndarray:
    """Image -> (H, W) float32: each channel robustly standardised, then averaged. Channels
    that are constant contribute nothing."""
    a = as_hwc(image)
    return np.mean([_robust_z(a[..., c]) for c in range(a.shape[-1])], axis=0).astype(
        np.float32)


# ---------------------------------------------------------------------------------------------
# foreground

def _border_ring(shape, width: int) -> np.ndarray:
    ring = np.zeros(shape, bool)
    ring[:width] = ring[-width:] = True
    ring[:, :width] = ring[:, -width:] = True
    return ring


@lru_cache(maxsize=8)
def _quadratic_basis(h: int, w: int) -> np.ndarray:
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = u / w - 0.5, v / h - 0.5
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], -1).reshape(-1, 6)


def foreground_mask(image, border: int = 6, threshold: float = 6.0,
                    min_area_frac: float = 0.0005, work_size: int = 128) -> np.ndarray:
    """Cheap foreground of an object lying on a background: (H, W) bool.

    image: (H, W[, C]) numpy or (C, H, W) torch; several channels (e.g. luminance, sensor,
    height) are combined by the largest per-channel deviation. Per channel, the background is
    a quadratic surface fitted robustly to the border ring (it follows a vignette or a tilted
    table), the noise its residual MAD; pixels more than `threshold` noise units off the
    background (after a light smoothing) are foreground. Then opening, the components of at
    least `min_area_frac` of the image (a stray washer stays), holes filled (a bore is part of
    the part). All False when nothing stands out (e.g. a texture filling the view).
    Images larger than `work_size` are estimated on a `work_size` grid (border and threshold
    in its pixels) and the mask is brought back to (H, W)."""
    a = as_hwc(image)
    h, w, nc = a.shape
    if max(h, w) > work_size:
        small = np.stack([to_work_grid(a[..., c], work_size) for c in range(nc)], -1)
        m = foreground_mask(small, border, threshold, min_area_frac, work_size)
        f, _ = work_grid((h, w), work_size)
        iv = np.clip(np.round((np.arange(h) + 0.5) / f - 0.5).astype(int), 0, work_size - 1)
        iu = np.clip(np.round((np.arange(w) + 0.5) / f - 0.5).astype(int), 0, work_size - 1)
        return m[np.ix_(iv, iu)]
    ring = _border_ring((h, w), border).ravel()
    basis = _quadratic_basis(h, w)
    dev = np.zeros((h, w), np.float32)
    for c in range(nc):
        x = a[..., c]
        fin = np.isfinite(x)
        if fin.sum() < 16:
            continue
        xs = ndimage.gaussian_filter(np.where(fin, x, np.median(x[fin])), 1.0)
        sel = ring & fin.ravel()
        if sel.sum() < 16:
            continue
        bx, y = basis[sel], xs.ravel()[sel]
        keep = np.ones(y.size, bool)
        for _ in range(2):  # robust refit: drop border pixels that belong to the part
            b = bx[keep]  # normal equations (einsum: no BLAS threads for 6 unknowns)
            coef = np.linalg.solve(np.einsum("ni,nj->ij", b, b) + 1e-6 * np.eye(6),
                                   np.einsum("ni,n->i", b, y[keep]))
            res = y - np.einsum("ni,i->n", bx, coef)
            mad = 1.4826 * float(np.median(np.abs(res[keep]))) + 1e-12
            keep = np.abs(res) < 4 * mad
        lo, hi = np.percentile(xs[fin][::4], [1, 99])
        span = float(hi - lo)
        noise = max(mad, 1e-3 * span, 1e-12)
        d = np.abs(xs - np.einsum("ni,i->n", basis, coef).reshape(h, w)) / noise
        dev = np.maximum(dev, np.where(fin, d, 0.0))
    fg = ndimage.binary_opening(dev > threshold)
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    areas = ndimage.sum(fg, lab, index=np.arange(1, n + 1))
    keep_ids = np.flatnonzero(areas >= min_area_frac * h * w) + 1
    fg = np.isin(lab, keep_ids)
    return ndimage.binary_fill_holes(fg)


def frame_foreground(rgb=None, sensor=None, points=None, **kw) -> np.ndarray:
    """Foreground of a pixel-registered frame from its raw modalities: (H, W) bool.

    rgb: (H, W, 3) uint8 or float; sensor: (H, W) float; points: organized (H, W, 3) cloud
    (its depth z is used: a part stands out from the table in height, shadows do not). The
    present ones are stacked as channels of `foreground_mask` (kw passed on)."""
    chans = []
    if rgb is not None:
        a = as_hwc(rgb)
        chans += [a[..., c] for c in range(a.shape[-1])]
    if sensor is not None:
        chans.append(as_hwc(sensor)[..., 0])
    if points is not None and np.ndim(points) == 3:
        chans.append(np.asarray(points, np.float32)[..., 2])
    if not chans:
        raise ValueError("frame_foreground needs at least one modality")
    shape = chans[0].shape
    if any(c.shape != shape for c in chans):
        raise ValueError("modalities of a registered frame must share one grid")
    return foreground_mask(np.stack(chans, -1), **kw)


# ---------------------------------------------------------------------------------------------
# transforms

def similarity_matrix(angle_deg: float, scale: float = 1.0,
                      centre_from=(0.0, 0.0), centre_to=(0.0, 0.0)) -> np.ndarray:
    """(3, 3) float64 on homogeneous pixel coordinates (u, v, 1): rotate by `angle_deg` and
    scale about `centre_from`, then move that point to `centre_to`. Positive angles turn
    +u towards +v (clockwise on screen, where v points down)."""
    t = np.deg2rad(angle_deg)
    c, s = scale * np.cos(t), scale * np.sin(t)
    m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] = np.asarray(centre_to, float) - m[:2, :2] @ np.asarray(centre_from, float)
    return m


@lru_cache(maxsize=16)
def _pixel_grid(shape) -> np.ndarray:
    """(3, H * W) homogeneous (u, v, 1) coordinates of every pixel of a grid of `shape`."""
    v, u = np.meshgrid(np.arange(shape[0], dtype=np.float64),
                       np.arange(shape[1], dtype=np.float64), indexing="ij")
    return np.stack([u.ravel(), v.ravel(), np.ones(u.size)])


def warp_channels(a: np.ndarray, m_out_to_in: np.ndarray, shape, order: int = 1,
                  cval: float = np.nan) -> np.ndarray:
    """Resample (H, W, C) `a` on an output grid of `shape`: out(u, v) = a(M (u, v, 1)),
    bilinear (`order` 1) or nearest (0); points outside the input's pixel centres get `cval`.
    The same as scipy.ndimage.affine_transform channel by channel ('constant' mode, NaN
    inputs included; to 1e-5), but all channels in one call of torch's grid_sample: 5x
    faster, and a part's aligned comparison warps 70-90 images."""
    a = np.asarray(a, np.float32)
    h, w = a.shape[:2]
    src = (np.asarray(m_out_to_in, np.float64) @ _pixel_grid(tuple(shape)))[:2]
    inside = ((src[0] >= 0) & (src[0] <= w - 1) & (src[1] >= 0) & (src[1] <= h - 1)
              ).reshape(shape[0], shape[1], 1)
    if order == 0:  # nearest pixel, halves rounded up as in scipy: a gather
        out = a[np.clip(np.floor(src[1] + 0.5).astype(int), 0, h - 1),
                np.clip(np.floor(src[0] + 0.5).astype(int), 0, w - 1)]
        return np.where(inside, out.reshape(shape[0], shape[1], -1), np.float32(cval))
    holes = np.isnan(a)
    if holes.any():
        # bilinear: an output is NaN where any of its four input pixels is, as in scipy (the
        # holes' outlines matter to the aligned comparison: measured on the shifted-cap test)
        hp = np.pad(holes, ((0, 1), (0, 1), (0, 0)))
        rows = np.clip(np.floor(src[1]).astype(int), 0, max(h - 2, 0))
        cols = np.clip(np.floor(src[0]).astype(int), 0, max(w - 2, 0))
        spoilt = (hp[:-1, :-1] | hp[1:, :-1] | hp[:-1, 1:] | hp[1:, 1:])[rows, cols]
        spoilt = spoilt.reshape(shape[0], shape[1], -1)
        a = np.where(holes, 0.0, a).astype(np.float32)
    else:
        spoilt = None
    # align_corners: -1 and 1 are the centres of the first and last pixels; the grid's two
    # coordinates written in place (a stack and a cast took longer)
    grid = np.empty((1, shape[0], shape[1], 2), np.float32)
    for i, side in enumerate((w, h)):
        grid[0, ..., i] = (src[i] * (2.0 / max(side - 1, 1)) - 1.0).reshape(shape[0], shape[1])
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
    out = F.grid_sample(x, torch.from_numpy(grid), mode="bilinear", padding_mode="zeros",
                        align_corners=True)[0].numpy().transpose(1, 2, 0)
    if spoilt is not None:
        out = np.where(spoilt, np.float32(np.nan), out)
    # np.where, not a masked assignment: 4x faster, and it leaves a contiguous array
    return np.where(inside, out, np.float32(cval))


def _warp(a: np.ndarray, m_out_to_in: np.ndarray, shape, order: int, cval: float):
    """Resample (H, W) `a` on an output grid of `shape`: out(u, v) = a(M (u, v, 1))."""
    return warp_channels(np.asarray(a)[..., None], m_out_to_in, shape, order, cval)[..., 0]


@dataclass
class Registration:
    """Where a query image lies relative to a reference (or model pose).

    matrix: (3, 3) float64 mapping query pixel (u, v, 1) to reference pixel coordinates.
    angle_deg, scale: the rotation (see `similarity_matrix`) and scale in `matrix`.
    shift: (tu, tv) translation part of `matrix` (px).
    quality: NCC in [-1, 1] of the aligned pair inside the foreground.
    ok: quality >= the configured minimum; when False do not trust the alignment.
    shape: (H, W) of the reference grid; query_shape: (H, W) of the query.
    alternatives: the next-best candidate poses (`register`), best first, each a
    Registration of its own: a near-symmetric part (a capsule turned by 180 degrees, a gear
    one tooth on) matches in several poses with almost the same NCC, and a caller comparing
    the aligned images can take the pose in which the part looks most normal.
    """

    matrix: np.ndarray
    angle_deg: float
    scale: float
    shift: Tuple[float, float]
    quality: float
    ok: bool
    shape: Tuple[int, int]
    query_shape: Tuple[int, int]
    alternatives: tuple = ()

    @classmethod
    def identity(cls, shape, quality: float = float("nan"), ok: bool = False) -> "Registration":
        return cls(np.eye(3), 0.0, 1.0, (0.0, 0.0), quality, ok, tuple(shape), tuple(shape))

    def map_uv(self, uv) -> np.ndarray:
        """(N, 2) query pixel (u, v) -> (N, 2) reference pixel (u, v)."""
        uv = np.asarray(uv, float).reshape(-1, 2)
        return uv @ self.matrix[:2, :2].T + self.matrix[:2, 2]

    def inverse(self) -> "Registration":
        """The registration of the reference onto the query."""
        mi = np.linalg.inv(self.matrix)
        return Registration(mi, -self.angle_deg, 1.0 / self.scale, (mi[0, 2], mi[1, 2]),
                            self.quality, self.ok, self.query_shape, self.shape)

    def warp(self, image, order: int = 1, cval: float = np.nan) -> np.ndarray:
        """Query image -> the reference grid: (H, W) or (H, W, C) float32 (torch (C, H, W) in,
        (H, W, C) out). Pixels coming from outside the query get `cval` (NaN by default)."""
        return self._resample(image, np.linalg.inv(self.matrix), self.shape, order, cval)

    def warp_back(self, image, order: int = 1, cval: float = np.nan) -> np.ndarray:
        """Reference-grid image (a map) -> the query grid, the inverse of `warp`."""
        return self._resample(image, self.matrix, self.query_shape, order, cval)

    def valid(self) -> np.ndarray:
        """(H, W) bool on the reference grid: pixels that come from inside the query."""
        ones = np.ones(self.query_shape, np.float32)
        return self.warp(ones, order=0, cval=0.0) > 0.5

    @staticmethod
    def _resample(image, m, shape, order, cval):
        squeeze = not hasattr(image, "detach") and np.asarray(image).ndim == 2
        a = as_hwc(image)
        if a.dtype == bool:
            a = a.astype(np.float32)
        out = warp_channels(a, m, shape, order, cval)
        return out[..., 0] if squeeze else out


# ---------------------------------------------------------------------------------------------
# Fourier-Mellin machinery

@lru_cache(maxsize=8)
def _hann2(n: int) -> np.ndarray:
    w = np.hanning(n).astype(np.float32)
    return np.outer(w, w)


@lru_cache(maxsize=8)
def _highpass(n: int) -> np.ndarray:
    # Reddy & Chatterji's emphasis filter on the centred spectrum: damps the low frequencies
    # that carry the window and the part's overall blob, keeps the edges' orientation
    f = np.fft.fftshift(np.fft.fftfreq(n))
    x = np.outer(np.cos(np.pi * f), np.cos(np.pi * f))
    return ((1.0 - x) * (2.0 - x)).astype(np.float32)


@lru_cache(maxsize=8)
def _log_polar_coords(n: int, n_angles: int, n_radii: int):
    """Sample coordinates (2, n_angles, n_radii) on an (n, n) centred spectrum and the log
    radius step. Angles cover [0, 180) degrees: the magnitude spectrum is point symmetric."""
    r_max = n / 2.0 - 1.0
    r_min = 2.0
    step = np.log(r_max / r_min) / (n_radii - 1)
    r = r_min * np.exp(step * np.arange(n_radii))
    phi = np.pi * np.arange(n_angles) / n_angles
    c = n / 2.0
    rows = c + r[None, :] * np.sin(phi)[:, None]
    cols = c + r[None, :] * np.cos(phi)[:, None]
    return np.stack([rows, cols]).astype(np.float32), float(step)


@lru_cache(maxsize=8)
def _log_polar_operator(n: int, n_angles: int, n_radii: int) -> sparse.csr_matrix:
    """(n_angles * n_radii, n * n) sparse matrix of the bilinear samples at
    `_log_polar_coords` of a flattened (n, n) spectrum: what
    `ndimage.map_coordinates(x, coords, order=1, prefilter=False)` computes (the same float32
    values, `test_log_polar_samples_are_map_coordinates`), in a tenth of its time (1.1 ms
    a call, one per registration)."""
    coords, _ = _log_polar_coords(n, n_angles, n_radii)
    r, c = (coords[i].astype(np.float64).ravel() for i in (0, 1))
    r0, c0 = np.floor(r), np.floor(c)
    fr, fc = r - r0, c - c0
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    k = np.arange(r.size)
    rows, cols, vals = [], [], []
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                       (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)  # outside: 'constant' mode's 0
        rows.append(k[ok])
        cols.append((rr * n + cc)[ok])
        vals.append(wt[ok])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(r.size, n * n))


def _subpixel_peak(r: np.ndarray, region: Optional[np.ndarray] = None
                   ) -> Tuple[float, float, float]:
    """Peak of a circular correlation surface (H, W) with a parabolic fit per axis.
    Returns (d_row, d_col, height) with shifts wrapped to [-H/2, H/2)."""
    h, w = r.shape
    rr = r if region is None else np.where(region, r, -np.inf)
    i, j = np.unravel_index(int(np.argmax(rr)), r.shape)

    def fit(a, b, c):
        den = a - 2 * b + c
        return 0.0 if abs(den) < 1e-12 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

    di = fit(r[(i - 1) % h, j], r[i, j], r[(i + 1) % h, j])
    dj = fit(r[i, (j - 1) % w], r[i, j], r[i, (j + 1) % w])
    y, x = i + di, j + dj
    y = y - h if y >= h / 2 else y
    x = x - w if x >= w / 2 else x
    return float(y), float(x), float(r[i, j])


def _cross_power(fa: np.ndarray, fb: np.ndarray, whiten: float) -> np.ndarray:
    """Normalised cross-power spectrum of two rfft2 spectra (a relative to b)."""
    x = fa * np.conj(fb)
    mag = np.abs(x) ** whiten
    return x / (mag + max(1e-9 * float(mag.max()), 1e-20))


def _ncc(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    """Normalised cross-correlation of a and b over mask m (bool); NaN pixels excluded."""
    return _NccWith(b, m)(a)


class _NccWith:
    """`_ncc(a, b, m)` of many images `a` against one `b` and `m`: b's side is taken once
    (a registration correlates a dozen shifted queries with its reference), to the same
    bits."""

    def __init__(self, b: np.ndarray, m: np.ndarray):
        self.b = b
        self.m, self.y, self.yy = self._side(b, m & np.isfinite(b))

    @staticmethod
    def _side(b: np.ndarray, m: np.ndarray) -> tuple:
        """(mask, b's centred values in it, their sum of squares)."""
        y = b[m].astype(np.float64)
        y = y - y.mean() if y.size else y
        return m, y, (y * y).sum()

    def __call__(self, a: np.ndarray) -> float:
        m, y, yy = self.m, self.y, self.yy
        if not np.isfinite(a[m]).all():  # NaN pixels of `a` leave the mask: b's side anew
            m, y, yy = self._side(self.b, m & np.isfinite(a))
        if m.sum() < 16:
            return float("nan")
        x = a[m].astype(np.float64)
        x = x - x.mean()
        den = np.sqrt((x * x).sum() * yy)
        return float((x * y).sum() / den) if den > 0 else 0.0


def work_grid(shape, n: int) -> Tuple[float, np.ndarray]:
    """Pixel step f of the square (n, n) working grid (full px per work px) and the (3, 3)
    matrix taking full-resolution (u, v, 1) to work coordinates (pixel areas aligned; the
    image sits in the top-left corner, padded to a square)."""
    f = max(shape) / n
    k = np.array([[1 / f, 0, 0.5 / f - 0.5], [0, 1 / f, 0.5 / f - 0.5], [0, 0, 1.0]])
    return f, k


def to_work_grid(x: np.ndarray, n: int, order: int = 1) -> np.ndarray:
    """(H, W) -> (n, n) float32 on the working grid: block mean when the sizes divide, else
    area-aligned resampling; a non-square image is padded with zeros."""
    h, w = x.shape
    if h == w and h % n == 0:
        k = h // n
        # sum of the k*k strided sub-grids: much faster than a reduction over strided axes
        acc = np.zeros((n, n), np.float32)
        for i in range(k):
            for j in range(k):
                acc += x[i::k, j::k]
        return acc / (k * k)
    f = max(h, w) / n
    hh, ww = max(1, round(h / f)), max(1, round(w / f))
    y = ndimage.zoom(x, (hh / h, ww / w), order=order, grid_mode=True, mode="nearest")
    out = np.zeros((n, n), np.float32)
    out[:y.shape[0], :y.shape[1]] = y[:n, :n]
    return out


@dataclass
class _Prepared:
    """One image ready for registration, on the working grid.

    work: (n, n) float32 signal (background removed, foreground-weighted); mask: (n, n) bool;
    centroid: (u, v) of the foreground on the working grid; lp: (n_angles, n_radii) float32
    log-polar magnitude spectrum; shape: (H, W) of the full-resolution image."""

    work: np.ndarray
    mask: np.ndarray
    centroid: np.ndarray
    lp: np.ndarray
    shape: Tuple[int, int]


def _work_image(a: np.ndarray, n: int) -> np.ndarray:
    """(H, W, C) image -> (n, n, C) on the working grid; invalid pixels (depth dropouts) take
    their channel's median first."""
    if not np.isfinite(a).all():
        a = a.copy()
        for c in range(a.shape[-1]):
            bad = ~np.isfinite(a[..., c])
            a[..., c][bad] = np.median(a[..., c][~bad]) if not bad.all() else 0.0
    return np.stack([to_work_grid(a[..., c], n) for c in range(a.shape[-1])], -1)


def _prepare(image, mask: Optional[np.ndarray], cfg: RegistrationConfig) -> _Prepared:
    a = as_hwc(image)
    h, w = a.shape[:2]
    n = cfg.work_size
    small = _work_image(a, n)
    x = registration_signal(small)
    if mask is None:
        m = foreground_mask(small)
    else:
        m = to_work_grid(np.asarray(mask, np.float32), n) > 0.5
    if m.sum() < 0.002 * n * n:  # nothing stands out: register the whole view
        m = np.ones((n, n), bool)
    else:  # the part is the largest component: clutter at the border must not move its centre
        lab, k = ndimage.label(m)
        if k > 1:
            m = lab == (1 + int(np.argmax(ndimage.sum(m, lab, index=np.arange(1, k + 1)))))
    grown = ndimage.binary_dilation(m, iterations=2)
    bg = ~grown
    level = float(np.median(x[bg])) if bg.sum() > 64 else float(np.median(x))
    soft = ndimage.gaussian_filter(grown.astype(np.float32), 1.0)
    work = ((x - level) * soft).astype(np.float32)
    v, u = np.nonzero(m)
    centroid = np.array([u.mean(), v.mean()])
    # centre the part before windowing, so the window cuts the same part of every image
    roll = (int(round(n / 2 - centroid[1])), int(round(n / 2 - centroid[0])))
    centred = np.roll(work, roll, axis=(0, 1)) * _hann2(n)
    mag = np.abs(np.fft.fftshift(np.fft.fft2(centred))) * _highpass(n)
    lp = _log_polar_operator(n, cfg.n_angles, cfg.n_radii) @ np.log1p(mag).ravel()
    return _Prepared(work, m, centroid, lp.reshape(cfg.n_angles, cfg.n_radii).astype(np.float32),
                     (h, w))


@dataclass
class RegistrationTemplate:
    """Everything of one reference image that registration needs, computed once (teach time).

    prepared: the reference on the working grid (signal, foreground, centroid, spectrum);
    work_fft: rfft2 of its signal; lp_fft: rfft2 of its log-polar spectrum; ncc_mask: (n, n)
    bool where the quality is measured (the foreground grown by 2 work px)."""

    prepared: _Prepared
    work_fft: np.ndarray
    lp_fft: np.ndarray
    ncc_mask: np.ndarray
    config: RegistrationConfig = field(default_factory=RegistrationConfig)

    @property
    def shape(self) -> Tuple[int, int]:
        """(H, W) of the reference image."""
        return self.prepared.shape


def make_template(reference, mask: Optional[np.ndarray] = None,
                  config: Optional[RegistrationConfig] = None) -> RegistrationTemplate:
    """Precompute a reference for `register`. reference: (H, W[, C]) numpy or (C, H, W)
    torch; mask: its (H, W) bool foreground (estimated when None)."""
    cfg = config or RegistrationConfig()
    p = _prepare(reference, mask, cfg)
    return RegistrationTemplate(p, np.fft.rfft2(p.work), np.fft.rfft2(p.lp),
                                ndimage.binary_dilation(p.mask, iterations=2), cfg)


@lru_cache(maxsize=16)
def _shift_window(n: int, radius: float) -> np.ndarray:
    """(n, n) bool: circular shifts within `radius` px of zero."""
    f = np.fft.fftfreq(n, 1.0 / n)
    return (f[:, None] ** 2 + f[None, :] ** 2) <= radius * radius


def _translations(moving: np.ndarray, fixed_fft: np.ndarray, whiten: float,
                  radii: Sequence[float]):
    """Shifts (du, dv, peak), one per search radius (px), that move `moving` onto the image
    of `fixed_fft`, from one correlation surface."""
    fm = np.fft.rfft2(moving)
    r = np.fft.irfft2(_cross_power(fixed_fft, fm, whiten), s=moving.shape)
    out = []
    for rad in radii:
        dv, du, peak = _subpixel_peak(r, _shift_window(moving.shape[0], rad))
        out.append((du, dv, peak))
    return out, fm


@lru_cache(maxsize=8)
def _freqs(n: int):
    return np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]


def _fourier_shift(fm: np.ndarray, du: float, dv: float, n: int) -> np.ndarray:
    """The (n, n) image of rfft2 spectrum `fm` moved by (du, dv) px (circularly, subpixel):
    one inverse FFT instead of a second resampling (the phase ramp is separable)."""
    fv, fu = _freqs(n)
    return np.fft.irfft2(fm * np.exp(-2j * np.pi * fv * dv) * np.exp(-2j * np.pi * fu * du),
                         s=(n, n))


def register(query, template: RegistrationTemplate, mask: Optional[np.ndarray] = None,
             fixed_angle: Optional[float] = None) -> Registration:
    """Register a query image to a reference template.

    query: (H, W[, C]) numpy or (C, H, W) torch, the same kind of image as the reference
    (its size may differ). mask: its (H, W) bool foreground (estimated when None).
    fixed_angle: only this turn [degrees] at the images' own scale, the shift alone searched
    (how well a part matches without turning it).
    Returns a `Registration` whose matrix maps query pixels to reference pixels."""
    cfg = template.config
    q = _prepare(query, mask, cfg)
    ref = template.prepared
    n = cfg.work_size
    fq, kq = work_grid(q.shape, n)
    fr, kr = work_grid(ref.shape, n)
    if not (np.ptp(q.work) > 0 and np.ptp(ref.work) > 0):
        # a blank image (e.g. a degenerate scan projection) has nothing to register on
        return Registration(np.linalg.inv(kr) @ kq, 0.0, fr / fq, (0.0, 0.0), -1.0, False,
                            tuple(ref.shape), tuple(q.shape))

    if fixed_angle is not None:  # at the images' own scale (work-grid scale fq / fr)
        peaks = [(float(fixed_angle), fq / fr)]
    else:
        # rotation and scale: the shift between the log-polar spectra
        coords, step = _log_polar_coords(n, cfg.n_angles, cfg.n_radii)
        r = np.fft.irfft2(_cross_power(template.lp_fft, np.fft.rfft2(q.lp), cfg.whiten),
                          s=q.lp.shape)
        cols = np.fft.fftfreq(cfg.n_radii, 1.0 / cfg.n_radii)
        # a part that looks larger has a smaller spectrum: log-radius shift d <-> work-grid scale
        # exp(-d step); the full-resolution scale is that times fr / fq
        if cfg.allow_scale:
            hi, lo = -np.log(np.asarray(cfg.scale_range) * fq / fr) / step
            allowed = (cols >= lo - 0.5) & (cols <= hi + 0.5)
        else:
            allowed = np.abs(cols + np.log(fq / fr) / step) <= 0.5
        region = np.broadcast_to(allowed[None, :], r.shape).copy()
        peaks = []
        for _ in range(cfg.n_peaks):
            d_ang, d_rad, _ = _subpixel_peak(r, region)
            peaks.append((180.0 * d_ang / cfg.n_angles,  # the spectrum turns with the image
                          float(np.exp(-d_rad * step)) if cfg.allow_scale else fq / fr))
            # suppress this peak's neighbourhood (circularly) before looking for the next one
            ia, ir = int(round(d_ang)) % r.shape[0], int(round(d_rad)) % r.shape[1]
            region[np.ix_(np.arange(ia - 3, ia + 4) % r.shape[0],
                          np.arange(ir - 3, ir + 4) % r.shape[1])] = False

    with_ref = _NccWith(ref.work, template.ncc_mask)

    def place(moved, m):
        """Phase-correlation shift of a turned signal: the best one near the matched
        centroids and the best one anywhere (when the centroids mislead). Returns
        [(correlation peak, NCC, matrix)]; the NCC is taken on the signal shifted in the
        Fourier domain, without a second resampling (once where both shifts are one)."""
        out, scored = [], {}
        shifts, fm = _translations(moved, template.work_fft, cfg.whiten,
                                   (cfg.max_shift * n, n / 2))
        for du, dv, peak in shifts:
            if (du, dv) not in scored:
                scored[du, dv] = with_ref(_fourier_shift(fm, du, dv, n))
            out.append((peak, scored[du, dv],
                        similarity_matrix(0.0, 1.0, (0, 0), (du, dv)) @ m))
        return out

    def turned(angle, s_w):
        """The query turned by angle and by angle + 180 about the matched centroids: the
        second from the first by a flip and a Fourier shift (a turn by 180 degrees about c
        is p -> 2c - p), so one resampling serves both."""
        m = similarity_matrix(angle, s_w, q.centroid, ref.centroid)
        moved = _warp(q.work, np.linalg.inv(m), (n, n), 1, 0.0)
        d = 2 * ref.centroid - (n - 1)
        flipped = _fourier_shift(np.fft.rfft2(moved[::-1, ::-1]), d[0], d[1], n)
        m180 = similarity_matrix(180.0, 1.0, ref.centroid, ref.centroid) @ m
        return [(moved, m, angle), (flipped, m180, angle + 180.0)]

    def ncc(m):
        return with_ref(_warp(q.work, np.linalg.inv(m), (n, n), 1, np.nan))

    # the magnitude spectrum cannot tell a turn by 180 degrees apart: try both
    turns = 2 if fixed_angle is None else 1
    cands = [c + (a, s_w) for a0, s_w in peaks for moved, m, a in turned(a0, s_w)[:turns]
             for c in place(moved, m)]
    if cfg.select_by_ncc or len(cands) > 4:  # the best aligned pair decides
        _, _, m_w, angle, s_w = max(cands, key=lambda c: -2.0 if np.isnan(c[1]) else c[1])
    else:  # one spectrum peak: the better shift near the centroids decides
        _, _, m_w, angle, s_w = max(cands[::2], key=lambda c: c[0])
    quality = ncc(m_w)
    if cfg.refine_deg > 0 and np.isfinite(quality):
        # parabola through the NCC at angle - d, angle, angle + d (about the matched centroid)
        d = cfg.refine_deg
        c = m_w[:2, :2] @ q.centroid + m_w[:2, 2]

        def turned(da):
            return similarity_matrix(da, 1.0, c, c) @ m_w

        qm, qp = ncc(turned(-d)), ncc(turned(d))
        den = qm - 2 * quality + qp
        if np.isfinite(den) and den < 0:
            delta = float(np.clip(0.5 * (qm - qp) / den, -1.0, 1.0)) * d
            moved, m2, _ = turned(angle + delta, s_w)[0]
            _, _, m2 = place(moved, m2)[0]
            q2 = ncc(m2)
            if q2 >= quality:
                quality, m_w, angle = q2, m2, angle + delta

    def full_res(m, angle, quality, alternatives=()):
        # back to full-resolution pixels: reference px = K_r^-1 M_w K_q query px
        full = np.linalg.inv(kr) @ m @ kq
        quality = float(quality) if np.isfinite(quality) else -1.0
        scale = float(np.sqrt(abs(np.linalg.det(full[:2, :2]))))
        return Registration(full, float(((angle + 180.0) % 360.0) - 180.0), scale,
                            (float(full[0, 2]), float(full[1, 2])), quality,
                            bool(quality >= cfg.min_quality), tuple(ref.shape),
                            tuple(q.shape), tuple(alternatives))

    # the next-best candidates at other angles (by their NCC, not refined)
    others, seen = [], [angle]
    for _, score, m, a, _ in sorted(cands, key=lambda c: -2.0 if np.isnan(c[1]) else -c[1]):
        if len(others) == cfg.n_alternatives:
            break
        if all(abs((a - b + 180.0) % 360.0 - 180.0) > 5.0 for b in seen):
            seen.append(a)
            others.append(full_res(m, a, score))
    return full_res(m_w, angle, quality, others)


def register_images(query, reference, query_mask=None, reference_mask=None,
                    config: Optional[RegistrationConfig] = None) -> Registration:
    """`register(query, make_template(reference))` in one call (no caching)."""
    return register(query, make_template(reference, reference_mask, config), query_mask)


# ---------------------------------------------------------------------------------------------
# texture test

def texture_score(image, tile: int = 32, tol: Tuple[float, float, float] = (2.0, 0.7, 0.7),
                  quantile: float = 10.0) -> float:
    """Stationarity of one image in [0, 1]: high for a texture filling the view (fabric, tile,
    cast surface), low for an object on a background or a board with components.

    The image (channels averaged after robust standardisation) is cut into tiles; each tile is
    described by its level and its log energy in a fine (1-4 px) and a coarse (4-16 px) band.
    A tile resembles another when every descriptor differs by less than `tol`. In a texture
    every tile resembles most others; an object's tiles (its edges, its body) resemble few.
    The score is the `quantile`-th percentile over tiles of the fraction of tiles each one
    resembles."""
    g = registration_signal(image)
    g1 = ndimage.gaussian_filter(g, 1.0)
    g4 = ndimage.gaussian_filter(g, 4.0)
    g16 = ndimage.gaussian_filter(g, 16.0)
    h, w = g.shape
    ny, nx = h // tile, w // tile
    if ny * nx < 4:
        raise ValueError(f"image {g.shape} too small for tiles of {tile} px")

    def tiles(x):
        return x[:ny * tile, :nx * tile].reshape(ny, tile, nx, tile).mean((1, 3)).ravel()

    desc = np.stack([tiles(g4), 0.5 * np.log(tiles((g1 - g4) ** 2) + 1e-4),
                     0.5 * np.log(tiles((g4 - g16) ** 2) + 1e-4)], 1)
    d = np.max(np.abs(desc[:, None, :] - desc[None, :, :]) / np.asarray(tol), -1)
    return float(np.percentile((d < 1.0).mean(1), quantile))


def layout_agreement(references: Sequence, work_size: int = 128, sigma: float = 2.0) -> float:
    """How far references share one layout, in [-1, 1]: the lowest over consecutive pairs
    (each reference registered onto the next on the whole view) of the normalised
    cross-correlation of their fine structure (the registration signal on a `work_size` grid
    minus its Gaussian blur of `sigma` px), where both cover the view. Every pair must agree:
    a periodic weave can register onto one other sample now and then. Written here: it reuses
    this module's registration."""
    n = len(references)
    if n < 2:
        raise ValueError("layout_agreement needs 2 or more references")
    cfg = RegistrationConfig(work_size=work_size)
    small = [_work_image(as_hwc(r), work_size) for r in references]
    ones = np.ones((work_size, work_size), bool)
    fine = [g - ndimage.gaussian_filter(g, sigma)
            for g in (registration_signal(x) for x in small)]
    agree = []
    for i in range(n if n > 2 else 1):  # two references: one pair
        j = (i + 1) % n
        reg = register(small[i], make_template(small[j], ones, cfg), ones)
        inside = ndimage.binary_erosion(reg.valid(), iterations=2)
        agree.append(_ncc(reg.warp(fine[i]), fine[j], inside))
    agree = [a if np.isfinite(a) else 0.0 for a in agree]
    return float(min(agree))


def is_texture(references: Sequence, threshold: float = TEXTURE_THRESHOLD
               ) -> Tuple[bool, float]:
    """Whether a stream's references are a texture (unaligned scoring) or objects (register).
    references: images as for `texture_score`. Self-similar references (`texture_score` at
    `threshold` or above) are a texture unless, 2 or more, they share one layout
    (`layout_agreement` at LAYOUT_THRESHOLD or above: a board of one product is self-similar
    too, and is compared in register). Returns (decision, median texture score)."""
    if len(references) == 0:
        raise ValueError("no references")
    s = float(np.median([texture_score(r) for r in references]))
    texture = s >= threshold
    if texture and len(references) >= 2:
        texture = layout_agreement(references) < LAYOUT_THRESHOLD
    return texture, s


# ---------------------------------------------------------------------------------------------
# point clouds

@dataclass
class CloudAlignment:
    """Rigid alignment of a query cloud to a reference cloud.

    transform: (4, 4) float64 mapping query-frame points to the reference frame.
    fitness: fraction of query points with a reference point within the correspondence
        distance (open3d's definition); inlier_rmse: RMS distance of those (m).
    ok: fitness above the configured minimum.
    """

    transform: np.ndarray
    fitness: float
    inlier_rmse: float
    ok: bool

    def inverse_transform(self) -> np.ndarray:
        """(4, 4) mapping reference-frame points to the query frame."""
        return np.linalg.inv(self.transform)


def transform_points(transform: np.ndarray, points) -> np.ndarray:
    """Apply a (4, 4) transform to (N, 3) or (3,) points; returns float64 of the same shape."""
    p = np.asarray(points, float)
    out = p.reshape(-1, 3) @ transform[:3, :3].T + transform[:3, 3]
    return out.reshape(p.shape)


def _finite_points(points) -> np.ndarray:
    p = np.asarray(points, np.float64).reshape(-1, 3)
    return p[np.isfinite(p).all(1)]


def _plane_frame(pts: np.ndarray, dist: float, up: Optional[np.ndarray] = None):
    """Support plane of a cloud (RANSAC) and a frame on it.

    Returns (R (3, 3) whose rows are in-plane axis 1, axis 2, normal; origin (3,) = centroid
    of the points above the plane; part points above the plane (K, 3))."""
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    (a, b, c, d), inliers = pc.segment_plane(distance_threshold=dist, ransac_n=3,
                                             num_iterations=200)
    nrm = np.array([a, b, c]) / np.linalg.norm([a, b, c])
    off = d / np.linalg.norm([a, b, c])
    signed = pts @ nrm + off
    # orient the normal towards the part (the side with the points off the plane)
    outside = np.abs(signed) > 2 * dist
    if outside.any() and np.median(signed[outside]) < 0:
        nrm, signed = -nrm, -signed
    part = pts[signed > 2 * dist]
    if part.shape[0] < 10:  # no part above a plane: use the whole cloud
        part = pts
    origin = part.mean(0)
    q = part - origin
    q = q - np.outer(q @ nrm, nrm)
    evals, evecs = np.linalg.eigh(q.T @ q)
    e1 = evecs[:, -1]
    e2 = np.cross(nrm, e1)
    return np.stack([e1, e2, nrm]), origin, part


def align_clouds(query, reference, voxel: Optional[float] = None, n_init_angles: int = 12,
                 min_fitness: float = 0.6, max_points: int = 20000) -> CloudAlignment:
    """Rigidly align an unorganized query cloud to a reference cloud (both (N, 3) metres,
    NaN rows ignored): support plane + principal in-plane axis as the initial guess, then
    open3d point-to-plane ICP.

    The principal axis is ambiguous for round parts and its sign always is, so the in-plane
    angle is tried at `n_init_angles` steps (about the plane normal, proper rotations only: a
    mirrored part is never aligned as a normal one) and the best ICP fitness wins.
    voxel: downsampling size (m), default 1/100 of the reference's extent."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    qp, rp = _finite_points(query), _finite_points(reference)
    if qp.shape[0] < 30 or rp.shape[0] < 30:
        raise ValueError("both clouds need at least 30 finite points")
    ext = float(np.linalg.norm(rp.max(0) - rp.min(0)))
    voxel = voxel or ext / 100.0

    def cloud(p):
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
        pc = pc.voxel_down_sample(voxel)
        if len(pc.points) > max_points:
            pc = pc.random_down_sample(max_points / len(pc.points))
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=4 * voxel, max_nn=30))
        return pc

    qc, rc = cloud(qp), cloud(rp)
    qd, rd = np.asarray(qc.points), np.asarray(rc.points)
    rq, oq, _ = _plane_frame(qd, 1.5 * voxel)
    rr, orr, _ = _plane_frame(rd, 1.5 * voxel)
    crit = reg.ICPConvergenceCriteria(max_iteration=30)
    best = None
    for k in range(n_init_angles):
        t = 2 * np.pi * k / n_init_angles
        spin = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        # query frame -> plane coordinates -> spin about the normal -> reference frame
        rot = rr.T @ spin @ rq
        init = np.eye(4)
        init[:3, :3] = rot
        init[:3, 3] = orr - rot @ oq
        coarse = reg.registration_icp(qc, rc, 4 * voxel, init,
                                      reg.TransformationEstimationPointToPlane(), crit)
        key = (coarse.fitness, -coarse.inlier_rmse)
        if best is None or key > (best.fitness, -best.inlier_rmse):
            best = coarse
    fine = reg.registration_icp(qc, rc, 1.5 * voxel, best.transformation,
                                reg.TransformationEstimationPointToPlane(), crit)
    return CloudAlignment(np.asarray(fine.transformation), float(fine.fitness),
                          float(fine.inlier_rmse), bool(fine.fitness >= min_fitness))


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(4, 4) proper rigid transform minimising |R src + t - dst| (no reflection)."""
    cs, cd = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    t = np.eye(4)
    t[:3, :3] = rot
    t[:3, 3] = cd - rot @ cs
    return t


def rigid_from_registration(registration: Registration, query_points, reference_points,
                            mask: Optional[np.ndarray] = None, max_pairs: int = 4000,
                            tol: float = 0.002) -> CloudAlignment:
    """4x4 transform implied by an image registration of ORGANIZED clouds.

    query_points (h, w, 3), reference_points (H, W, 3) on their image grids (NaN invalid);
    mask: (H, W) bool reference-grid pixels to use (e.g. the part's foreground). Pixel pairs
    related by the registration give 3D correspondences; a trimmed Kabsch fit (two rounds,
    dropping pairs farther than 3x the median residual) gives the transform; fitness is the
    fraction of pairs within `tol` metres."""
    ref = np.asarray(reference_points, np.float64)
    H, W = ref.shape[:2]
    vv, uu = np.mgrid[0:H, 0:W]
    sel = np.isfinite(ref).all(-1)
    if mask is not None:
        sel &= np.asarray(mask, bool)
    idx = np.flatnonzero(sel.ravel())
    if idx.size > max_pairs:
        idx = idx[np.linspace(0, idx.size - 1, max_pairs).astype(int)]
    uv_r = np.stack([uu.ravel()[idx], vv.ravel()[idx]], 1).astype(float)
    uv_q = registration.inverse().map_uv(uv_r)
    qi = np.round(uv_q).astype(int)
    q = np.asarray(query_points, np.float64)
    inside = (qi[:, 0] >= 0) & (qi[:, 0] < q.shape[1]) & (qi[:, 1] >= 0) & (qi[:, 1] < q.shape[0])
    src = np.full((idx.size, 3), np.nan)
    src[inside] = q[qi[inside, 1], qi[inside, 0]]
    dst = ref.reshape(-1, 3)[idx]
    ok = np.isfinite(src).all(1)
    src, dst = src[ok], dst[ok]
    if src.shape[0] < 10:
        return CloudAlignment(np.eye(4), 0.0, float("nan"), False)
    keep = np.ones(src.shape[0], bool)
    for _ in range(2):
        t = _kabsch(src[keep], dst[keep])
        res = np.linalg.norm(transform_points(t, src) - dst, axis=1)
        keep = res <= max(3 * float(np.median(res)), 1e-6)
    inl = res <= tol
    rmse = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else float("nan")
    fitness = float(inl.mean())
    return CloudAlignment(t, fitness, rmse, bool(fitness >= 0.6 and registration.ok))


def region_centroid_3d(region, registration: Optional[Registration], query_points,
                       ) -> Optional[tuple]:
    """3D centroid (x, y, z) in the QUERY's cloud frame of a region found on the reference /
    model grid: the region (H, W) bool is carried to the query pixels through the registration
    (None: same grid), then the median of the query's valid organized points (h, w, 3) under
    it is taken. None when no valid point lies under the region."""
    m = np.asarray(region, bool)
    if registration is not None:
        m = registration.warp_back(m.astype(np.float32), order=0, cval=0.0) > 0.5
    p = np.asarray(query_points)
    if p.ndim != 3 or p.shape[:2] != m.shape:
        raise ValueError(f"organized query points {p.shape} do not match the region {m.shape}")
    sel = p[m]
    sel = sel[np.isfinite(sel).all(1)]
    if sel.shape[0] == 0:
        return None
    return tuple(float(x) for x in np.median(sel, axis=0))
