"""Fixtures for the ROS tests: an isolated DDS domain, one loaded detector, graphs."""
from __future__ import annotations

import os
import sys

# Before rclpy initialises: a domain of our own, discovery on this host only.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
# The test modules import the helper module next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402
import rclpy  # noqa: E402
from zsg_ros_testkit import Graph  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ros_init():
    """rclpy per test module (left alone if something else already initialised it)."""
    owner = not rclpy.ok()
    if owner:
        rclpy.init()
    yield
    if owner:
        rclpy.try_shutdown()


@pytest.fixture(scope="session")
def detector():
    """One CPU detector for the whole session; tests isolate themselves by stream name."""
    from zsg_iad_ros.core.detector import Detector, DetectorConfig
    return Detector(DetectorConfig(device="cpu"))


@pytest.fixture
def make_graph(detector):
    graphs = []

    def make(params=None, with_gate=False):
        g = Graph(detector, params or {}, with_gate)
        graphs.append(g)
        return g
    yield make
    for g in graphs:
        g.close()
