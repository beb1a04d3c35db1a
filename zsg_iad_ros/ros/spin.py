"""The `main()` shared by the package's nodes: init, build, spin, clean shutdown."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], name: str, args=None) -> int:
    """Spin the node built by `make_node` until Ctrl-C or shutdown; returns the exit status.

    A node that cannot be built (model load failure, bad parameters) is logged as fatal with
    the reason and gives status 1, so `ros2 run` and launch report it."""
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = make_node()
        except Exception as e:
            rclpy.logging.get_logger(name).fatal(f"cannot start: {type(e).__name__}: {e}")
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
