"""rclpy message <-> numpy conversions, without cv_bridge or sensor_msgs_py.

Images are read as numpy views chosen by `encoding`, honouring `step` (row padding) and
`is_bigendian`; point clouds through a numpy structured dtype built from `fields` (any offsets,
extra fields allowed). Every malformed input raises `ConversionError` whose `reason` is a short
code the node counts in its diagnostics.

cv_bridge and sensor_msgs_py are not available as Python wheels (and the PyPI `cv-bridge` is the
ROS 1 one), so the few lines they would contribute are written here by hand.
"""
from __future__ import annotations

import array
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header
from zsg_iad_ros.core.frame import MODALITIES, CameraIntrinsics, DefectRegion, Detection
from zsg_iad_ros.core.report import report_to_json
from zsg_iad_ros.data.msgconv import CURVATURE_FIELD
from zsg_iad_ros.msg import (AnomalyReport, DefectRegion as DefectRegionMsg, ModalityScore,
                             RuleCheck, StageLatency)

#: encoding -> (numpy dtype, channels). The sensor_msgs/image_encodings names in use by cameras.
IMAGE_ENCODINGS: Dict[str, Tuple[str, int]] = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "mono8": ("u1", 1), "mono16": ("u2", 1),
    "8UC1": ("u1", 1), "8UC3": ("u1", 3), "16UC1": ("u2", 1), "16SC1": ("i2", 1),
    "32SC1": ("i4", 1), "32FC1": ("f4", 1), "64FC1": ("f8", 1),
}
#: encodings accepted for the RGB topic and for the thermal / X-ray topic.
RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3")
SENSOR_ENCODINGS = ("mono8", "mono16", "8UC1", "16UC1", "16SC1", "32SC1", "32FC1", "64FC1")

#: PointField datatype -> numpy dtype (sensor_msgs/PointField constants).
POINT_FIELD_DTYPES = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
    PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
    PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}
_NUMPY_TO_POINT_FIELD = {np.dtype(v).str[1:]: k for k, v in POINT_FIELD_DTYPES.items()}

_SEVERITY = {"minor": DefectRegionMsg.SEVERITY_MINOR, "major": DefectRegionMsg.SEVERITY_MAJOR,
             "critical": DefectRegionMsg.SEVERITY_CRITICAL}


class ConversionError(ValueError):
    """A message that cannot be converted; `reason` is a short code counted in diagnostics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or anything with sec/nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _as_uint8_array(data: np.ndarray) -> array.array:
    # The generated setter walks a plain `bytes` value element by element; an array('B') built
    # from bytes is taken as is.
    return array.array("B", np.ascontiguousarray(data).tobytes())


# ----------------------------------------------------------------------------- images
def check_image(msg: Image, allowed: Optional[Sequence[str]] = None) -> Tuple[str, int]:
    """Validate an Image's metadata against its buffer without copying it.

    Returns (numpy dtype string with byte order, channels); raises `ConversionError`.
    """
    if msg.encoding not in IMAGE_ENCODINGS or (allowed is not None
                                               and msg.encoding not in allowed):
        ok = ", ".join(allowed if allowed is not None else IMAGE_ENCODINGS)
        raise ConversionError("unsupported_encoding",
                              f"encoding '{msg.encoding}' is not one of {ok}")
    base, channels = IMAGE_ENCODINGS[msg.encoding]
    dtype = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    if msg.width == 0 or msg.height == 0:
        raise ConversionError("empty_image", f"image is {msg.width}x{msg.height}")
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ConversionError("bad_step", f"step {msg.step} < width*pixel size {row_bytes}")
    need = msg.step * msg.height
    if len(msg.data) < need:
        raise ConversionError("truncated", f"data has {len(msg.data)} bytes, step*height={need}")
    if len(msg.data) > need:
        raise ConversionError("size_mismatch",
                              f"data has {len(msg.data)} bytes, step*height={need}")
    return dtype.str, channels


def image_to_numpy(msg: Image, allowed: Optional[Sequence[str]] = None) -> np.ndarray:
    """Image -> (H, W) or (H, W, C) array in the message's channel order, native byte order.

    The result is a copy, so the message buffer may be released afterwards.
    """
    dtype_str, channels = check_image(msg, allowed)
    dtype = np.dtype(dtype_str)
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    rows = raw.reshape(msg.height, msg.step)[:, :msg.width * channels * dtype.itemsize]
    arr = np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width, channels)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    return arr[:, :, 0] if channels == 1 else arr


def image_to_rgb(msg: Image) -> np.ndarray:
    """Colour Image -> (H, W, 3) uint8 in RGB order (BGR swapped, alpha dropped)."""
    arr = image_to_numpy(msg, RGB_ENCODINGS)
    if msg.encoding in ("bgr8", "bgra8"):
        arr = arr[:, :, 2::-1]
    return np.ascontiguousarray(arr[:, :, :3])


def image_to_sensor(msg: Image) -> np.ndarray:
    """Single-channel thermal / X-ray Image -> (H, W) float32 raw values (not rescaled)."""
    arr = image_to_numpy(msg, SENSOR_ENCODINGS).astype(np.float32)
    if not np.isfinite(arr).any():
        raise ConversionError("no_finite_values", "sensor image has no finite value")
    return arr


def header_of(stamp_ns: int, frame_id: str) -> Header:
    """Header with a stamp given in integer nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def numpy_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """(H, W) or (H, W, C) array -> Image with the given encoding (little endian, no padding)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError("unsupported_encoding", f"encoding '{encoding}' unknown")
    base, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ConversionError("shape_mismatch",
                              f"array of shape {arr.shape} does not fit {encoding}")
    arr = arr.astype(np.dtype(base).newbyteorder("<"), copy=False)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * channels * arr.dtype.itemsize)
    msg.data = _as_uint8_array(arr)
    return msg


# ----------------------------------------------------------------------------- point clouds
def _cloud_dtype(msg: PointCloud2, names: Optional[Sequence[str]] = None) -> np.dtype:
    """Structured dtype of one point, from `fields` (all of them, or those in `names`)."""
    order = ">" if msg.is_bigendian else "<"
    out_names, formats, offsets = [], [], []
    for f in msg.fields:
        if names is not None and f.name not in names:
            continue
        if f.datatype not in POINT_FIELD_DTYPES:
            raise ConversionError("bad_field", f"field '{f.name}' has datatype {f.datatype}")
        base = np.dtype(POINT_FIELD_DTYPES[f.datatype]).newbyteorder(order)
        count = max(int(f.count), 1)
        if f.offset + base.itemsize * count > msg.point_step:
            raise ConversionError("bad_field", f"field '{f.name}' ends past point_step "
                                  f"{msg.point_step}")
        out_names.append(f.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(f.offset)
    return np.dtype({"names": out_names, "formats": formats, "offsets": offsets,
                     "itemsize": msg.point_step})


def check_pointcloud2(msg: PointCloud2) -> np.dtype:
    """Validate a cloud's layout against its buffer without copying; returns the xyz dtype."""
    names = {f.name: f for f in msg.fields}
    missing = [n for n in ("x", "y", "z") if n not in names]
    if missing:
        raise ConversionError("missing_xyz_fields",
                              f"cloud has fields {sorted(names)}, lacks {missing}")
    for n in ("x", "y", "z"):
        if names[n].datatype not in (PointField.FLOAT32, PointField.FLOAT64):
            raise ConversionError("bad_xyz_datatype",
                                  f"field '{n}' has datatype {names[n].datatype}, not float")
    if msg.width * msg.height == 0:
        raise ConversionError("empty_cloud", f"cloud is {msg.width}x{msg.height}")
    if msg.point_step == 0:
        raise ConversionError("bad_step", "point_step is 0")
    if msg.row_step < msg.width * msg.point_step:
        raise ConversionError("bad_step", f"row_step {msg.row_step} < width*point_step "
                              f"{msg.width * msg.point_step}")
    need = msg.row_step * msg.height
    if len(msg.data) < need:
        raise ConversionError("truncated", f"data has {len(msg.data)} bytes, row_step*height="
                              f"{need}")
    if len(msg.data) > need:
        raise ConversionError("size_mismatch", f"data has {len(msg.data)} bytes, "
                              f"row_step*height={need}")
    return _cloud_dtype(msg, ("x", "y", "z"))


def pointcloud2_to_array(msg: PointCloud2, names: Optional[Sequence[str]] = None) -> np.ndarray:
    """PointCloud2 -> structured array of shape (height, width) with the requested fields."""
    check_pointcloud2(msg)
    dtype = _cloud_dtype(msg, names)
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=msg.row_step * msg.height)
    rows = raw.reshape(msg.height, msg.row_step)[:, :msg.width * msg.point_step]
    rows = np.ascontiguousarray(rows)
    return rows.view(dtype).reshape(msg.height, msg.width)


def pointcloud2_to_xyz(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 -> float32 points [m].

    Organized (height > 1): (H, W, 3) with NaN where invalid. Unorganized: (N, 3) with the
    non-finite points removed. Raises `ConversionError` when no finite point is left.
    """
    rec = pointcloud2_to_array(msg, ("x", "y", "z"))
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=-1).astype(np.float32)
    finite = np.isfinite(xyz).all(axis=-1)
    if not finite.any():
        raise ConversionError("no_finite_points", "cloud has no finite point")
    if msg.height > 1:
        xyz[~finite] = np.nan
        return xyz
    return np.ascontiguousarray(xyz.reshape(-1, 3)[finite.reshape(-1)])


def pointcloud2_curvature(msg: PointCloud2) -> Optional[np.ndarray]:
    """An organized cloud's per-point `curvature` field (PCL PointNormal's name: the scanner's
    own surface curvature) as float32 (H, W), NaN where not finite; None when the cloud is
    unorganized or has no such field."""
    if msg.height <= 1 or CURVATURE_FIELD not in {f.name for f in msg.fields}:
        return None
    c = pointcloud2_to_array(msg, (CURVATURE_FIELD,))[CURVATURE_FIELD].astype(np.float32)
    if c.ndim != 2:
        raise ConversionError("bad_field", f"field '{CURVATURE_FIELD}' has more than one value "
                                           "per point")
    c[~np.isfinite(c)] = np.nan
    return c


def array_to_pointcloud2(points: np.ndarray, header=None) -> PointCloud2:
    """Structured array ((H, W) organized or (N,) unorganized) -> PointCloud2 with its fields.

    Keeps the array's own field offsets and itemsize (padding included).
    """
    points = np.asarray(points)
    if points.dtype.names is None:
        raise ConversionError("bad_field", "expected a structured array")
    if points.ndim == 1:
        points = points[None, :]
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(points.shape[0]), int(points.shape[1])
    for name in points.dtype.names:
        ftype, offset = points.dtype.fields[name][:2]
        base, count = (ftype.base, int(np.prod(ftype.shape))) if ftype.shape else (ftype, 1)
        msg.fields.append(PointField(name=name, offset=int(offset),
                                     datatype=_NUMPY_TO_POINT_FIELD[base.str[1:]], count=count))
    msg.is_bigendian = points.dtype.fields[points.dtype.names[0]][0].byteorder == ">"
    msg.point_step = int(points.dtype.itemsize)
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = bool(all(np.isfinite(points[n]).all() for n in points.dtype.names))
    msg.data = _as_uint8_array(np.ascontiguousarray(points).view(np.uint8))
    return msg


def xyz_to_pointcloud2(xyz: np.ndarray, header=None) -> PointCloud2:
    """(H, W, 3) organized or (N, 3) float points [m] -> PointCloud2 with float32 x, y, z."""
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.shape[-1] != 3 or xyz.ndim not in (2, 3):
        raise ConversionError("shape_mismatch", f"points of shape {xyz.shape}")
    rec = np.empty(xyz.shape[:-1], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    rec["x"], rec["y"], rec["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return array_to_pointcloud2(rec, header)


# ----------------------------------------------------------------------------- camera info
def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """CameraInfo -> pinhole intrinsics from K (row-major 3x3)."""
    k = np.asarray(msg.k, dtype=np.float64)
    if k.shape != (9,) or not np.isfinite(k).all() or k[0] <= 0 or k[4] <= 0:
        raise ConversionError("bad_camera_info", f"K={k.tolist()} is not a valid pinhole matrix")
    if msg.width == 0 or msg.height == 0:
        raise ConversionError("bad_camera_info", f"camera is {msg.width}x{msg.height}")
    return CameraIntrinsics(fx=float(k[0]), fy=float(k[4]), cx=float(k[2]), cy=float(k[5]),
                            width=int(msg.width), height=int(msg.height))


def intrinsics_to_camera_info(intr: CameraIntrinsics, header=None) -> CameraInfo:
    """Pinhole intrinsics -> CameraInfo (no distortion)."""
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ----------------------------------------------------------------------------- results
def mask_to_image(pred_mask: np.ndarray, header=None) -> Image:
    """(H, W) bool mask -> mono8 Image, 0 background / 255 defect."""
    return numpy_to_image(np.where(np.asarray(pred_mask, dtype=bool), 255, 0).astype(np.uint8),
                          "mono8", header)


def anomaly_map_to_image(anomaly_map: np.ndarray, header=None) -> Image:
    """(H, W) float anomaly map in [0, 1] -> 32FC1 Image."""
    return numpy_to_image(np.asarray(anomaly_map, dtype=np.float32), "32FC1", header)


def region_to_msg(region: DefectRegion, header, cloud_frame_id: str) -> DefectRegionMsg:
    """Core `DefectRegion` -> DefectRegion message; the 3D centroid is in `cloud_frame_id`."""
    msg = DefectRegionMsg()
    msg.defect_type = str(region.defect_type)
    msg.confidence = float(np.clip(region.confidence, 0.0, 1.0))
    msg.severity = _SEVERITY.get(str(region.severity), DefectRegionMsg.SEVERITY_MINOR)
    x, y, w, h = (int(v) for v in region.bbox_xywh)
    msg.bbox = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False)
    msg.area_px = int(region.area_px)
    msg.centroid_u, msg.centroid_v = (float(v) for v in region.centroid_px)
    c3 = region.centroid_3d
    msg.has_centroid_3d = c3 is not None and bool(np.isfinite(np.asarray(c3, float)).all())
    msg.centroid_3d = PointStamped()
    msg.centroid_3d.header.stamp = header.stamp
    msg.centroid_3d.header.frame_id = cloud_frame_id
    if msg.has_centroid_3d:
        msg.centroid_3d.point.x, msg.centroid_3d.point.y, msg.centroid_3d.point.z = (
            float(v) for v in c3)
    msg.modalities = [str(m) for m in region.modalities]
    return msg


def region_from_msg(msg: DefectRegionMsg) -> DefectRegion:
    """DefectRegion message -> core `DefectRegion` (exact inverse of `region_to_msg`)."""
    severity = {v: k for k, v in _SEVERITY.items()}.get(msg.severity, "minor")
    p = msg.centroid_3d.point
    return DefectRegion(
        defect_type=msg.defect_type, confidence=float(msg.confidence),
        bbox_xywh=(msg.bbox.x_offset, msg.bbox.y_offset, msg.bbox.width, msg.bbox.height),
        area_px=int(msg.area_px), centroid_px=(float(msg.centroid_u), float(msg.centroid_v)),
        centroid_3d=(p.x, p.y, p.z) if msg.has_centroid_3d else None,
        modalities=list(msg.modalities), severity=severity)


def report_status(det: Detection) -> int:
    """AnomalyReport.STATUS_* of a detection."""
    if not det.confident:
        return AnomalyReport.STATUS_UNKNOWN
    return AnomalyReport.STATUS_ANOMALOUS if det.is_anomalous else AnomalyReport.STATUS_NORMAL


def detection_to_report(det: Detection, header, sensor_type: str, stream: str,
                        cloud_frame_id: str, latencies_ms: Optional[Mapping[str, float]] = None
                        ) -> AnomalyReport:
    """Core `Detection` -> AnomalyReport carrying `header` (the RGB image's)."""
    msg = AnomalyReport()
    msg.header = header
    msg.status = report_status(det)
    msg.pred_score = float(np.clip(det.pred_score, 0.0, 1.0))
    msg.threshold = float(det.threshold)
    msg.sensor_type = sensor_type
    msg.stream = stream
    for name in MODALITIES:
        present = bool(det.modalities_present.get(name, False))
        score = float(det.modality_scores.get(name, 0.0)) if present else 0.0
        msg.modality_scores.append(ModalityScore(
            name=name, present=present, score=float(np.clip(np.nan_to_num(score), 0.0, 1.0))))
    msg.regions = [region_to_msg(r, header, cloud_frame_id) for r in det.regions]
    mask = np.asarray(det.pred_mask, dtype=bool)
    msg.mask_area_fraction = float(mask.mean()) if mask.size else 0.0
    report = det.report
    if report is not None:
        msg.report_json = report_to_json(report)
        msg.report_schema_version = str(report.get("schema_version", ""))
    for rule in det.rule_results:
        msg.rule_checks.append(RuleCheck(
            name=str(rule.get("name", "")), passed=bool(rule.get("passed", False)),
            reason=str(rule.get("reason", "") or ""),
            score=float(np.clip(rule.get("score", 1.0 if rule.get("passed") else 0.0), 0, 1))))
    # A report that failed to build is not valid, whatever the (empty) rule list says.
    msg.report_valid = (report is not None and bool(report.get("valid", True))
                        and all(r.passed for r in msg.rule_checks))
    msg.model_id = det.model_id
    msg.revision = bool(det.revision)
    stages = dict(det.timings_ms)
    stages.update(latencies_ms or {})
    msg.latencies = [StageLatency(stage=str(k), milliseconds=float(v)) for k, v in stages.items()]
    return msg
