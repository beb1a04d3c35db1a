"""The installed `inspection_node` executable, started as `ros2 run` would start it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from zsg_ros_testkit import good_part, header

from zsg_iad_ros.msg import AnomalyReport
from zsg_iad_ros.ros import conversions as conv

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / "install" / "zsg_iad_ros" / "lib" / "zsg_iad_ros" / "inspection_node"
PARAMS = ROOT / "config" / "inspect.yaml"

pytestmark = pytest.mark.skipif(not EXE.exists(), reason="package not built with colcon")


def _start(*extra):
    ns = "/exe_" + uuid.uuid4().hex[:8]
    cmd = [str(EXE), "--ros-args", "--params-file", str(PARAMS), "-r", f"__ns:={ns}",
           "-p", "device:=cpu", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ))
    return ns, proc


def test_installed_executable_comes_up_publishes_and_exits_cleanly():
    ns, proc = _start()
    node = rclpy.create_node("exe_probe", namespace=ns)
    try:
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        got = {"info": [], "report": []}
        node.create_subscription(String, "inspection/model_info", got["info"].append, latched)
        node.create_subscription(AnomalyReport, "inspection/report", got["report"].append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        from sensor_msgs.msg import Image, PointCloud2
        pubs = [node.create_publisher(Image, "rgb/image_raw", rel),
                node.create_publisher(Image, "sensor/image_raw", rel),
                node.create_publisher(PointCloud2, "depth/points", rel)]
        end = time.monotonic() + 90.0  # model load on a busy CPU
        while not got["info"] and time.monotonic() < end and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.2)
        assert got["info"], f"no model_info; exit={proc.poll()}"
        info = json.loads(got["info"][0].data)
        assert info["model_id"] and info["sensor_type"] == "thermal"
        rgb, sensor, points, _ = good_part(64)
        end = time.monotonic() + 60.0
        t = 1.0
        while not got["report"] and time.monotonic() < end:
            if all(p.get_subscription_count() for p in pubs):
                h = header(t)
                pubs[1].publish(conv.numpy_to_image(sensor, "32FC1", h))
                pubs[2].publish(conv.xyz_to_pointcloud2(points, h))
                pubs[0].publish(conv.numpy_to_image(rgb, "rgb8", h))
                t += 1.0
            for _ in range(10):
                rclpy.spin_once(node, timeout_sec=0.1)
        assert got["report"], "the executable published no report"
        r = got["report"][0]
        assert r.header.frame_id == "cam_optical" and r.model_id == info["model_id"]
    finally:
        node.destroy_node()
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"executable did not exit on SIGINT:\n{out}")
    assert proc.returncode == 0, out


def test_model_that_fails_to_load_exits_non_zero_naming_it():
    missing = "/nonexistent/zsg_model_dir"
    _, proc = _start("-p", f"backbone:={missing}")
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("node with a missing model did not exit")
    assert proc.returncode != 0
    assert "cannot start" in out and f"local path {missing} does not exist" in out
