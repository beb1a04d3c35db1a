"""Where the part is in an RGB image, estimated from the image alone (never from ground truth).

Used to restrict pixel metrics to the part: on an object lying on a plain background, a
whole-image pixel metric mostly rewards a map for telling part from background, which a
blurred grey copy of the image already does.

The estimate assumes what an inspection cell shows: one part on a plain background that makes
up most of the image border, or a surface that fills the frame. It works on a copy whose
shorter side is about `WORK_SIDE` pixels (block mean), lightly blurred (`BLUR`).

1. The background is modelled from a thin ring along the image border: a quadratic colour
   surface fitted robustly to the ring (a constant colour under even lighting; the quadratic
   follows vignetting and a brighter centre).
2. If the ring is not plain (robust spread of its colour residuals above `PLAIN_SPREAD`), a
   texture runs through the border: the surface fills the frame, and the whole image is the
   foreground.
3. Otherwise a pixel is foreground when its colour distance to the background model exceeds
   what is common on the ring: the largest of median + `K_SPREAD` robust spreads, the ring's
   `RING_QUANTILE` distance (ignoring ring pixels as distinct as the part itself, by Otsu's
   threshold, so a part touching the border does not raise it) and `MIN_CONTRAST`.
4. Closing, hole filling and an opening with a disk of radius `MIN_HALF_WIDTH`: what cannot
   hold the disk is a stroke (a scratch) or a speck, not a part. The components at least
   `MIN_COMPONENT_REL` of the largest are kept. No part is found, and the
   whole image is the foreground, when the largest is under `MIN_PART_FRAC` of the image, when
   more than `MAX_COMPONENTS` are kept (a populated board, not one part), or when they do not
   stand clearly out of the background (median distance under `MIN_SEPARATION` thresholds).
5. A result covering `FULL_FRAC` of the image or more becomes the whole image.

The blur and the low threshold widen the part by one or two working pixels: a margin that keeps
the blurred outline and edge defects (a chipped corner) inside.

Limits: from one image, a large, strongly contrasting blemish on a plain frame-filling surface
(a through-hole showing the table) looks like a small part on a plain background; a defect
where material is missing or displaced (a missing piece, a shifted part) can lie outside the
foreground, which is where the part is, not where it should have been.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage
from scipy.stats import median_abs_deviation

WORK_SIDE = 128          # shorter side of the working copy [px]
BLUR = 1.0               # Gaussian sigma at the working resolution [px]: noise, fine print
RING_FRAC = 0.02         # border ring width, fraction of the shorter side
PLAIN_SPREAD = 6.0       # ring residual spread (1.4826 MAD, 0-255 colour units) of a plain border
K_SPREAD = 6.0
RING_QUANTILE = 0.99
MIN_CONTRAST = 10.0      # colour distance (0-255 units) below which nothing is a part
MIN_SEPARATION = 3.0
MIN_PART_FRAC = 0.005    # smallest part, fraction of the image (a small part seen from afar)
MIN_HALF_WIDTH = 0.02    # a part holds a disk of this radius (fraction of the shorter side)
MIN_COMPONENT_REL = 0.1  # pieces smaller than this fraction of the largest: glare, dust
MAX_COMPONENTS = 3
FULL_FRAC = 0.9


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 0)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r + r  # "+ r": rounder small disks


def _morph(op, mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """A binary morphological `op` with the image edge continued outwards, so a part that runs
    out of the frame is not eaten at the edge."""
    p = structure.shape[0]
    out = op(np.pad(mask, p, mode="edge"), structure)
    return out[p:-p, p:-p]


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 1-D values (largest between-class variance of a histogram)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2))])


def _robust(values: np.ndarray):
    med = float(np.median(values))
    return med, float(median_abs_deviation(values, scale="normal"))


def _background_distance(img: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Colour distance of every pixel to a quadratic background surface fitted to the ring
    (iteratively, dropping ring pixels far off the fit: glare, a part touching the border)."""
    h, w = img.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    u = u / max(w - 1, 1) * 2 - 1
    v = v / max(h - 1, 1) * 2 - 1
    basis = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], -1)
    a, y = basis[ring].astype(np.float64), img[ring].astype(np.float64)
    keep = np.ones(len(a), bool)
    for _ in range(3):
        coef = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        res = np.sqrt(((y - a @ coef) ** 2).sum(-1))
        med, spread = _robust(res)
        keep = res <= med + 3 * spread + 1e-6
    model = (basis.reshape(-1, basis.shape[-1]) @ coef).reshape(img.shape).astype(np.float32)
    return np.sqrt(((img - model) ** 2).sum(-1))


def _part_mask(img: np.ndarray) -> Optional[np.ndarray]:
    """The part on a float (h, w, 3) image, or None for "the whole image"."""
    h, w = img.shape[:2]
    side = min(h, w)
    img = ndimage.gaussian_filter(img, sigma=(BLUR, BLUR, 0))
    b = max(2, int(round(RING_FRAC * side)))
    ring = np.ones((h, w), bool)
    ring[b:-b, b:-b] = False
    dist = _background_distance(img, ring)
    d_ring = dist[ring]
    med, spread = _robust(d_ring)
    if spread > PLAIN_SPREAD:
        return None  # textured border: a surface filling the frame
    common = d_ring[d_ring < _otsu(dist)]
    thr = max(med + K_SPREAD * spread, MIN_CONTRAST,
              float(np.quantile(common, RING_QUANTILE)) if common.size else 0.0)
    disk = _disk(max(2, int(round(MIN_HALF_WIDTH * side))))
    fg = _morph(ndimage.binary_closing, dist > thr, disk)
    # Dark details enclosed by the part (a bore, a shadowed rim) belong to it.
    fg = ndimage.binary_fill_holes(fg)
    # A part is not a stroke: the opening keeps what holds the disk (a long scratch does not).
    fg = _morph(ndimage.binary_opening, fg, disk)
    labels, n = ndimage.label(fg)
    if n == 0:
        return None
    area = np.bincount(labels.ravel(), minlength=n + 1)
    area[0] = 0
    if area.max() < MIN_PART_FRAC * h * w:
        return None
    keep = area >= MIN_COMPONENT_REL * area.max()
    if keep.sum() > MAX_COMPONENTS:
        return None
    fg = keep[labels]
    if float(np.median(dist[fg])) < MIN_SEPARATION * thr:
        return None  # nothing stands clearly out of the background
    return fg


def part_foreground(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool, True on the part (with a small margin); all True when a surface fills the
    frame or no part stands out of a plain background. rgb: (H, W, 3) uint8, or (H, W) grey.
    """
    img = np.asarray(rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)  # same colour distances as grey RGB
    if img.ndim != 3 or min(img.shape[:2]) < 16:
        raise ValueError(f"rgb must be (H, W, 3) with H, W >= 16, got {img.shape}")
    h, w = img.shape[:2]
    k = max(1, min(h, w) // WORK_SIDE)
    hk, wk = h // k, w // k
    small = (img[:hk * k, :wk * k].astype(np.float32)
             .reshape(hk, k, wk, k, -1).mean(axis=(1, 3)))
    fg = _part_mask(small)
    if fg is None:
        return np.ones((h, w), bool)
    fg = np.repeat(np.repeat(fg, k, 0), k, 1)
    fg = np.pad(fg, ((0, h - fg.shape[0]), (0, w - fg.shape[1])), mode="edge")
    if fg.mean() >= FULL_FRAC:
        return np.ones((h, w), bool)
    return fg
