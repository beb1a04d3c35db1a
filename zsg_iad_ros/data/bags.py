"""ROS 2 bags of inspected parts, written and read with `rosbags` (no ROS install needed).

Layout of a bag written by `write_bag` (one group of messages per part, all stamped with the
part's RGB stamp; bag timestamp = header stamp):

* `/rgb/image_raw`     sensor_msgs/Image rgb8, frame_id `camera_optical_frame`;
* `/sensor/image_raw`  sensor_msgs/Image 32FC1 raw values: thermal [K] or X-ray transmitted
  intensity; the frame_id `thermal_optical_frame` / `xray_optical_frame` names the sensor kind;
* `/depth/points`      sensor_msgs/PointCloud2, organized H x W, float32 x y z [m], NaN kept,
  frame_id `camera_optical_frame` (the source's cloud frame when it has another one);
* `/rgb/camera_info`   sensor_msgs/CameraInfo, K and P of the RGB camera (when known);
* `/ground_truth`      zsg_iad_ros/GroundTruth: label, category, defect type, description,
  union mask and per-modality masks (mono8 0/255), sample_id, registered.

X-ray images are stored as 32FC1 like thermal ones (not mono16): the raw float values travel
unscaled, so a bag round trip is exact and no scale has to be agreed on. Missing modalities
are simply not written for that part. Storage: `mcap` (default) or `sqlite3`; bag format
version 8, cdr serialization, default QoS, message definitions embedded, so `ros2 bag play`
(Jazzy or newer) replays it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

from ..core.frame import GEOMETRY, RGB, SCAN_CURVATURE, SENSOR, THERMAL, XRAY, Frame, Sample
from .msgconv import (camera_info_to_intrinsics, cloud_curvature, cloud_to_numpy,
                      image_to_numpy, intrinsics_to_camera_info_kwargs, mask_to_mono8,
                      numpy_to_cloud_kwargs, numpy_to_image_kwargs)

__all__ = ["TOPIC_RGB", "TOPIC_SENSOR", "TOPIC_POINTS", "TOPIC_CAMERA_INFO", "TOPIC_GT",
           "FRAME_ID", "SENSOR_FRAME_IDS", "GROUND_TRUTH_TYPE", "typestore", "write_bag",
           "read_bag", "iter_bag_messages", "iter_bag_groups", "sample_from_messages",
           "sensor_type_from_frame_id", "BagInfo", "bag_info"]

TOPIC_RGB = "/rgb/image_raw"
TOPIC_SENSOR = "/sensor/image_raw"
TOPIC_POINTS = "/depth/points"
TOPIC_CAMERA_INFO = "/rgb/camera_info"
TOPIC_GT = "/ground_truth"
FRAME_ID = "camera_optical_frame"
SENSOR_FRAME_IDS = {THERMAL: "thermal_optical_frame", XRAY: "xray_optical_frame"}
GROUND_TRUTH_TYPE = "zsg_iad_ros/msg/GroundTruth"
IMAGE_T = "sensor_msgs/msg/Image"
CLOUD_T = "sensor_msgs/msg/PointCloud2"
INFO_T = "sensor_msgs/msg/CameraInfo"
BAG_VERSION = 8
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def _ground_truth_msg_text() -> str:
    """Text of msg/GroundTruth.msg from the source tree or an installed share directory."""
    here = Path(__file__).resolve().parents[2] / "msg" / "GroundTruth.msg"
    candidates = [here]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "zsg_iad_ros" / "msg" / "GroundTruth.msg")
    for c in candidates:
        if c.is_file():
            return c.read_text()
    raise FileNotFoundError("msg/GroundTruth.msg not found (looked in the source tree and in "
                            "AMENT_PREFIX_PATH share directories)")


_TYPESTORE = None


def typestore():
    """rosbags typestore with the ROS 2 Jazzy types and zsg_iad_ros/msg/GroundTruth."""
    global _TYPESTORE
    if _TYPESTORE is None:
        ts = get_typestore(Stores.ROS2_JAZZY)
        ts.register(get_types_from_msg(_ground_truth_msg_text(), GROUND_TRUTH_TYPE))
        _TYPESTORE = ts
    return _TYPESTORE


def sensor_type_from_frame_id(frame_id: str) -> Optional[str]:
    """'thermal_optical_frame' -> 'thermal', 'xray_optical_frame' -> 'xray', else None."""
    for st, fid in SENSOR_FRAME_IDS.items():
        if frame_id == fid or frame_id.startswith(st + "_") or frame_id.startswith(st + "/"):
            return st
    return None


# ----------------------------------------------------------------------------- writing
def _header(ts, stamp_ns: int, frame_id: str):
    T = ts.types
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                               nanosec=int(stamp_ns % 1_000_000_000)),
        frame_id=frame_id)


def _image(ts, header, array, encoding):
    return ts.types[IMAGE_T](header=header, **numpy_to_image_kwargs(array, encoding))


def _empty_image(ts, header):
    return ts.types[IMAGE_T](header=header, height=0, width=0, encoding="mono8",
                             is_bigendian=0, step=0, data=np.zeros(0, np.uint8))


def _messages_for(sample: Sample, stamp_ns: int) -> List[Tuple[str, str, object]]:
    """(topic, msgtype, message) for one sample."""
    ts = typestore()
    T = ts.types
    f = sample.frame
    out = []
    hdr = _header(ts, stamp_ns, f.frame_id or FRAME_ID)
    if f.rgb is not None:
        out.append((TOPIC_RGB, IMAGE_T, _image(ts, hdr, f.rgb, "rgb8")))
    if f.sensor is not None:
        if f.sensor_type not in SENSOR_FRAME_IDS:
            raise ValueError(f"sample {sample.sample_id!r}: unknown sensor_type "
                             f"{f.sensor_type!r}")
        sh = _header(ts, stamp_ns, SENSOR_FRAME_IDS[f.sensor_type])
        out.append((TOPIC_SENSOR, IMAGE_T,
                    _image(ts, sh, np.asarray(f.sensor, np.float32), "32FC1")))
    if f.points is not None:
        points = np.asarray(f.points, np.float32)
        curv = f.extra_maps.get(SCAN_CURVATURE) if points.ndim == 3 else None
        if curv is not None and np.shape(curv) != points.shape[:2]:
            raise ValueError(f"sample {sample.sample_id!r}: scan curvature "
                             f"{np.shape(curv)} is not on the points' grid {points.shape[:2]}")
        kw = numpy_to_cloud_kwargs(points, curv)
        kw["fields"] = [T["sensor_msgs/msg/PointField"](**fd) for fd in kw["fields"]]
        ph = _header(ts, stamp_ns, f.cloud_frame_id or FRAME_ID)
        out.append((TOPIC_POINTS, CLOUD_T, T[CLOUD_T](header=ph, **kw)))
    if f.intrinsics is not None:
        kw = intrinsics_to_camera_info_kwargs(f.intrinsics)
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
        out.append((TOPIC_CAMERA_INFO, INFO_T,
                    T[INFO_T](header=hdr, binning_x=0, binning_y=0, roi=roi, **kw)))
    has_mask = sample.gt_mask is not None
    mods = [m for m in (RGB, SENSOR, GEOMETRY) if m in sample.gt_masks]
    gt = T[GROUND_TRUTH_TYPE](
        header=hdr, label=int(sample.label), category=sample.category,
        defect_type=sample.defect_type, description=sample.description,
        mask=_image(ts, hdr, mask_to_mono8(sample.gt_mask), "mono8") if has_mask
        else _empty_image(ts, hdr),
        has_mask=has_mask, sample_id=sample.sample_id, registered=bool(f.registered),
        mask_modalities=mods,
        modality_masks=[_image(ts, hdr, mask_to_mono8(sample.gt_masks[m]), "mono8")
                        for m in mods])
    out.append((TOPIC_GT, GROUND_TRUTH_TYPE, gt))
    return out


def write_bag(path: Union[str, Path], samples: Iterable[Sample], storage: str = "mcap",
              rate_hz: float = 5.0, start_ns: int = 1_700_000_000_000_000_000,
              progress=None) -> int:
    """Write `samples` as a ROS 2 bag directory at `path` (must not exist).

    Part i is stamped start_ns + i / rate_hz. `progress(i)` is called after each part.
    Returns the number of parts written.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz!r}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; bags are never overwritten")
    ts = typestore()
    period = int(round(1e9 / rate_hz))
    n = 0
    with Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage]) as w:
        conns: Dict[str, object] = {}
        for i, sample in enumerate(samples):
            stamp = int(start_ns) + i * period
            for topic, msgtype, msg in _messages_for(sample, stamp):
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
                w.write(conns[topic], stamp, ts.serialize_cdr(msg, msgtype))
            n += 1
            if progress is not None:
                progress(n)
    if n == 0:
        raise ValueError("no samples to write")
    return n


# ----------------------------------------------------------------------------- reading
def iter_bag_messages(path: Union[str, Path], topics: Optional[Iterable[str]] = None,
                      raw: bool = False) -> Iterator[Tuple[str, str, int, object]]:
    """(topic, msgtype, timestamp_ns, message) in bag order; `raw=True` gives the cdr bytes
    instead of the deserialized (rosbags) message."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bag at {path}")
    ts = typestore()
    with Reader(path) as r:
        wanted = None if topics is None else set(topics)
        conns = [c for c in r.connections if wanted is None or c.topic in wanted]
        if not conns:
            return  # rosbags reads every connection when given none
        for c in conns:
            if not raw and c.msgtype not in ts.types:
                try:  # a type from elsewhere: its definition travels in the bag
                    ts.register(get_types_from_msg(c.msgdef.data, c.msgtype))
                except Exception as e:
                    raise ValueError(f"{path}: cannot decode {c.topic} of unknown type "
                                     f"{c.msgtype} ({e}); read it with raw=True") from e
        for conn, t, data in r.messages(connections=conns):
            yield conn.topic, conn.msgtype, t, (data if raw else
                                                ts.deserialize_cdr(data, conn.msgtype))


def iter_bag_groups(path: Union[str, Path]) -> Iterator[Dict[str, object]]:
    """Messages grouped by header stamp: one {topic: message} dict per part, in time order.

    A group ends when a message with a later stamp arrives, so the messages of one part must
    share the stamp of its RGB image (as `write_bag` writes them).
    """
    group: Dict[str, object] = {}
    current = None
    for topic, _t, _ts, msg in iter_bag_messages(path):
        stamp = _stamp_ns(msg.header.stamp) if hasattr(msg, "header") else _ts
        if current is not None and stamp != current:
            yield group
            group = {}
        current = stamp
        group[topic] = msg
    if group:
        yield group


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _mask_from(img) -> np.ndarray:
    return image_to_numpy(img) > 127


def sample_from_messages(group: Dict[str, object]) -> Sample:
    """One group of `iter_bag_groups` -> Sample (Frame + ground truth when present)."""
    rgb = sensor = points = intr = None
    extra = {}
    sensor_type = THERMAL
    stamp = None
    frame_id, cloud_frame_id = FRAME_ID, FRAME_ID
    if TOPIC_RGB in group:
        m = group[TOPIC_RGB]
        if m.encoding != "rgb8":
            from .msgconv import rgb_from_image
            rgb = rgb_from_image(m)
        else:
            rgb = image_to_numpy(m)
        stamp, frame_id = _stamp_ns(m.header.stamp), m.header.frame_id
    if TOPIC_SENSOR in group:
        m = group[TOPIC_SENSOR]
        sensor = image_to_numpy(m).astype(np.float32, copy=False)
        st = sensor_type_from_frame_id(m.header.frame_id)
        if st is None:
            raise ValueError(f"sensor image frame_id {m.header.frame_id!r} names no sensor "
                             f"type (expected one of {sorted(SENSOR_FRAME_IDS.values())})")
        sensor_type = st
        stamp = stamp if stamp is not None else _stamp_ns(m.header.stamp)
    if TOPIC_POINTS in group:
        m = group[TOPIC_POINTS]
        points = cloud_to_numpy(m)
        curv = cloud_curvature(m) if points.ndim == 3 else None
        if curv is not None:
            extra[SCAN_CURVATURE] = curv
        cloud_frame_id = m.header.frame_id
        stamp = stamp if stamp is not None else _stamp_ns(m.header.stamp)
    if TOPIC_CAMERA_INFO in group:
        intr = camera_info_to_intrinsics(group[TOPIC_CAMERA_INFO])
    gt = group.get(TOPIC_GT)
    frame = Frame(rgb=rgb, sensor=sensor, sensor_type=sensor_type, points=points,
                  intrinsics=intr, stamp_ns=stamp or 0, frame_id=frame_id,
                  cloud_frame_id=cloud_frame_id,
                  registered=bool(gt.registered) if gt is not None else True,
                  stream=gt.category if gt is not None and gt.category else "default",
                  extra_maps=extra)
    if gt is None:
        return Sample(frame=frame, label=0, category=frame.stream, defect_type="unknown")
    masks = {name: _mask_from(img) for name, img in zip(gt.mask_modalities, gt.modality_masks)}
    return Sample(frame=frame, label=int(gt.label), category=gt.category,
                  defect_type=gt.defect_type, description=gt.description,
                  gt_mask=_mask_from(gt.mask) if gt.has_mask else None, gt_masks=masks,
                  sample_id=gt.sample_id)


def read_bag(path: Union[str, Path]) -> Iterator[Sample]:
    """Samples of a bag written by `write_bag` (exact round trip of images, cloud, masks)."""
    for group in iter_bag_groups(path):
        yield sample_from_messages(group)


@dataclass
class BagInfo:
    parts: int
    topics: Dict[str, int]
    bytes: int


def bag_info(path: Union[str, Path]) -> BagInfo:
    """Message counts per topic and total size on disk of a bag directory."""
    path = Path(path)
    with Reader(path) as r:
        topics = {c.topic: c.msgcount for c in r.connections}
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return BagInfo(parts=max(topics.values()) if topics else 0, topics=topics, bytes=size)
