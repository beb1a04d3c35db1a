"""Helpers shared by the ROS tests (imported by conftest.py and the test modules)."""
from __future__ import annotations

import os
import threading
import time
import uuid

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String

from zsg_iad_ros.msg import AnomalyReport, PartDecision
from zsg_iad_ros.ros import conversions as conv
from zsg_iad_ros.ros.spin import BackgroundSpin

WAIT_S = 30.0  # upper bound for any single wait; a healthy run needs far less
#: synchronizer the graphs use; ZSG_TEST_SYNC_BACKEND=message_filters runs the node tests on
#: a ROS install's message_filters
SYNC_BACKEND = os.environ.get("ZSG_TEST_SYNC_BACKEND", "builtin")


def stamp_of(t: float) -> Time:
    sec = int(t)
    return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)))


def header(t: float, frame_id: str = "cam_optical") -> Header:
    return Header(stamp=stamp_of(t), frame_id=frame_id)


class Graph:
    """Inspection node (+ reject_gate) and a probe node, in a namespace of their own."""

    def __init__(self, detector, params: dict, with_gate: bool = False):
        from zsg_iad_ros.ros.inspection_node import InspectionNode
        from zsg_iad_ros.ros.reject_gate import RejectGate
        self.ns = "/t_" + uuid.uuid4().hex[:8]
        params = {"stream": self.ns, "sync_backend": SYNC_BACKEND, **params}
        self.node = InspectionNode(namespace=self.ns, detector=detector, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.gate = RejectGate(namespace=self.ns) if with_gate else None
        self.probe = rclpy.create_node("probe", namespace=self.ns)
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        p = self.probe
        self.pub = {"rgb": p.create_publisher(Image, "rgb/image_raw", rel),
                    "sensor": p.create_publisher(Image, "sensor/image_raw", rel),
                    "depth": p.create_publisher(PointCloud2, "depth/points", rel),
                    "camera_info": p.create_publisher(CameraInfo, "rgb/camera_info", rel)}
        self.got = {k: [] for k in ("report", "narrated", "mask", "anomaly_map", "overlay",
                                    "decision", "diagnostics", "model_info")}
        self._lock = threading.Lock()
        for key, typ, topic in (("report", AnomalyReport, "inspection/report"),
                                ("narrated", AnomalyReport, "inspection/report_narrated"),
                                ("mask", Image, "inspection/mask"),
                                ("anomaly_map", Image, "inspection/anomaly_map"),
                                ("overlay", Image, "inspection/overlay"),
                                ("decision", PartDecision, "inspection/decision"),
                                ("diagnostics", DiagnosticArray, "/diagnostics")):
            p.create_subscription(typ, topic, self._recorder(key), rel)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        p.create_subscription(String, "inspection/model_info", self._recorder("model_info"),
                              latched)
        self.executor = MultiThreadedExecutor(num_threads=3)
        for n in (self.node, self.gate, self.probe):
            if n is not None:
                self.executor.add_node(n)
        self._spinner = BackgroundSpin(self.executor)
        assert self.wait(lambda: all(pub.get_subscription_count() > 0
                                     for pub in self.pub.values())), "discovery timed out"
        assert self.wait(lambda: self.probe.count_publishers(
            f"{self.ns}/inspection/report") > 0), "report publisher not discovered"

    def _recorder(self, key):
        def cb(msg):
            if key == "diagnostics" and not any(s.hardware_id.startswith(self.ns)
                                                for s in msg.status):
                return  # another node's diagnostics
            with self._lock:
                self.got[key].append(msg)
        return cb

    def messages(self, key):
        with self._lock:
            return list(self.got[key])

    @staticmethod
    def wait(predicate, timeout: float = WAIT_S) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())

    def publish(self, t: float, rgb=None, sensor=None, points=None, frame_id="cam_optical",
                rgb_encoding="rgb8", sensor_encoding="32FC1", camera_info=None, wait=True,
                cloud_frame_id=None):
        """Publish one part's messages, all stamped t (arrays converted, messages as given).

        With `wait`, return once the node has taken each message in, so that a burst of test
        messages cannot overflow the subscriptions' history (messages lost before reaching
        the node are invisible to it)."""
        h = header(t, frame_id)
        before = dict(self.node._stats.received)
        want = {"rgb": rgb is not None, "sensor": sensor is not None,
                "geometry": points is not None}
        if camera_info is not None:
            camera_info.header = h
            self.pub["camera_info"].publish(camera_info)
            # CameraInfo is not synchronized: make sure it is in before the frame
            assert self.wait(lambda: self.node._camera_info is not None), "CameraInfo lost"
        if sensor is not None:
            self.pub["sensor"].publish(sensor if isinstance(sensor, Image) else
                                       conv.numpy_to_image(sensor, sensor_encoding, h))
        if points is not None:
            self.pub["depth"].publish(points if isinstance(points, PointCloud2) else
                                      conv.xyz_to_pointcloud2(
                                          points, header(t, cloud_frame_id or frame_id)))
        if rgb is not None:
            if not isinstance(rgb, Image):
                rgb = conv.numpy_to_image(rgb[..., ::-1] if rgb_encoding == "bgr8" else rgb,
                                          rgb_encoding, h)
            self.pub["rgb"].publish(rgb)
        if wait:
            assert self.wait(lambda: all(self.node._stats.received[m] > before[m]
                                         for m, w in want.items() if w)), f"inputs at {t} lost"

    def at(self, key: str, t: float):
        """Messages recorded under `key` whose header stamp is t."""
        ns = conv.stamp_to_ns(stamp_of(t))
        return [m for m in self.messages(key) if conv.stamp_to_ns(m.header.stamp) == ns]

    def reports_at(self, t: float):
        ns = conv.stamp_to_ns(stamp_of(t))
        return [r for r in self.messages("report") if conv.stamp_to_ns(r.header.stamp) == ns]

    def wait_report(self, t: float, timeout: float = WAIT_S):
        assert self.wait(lambda: self.reports_at(t), timeout), f"no report for stamp {t}"
        return self.reports_at(t)[0]

    def settle(self, timeout: float = WAIT_S) -> dict:
        """Wait until nothing is pending, return the node's frame accounting."""
        self.wait(lambda: self.node.accounting()["frames_pending"] == 0, timeout)
        return self.node.accounting()

    def close(self):
        if self.executor is None:
            return
        self._spinner.stop()
        self.executor = None
        for n in (self.node, self.gate, self.probe):
            if n is not None:
                n.destroy_node()


def diag_values(arr: DiagnosticArray) -> dict:
    """Flatten a DiagnosticArray into {'<status suffix>/<key>': value}."""
    out = {}
    for s in arr.status:
        part = s.name.rsplit(": ", 1)[-1]
        for kv in s.values:
            out[f"{part}/{kv.key}"] = kv.value
    return out


def good_part(size: int = 96, seed: int = 0, defect: bool = False):
    """A small hand-made part: textured plate, warm sensor image, tilted organized cloud.

    With `defect`, a bright blob on the RGB image and a hot spot at the same place; returns
    (rgb uint8, sensor float32, points float32 (H, W, 3), gt_mask bool)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 110 + 20 * np.sin(xx / 6.0) + rng.normal(0, 3, (size, size))
    rgb = np.clip(np.stack([base, base * 0.9, base * 0.8], -1), 0, 255).astype(np.uint8)
    sensor = (30.0 + 0.02 * xx + rng.normal(0, 0.05, (size, size))).astype(np.float32)
    z = 0.5 + 0.001 * xx
    f = size * 1.2
    points = np.stack([(xx - size / 2) * z / f, (yy - size / 2) * z / f, z], -1)
    gt = np.zeros((size, size), bool)
    if defect:
        c = size * 0.3
        gt = (xx - c) ** 2 + (yy - c) ** 2 <= (size * 0.08) ** 2
        rgb[gt] = (250, 30, 30)
        sensor[gt] += 5.0
    return rgb, sensor, points.astype(np.float32), gt
