"""numpy <-> sensor_msgs field layouts (Image, PointCloud2, CameraInfo), for any message object.

The functions read attributes (`msg.height`, `msg.data`, ...) and return plain keyword
dictionaries, so they serve both the `rosbags` message classes used by the bag writer/reader
and the rclpy message classes of the ROS adapter (`Image(**numpy_to_image_kwargs(a, 'rgb8'))`;
rclpy wants `data` as bytes: pass `kwargs['data'].tobytes()`).
No `cv_bridge` / `sensor_msgs_py` here (not available from PyPI for ROS 2): numpy views by
encoding and structured dtypes built from `PointCloud2.fields`.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..core.frame import CameraIntrinsics

__all__ = ["IMAGE_ENCODINGS", "POINTFIELD_DTYPES", "CURVATURE_FIELD", "image_to_numpy",
           "numpy_to_image_kwargs", "cloud_to_numpy", "cloud_curvature", "numpy_to_cloud_kwargs",
           "camera_info_to_intrinsics", "intrinsics_to_camera_info_kwargs", "rgb_from_image",
           "mask_to_mono8"]

#: encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS: Dict[str, tuple] = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4), "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1), "64FC1": (np.float64, 1),
}

#: sensor_msgs/PointField datatype constants -> numpy dtype
POINTFIELD_DTYPES = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32,
                     6: np.uint32, 7: np.float32, 8: np.float64}
FLOAT32 = 7
#: optional per-point field of a cloud: the scanner's own surface curvature (PCL PointNormal's
#: name); carries `Frame.extra_maps[SCAN_CURVATURE]` of an organized cloud
CURVATURE_FIELD = "curvature"


def _as_bytes(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview))
                         else data, np.uint8)


def image_to_numpy(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array in the message's own encoding/channel
    order (a copy; row padding and big-endian data handled)."""
    enc = msg.encoding
    if enc not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {enc!r}; supported: "
                         f"{sorted(IMAGE_ENCODINGS)}")
    dtype, ch = IMAGE_ENCODINGS[enc]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * ch * dt.itemsize
    buf = _as_bytes(msg.data)
    if step < row or buf.size < h * step - (step - row):
        raise ValueError(f"image data too short: {buf.size} bytes for {h}x{w} {enc} "
                         f"(step {step})")
    if h == 0 or w == 0:
        return np.zeros((h, w) if ch == 1 else (h, w, ch), dtype)
    rows = np.lib.stride_tricks.as_strided(buf, (h, row), (step, 1))
    arr = rows.copy().view(dt).astype(dtype, copy=False)  # own, writable memory
    return arr.reshape((h, w) if ch == 1 else (h, w, ch))


def rgb_from_image(msg) -> np.ndarray:
    """Colour or grey image message -> (H, W, 3) uint8 RGB."""
    a = image_to_numpy(msg)
    enc = msg.encoding
    if enc in ("rgb8", "8UC3"):
        return a
    if enc == "bgr8":
        return a[..., ::-1].copy()
    if enc == "rgba8":
        return a[..., :3].copy()
    if enc == "bgra8":
        return a[..., 2::-1].copy()
    if enc in ("mono8", "8UC1"):
        return np.repeat(a[..., None], 3, -1)
    raise ValueError(f"encoding {enc!r} is not a colour/grey 8-bit image")


def numpy_to_image_kwargs(array: np.ndarray, encoding: str) -> dict:
    """(H, W[, C]) array -> Image fields (height, width, encoding, is_bigendian, step, data as
    a 1-D uint8 array). The array's dtype and channel count must match the encoding."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}")
    dtype, ch = IMAGE_ENCODINGS[encoding]
    a = np.asarray(array)
    if a.dtype != dtype:
        raise ValueError(f"{encoding} needs dtype {np.dtype(dtype)}, got {a.dtype}")
    if not ((ch == 1 and a.ndim == 2) or (a.ndim == 3 and a.shape[2] == ch)):
        raise ValueError(f"{encoding} needs shape (H, W{'' if ch == 1 else f', {ch}'}), "
                         f"got {a.shape}")
    a = np.ascontiguousarray(a.astype(np.dtype(dtype).newbyteorder("<"), copy=False))
    h, w = a.shape[:2]
    return dict(height=h, width=w, encoding=encoding, is_bigendian=0,
                step=w * ch * a.dtype.itemsize, data=a.reshape(-1).view(np.uint8))


def _cloud_dtype(msg, names=("x", "y", "z")) -> np.dtype:
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(f"point cloud lacks fields {missing}; has {sorted(fields)}")
    order = ">" if msg.is_bigendian else "<"
    formats, offsets = [], []
    for n in names:
        f = fields[n]
        if f.datatype not in POINTFIELD_DTYPES:
            raise ValueError(f"point field {n!r} has unknown datatype {f.datatype}")
        formats.append(np.dtype(POINTFIELD_DTYPES[f.datatype]).newbyteorder(order))
        offsets.append(int(f.offset))
    return np.dtype({"names": list(names), "formats": formats, "offsets": offsets,
                     "itemsize": int(msg.point_step)})


def cloud_to_numpy(msg, organized: Optional[bool] = None) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> float32 xyz: (H, W, 3) when organized (height > 1, or
    `organized=True`), else (N, 3). NaN points are kept."""
    return _cloud_fields(msg, ("x", "y", "z"), organized)


def cloud_curvature(msg, organized: Optional[bool] = None) -> Optional[np.ndarray]:
    """The cloud's per-point `curvature` field (PCL's PointNormal convention) as float32, shaped
    like `cloud_to_numpy`'s points without the last axis; None when the cloud has none."""
    if CURVATURE_FIELD not in {f.name for f in msg.fields}:
        return None
    return _cloud_fields(msg, (CURVATURE_FIELD,), organized)[..., 0]


def _cloud_fields(msg, names, organized: Optional[bool]) -> np.ndarray:
    """float32 (H, W, len(names)) when organized, else (N, len(names))."""
    h, w = int(msg.height), int(msg.width)
    dt = _cloud_dtype(msg, names)
    buf = _as_bytes(msg.data)
    row_step = int(msg.row_step)
    need = (h - 1) * row_step + w * dt.itemsize if h and w else 0
    if buf.size < need or row_step < w * dt.itemsize:
        raise ValueError(f"point cloud data too short: {buf.size} bytes for {h}x{w} points "
                         f"(point_step {dt.itemsize}, row_step {row_step})")
    rows = [np.frombuffer(buf[r * row_step: r * row_step + w * dt.itemsize], dt)
            for r in range(h)] if row_step != w * dt.itemsize else \
        [np.frombuffer(buf[:h * w * dt.itemsize], dt)]
    rec = np.concatenate(rows) if rows else np.zeros(0, dt)
    out = np.stack([rec[n] for n in names], -1).astype(np.float32)
    if organized is None:
        organized = h > 1
    return out.reshape(h, w, len(names)) if organized else out.reshape(-1, len(names))


def numpy_to_cloud_kwargs(points: np.ndarray, curvature: Optional[np.ndarray] = None) -> dict:
    """(H, W, 3) organized or (N, 3) float32 xyz -> PointCloud2 fields. `fields` is a list of
    dicts (name, offset, datatype, count) to build PointField messages from. `curvature`, one
    value per point (points.shape[:-1]), adds a `curvature` field after x, y, z."""
    p = np.asarray(points)
    if p.dtype != np.float32 or p.shape[-1] != 3 or p.ndim not in (2, 3):
        raise ValueError(f"points must be float32 (H, W, 3) or (N, 3), got {p.dtype} {p.shape}")
    h, w = (p.shape[0], p.shape[1]) if p.ndim == 3 else (1, p.shape[0])
    names = list("xyz")
    if curvature is not None:
        c = np.asarray(curvature, np.float32)
        if c.shape != p.shape[:-1]:
            raise ValueError(f"curvature must have one value per point {p.shape[:-1]}, got "
                             f"{c.shape}")
        p = np.concatenate([p, c[..., None]], -1)
        names.append(CURVATURE_FIELD)
    step = 4 * len(names)
    data = np.ascontiguousarray(p.astype("<f4", copy=False)).reshape(-1).view(np.uint8)
    fields = [dict(name=n, offset=4 * i, datatype=FLOAT32, count=1)
              for i, n in enumerate(names)]
    return dict(height=h, width=w, fields=fields, is_bigendian=False, point_step=step,
                row_step=step * w, data=data, is_dense=bool(np.isfinite(p[..., :3]).all()))


def camera_info_to_intrinsics(msg) -> CameraIntrinsics:
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError("camera_info has no valid focal length (K is zero)")
    return CameraIntrinsics(fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]),
                            cy=float(k[1, 2]), width=int(msg.width), height=int(msg.height))


def intrinsics_to_camera_info_kwargs(intr: CameraIntrinsics) -> dict:
    """CameraIntrinsics -> CameraInfo fields (no distortion, identity R, P = [K | 0])."""
    k = np.array([intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1], np.float64)
    p = np.array([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0], np.float64)
    return dict(height=int(intr.height), width=int(intr.width), distortion_model="plumb_bob",
                d=np.zeros(5, np.float64), k=k, r=np.eye(3).reshape(-1), p=p)


def mask_to_mono8(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) -> uint8 0/255."""
    return np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8)
