"""Turning a part in the image plane, for tests and ablations of pose invariance.

`rotate_sample(sample, angle_deg)` turns a pixel-registered sample (RGB, sensor, organized
cloud, masks) about the camera's principal point, which for a pinhole camera with fx == fy is
exactly what the camera sees when the part turns about the optical axis: every 3D point keeps
its depth and its (x, y) turn by the same angle. Corners that come from outside the view
repeat the nearest border pixel (background; the cloud there is invalid, masks False).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from ..core.frame import Frame, Sample

__all__ = ["rotate_image", "rotate_points", "rotate_frame", "rotate_sample"]


def _cos_sin(angle_deg: float) -> Tuple[float, float]:
    """Rounded so that quarter turns are exact (cos 90 deg is 6e-17 in floating point): a
    border pixel then maps onto the border instead of a hair outside it, where it is lost."""
    t = np.deg2rad(angle_deg)
    return float(np.round(np.cos(t), 12)), float(np.round(np.sin(t), 12))


def _matrix(angle_deg: float, centre: Tuple[float, float]) -> np.ndarray:
    """(3, 3) on (u, v, 1): turn by angle about centre (+u towards +v, as
    `registration.similarity_matrix`)."""
    c, s = _cos_sin(angle_deg)
    m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] = np.asarray(centre) - m[:2, :2] @ np.asarray(centre)
    return m


def _resample(a: np.ndarray, angle_deg: float, centre, order: int, mode: str,
              cval: float = 0.0) -> np.ndarray:
    """Output pixel p takes the input at R^-1 (p - c) + c; (H, W) or (H, W, C)."""
    inv = np.linalg.inv(_matrix(angle_deg, centre))
    lin, off = inv[:2, :2][::-1, ::-1], inv[:2, 2][::-1]
    if a.ndim == 2:
        return ndimage.affine_transform(a, lin, offset=off, order=order, mode=mode, cval=cval)
    return np.stack([ndimage.affine_transform(a[..., c], lin, offset=off, order=order,
                                              mode=mode, cval=cval)
                     for c in range(a.shape[-1])], -1)


def rotate_image(image: np.ndarray, angle_deg: float,
                 centre: Optional[Tuple[float, float]] = None, order: int = 1) -> np.ndarray:
    """(H, W[, C]) image turned by angle_deg about centre (default: the image centre); the
    dtype is kept (uint8 is rounded). Corners from outside the view repeat the nearest border
    pixel (background, never a mirrored copy of the part; booleans: False)."""
    a = np.asarray(image)
    h, w = a.shape[:2]
    c = centre if centre is not None else ((w - 1) / 2, (h - 1) / 2)
    if a.dtype == bool:
        return _resample(a.astype(np.float32), angle_deg, c, order=0, mode="constant") > 0.5
    out = _resample(a.astype(np.float32), angle_deg, c, order, "nearest")
    if a.dtype == np.uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(a.dtype)


def rotate_points(points: np.ndarray, angle_deg: float, centre: Tuple[float, float]
                  ) -> np.ndarray:
    """Organized (H, W, 3) cloud of a part turned about the optical axis: pixels move as
    `rotate_image` (nearest), every point's (x, y) turns by the same angle, z is kept; pixels
    from outside the view are invalid (NaN)."""
    p = _resample(np.asarray(points, np.float32), angle_deg, centre, 0, "constant", np.nan)
    c, s = _cos_sin(angle_deg)
    x, y = p[..., 0].copy(), p[..., 1].copy()
    p[..., 0], p[..., 1] = c * x - s * y, s * x + c * y
    return p


def rotate_frame(frame: Frame, angle_deg: float) -> Frame:
    """A pixel-registered frame turned about the principal point (image centre without
    intrinsics). Unorganized clouds are turned about the optical axis as well."""
    h, w = frame.shape
    k = frame.intrinsics
    centre = (k.cx, k.cy) if k is not None else ((w - 1) / 2, (h - 1) / 2)
    rgb = rotate_image(frame.rgb, angle_deg, centre) if frame.rgb is not None else None
    sensor = (rotate_image(frame.sensor, angle_deg, centre) if frame.sensor is not None
              else None)
    pts = frame.points
    if pts is not None:
        if pts.ndim == 3:
            pts = rotate_points(pts, angle_deg, centre)
        else:
            c, s = _cos_sin(angle_deg)
            pts = np.asarray(pts, np.float32).copy()
            x, y = pts[:, 0].copy(), pts[:, 1].copy()
            pts[:, 0], pts[:, 1] = c * x - s * y, s * x + c * y
    extra = {n: rotate_image(m, angle_deg, centre) for n, m in frame.extra_maps.items()}
    return replace(frame, rgb=rgb, sensor=sensor, points=pts, extra_maps=extra)


def rotate_sample(sample: Sample, angle_deg: float) -> Sample:
    """`rotate_frame` plus the ground-truth masks (nearest, False outside the view)."""
    f = rotate_frame(sample.frame, angle_deg)
    h, w = sample.frame.shape
    k = sample.frame.intrinsics
    centre = (k.cx, k.cy) if k is not None else ((w - 1) / 2, (h - 1) / 2)

    def turn(m):
        if m is None:
            return None
        return _resample(np.asarray(m, np.float32), angle_deg, centre, 0, "constant") > 0.5

    return replace(sample, frame=f, gt_mask=turn(sample.gt_mask),
                   gt_masks={k_: turn(v) for k_, v in sample.gt_masks.items()},
                   sample_id=f"{sample.sample_id}@rot{angle_deg:.1f}")
