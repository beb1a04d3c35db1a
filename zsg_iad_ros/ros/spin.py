"""The `main()` shared by the package's nodes: init, build, spin, clean shutdown."""
from __future__ import annotations

import threading
import time
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
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


class BackgroundSpin:
    """Spins an executor's nodes in a thread of its own until `stop()`.

    `stop()` ends the spinning thread, lets the callbacks it handed out finish, and only then
    shuts the executor down, after which the nodes may be destroyed. `Executor.shutdown` alone
    destroys the executor's guard condition without waiting for them (rclpy 7-9; upstream
    ros2/rclpy#1666): a queued callback then fails on it, and the failure is printed at exit
    as "The following exception was never retrieved: cannot use Destroyable because
    destruction was requested"."""

    def __init__(self, executor: Executor, period_s: float = 0.05):
        self.executor = executor
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        ctx = self.executor.context
        try:
            while not self._stop.is_set() and ctx.ok():
                self.executor.spin_once(timeout_sec=self._period_s)
        except ExternalShutdownException:
            pass

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop spinning, wait for the callbacks in progress, shut the executor down; True
        when everything stopped within `timeout_s`."""
        end = time.monotonic() + timeout_s
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        # The callbacks a MultiThreadedExecutor handed to its worker threads (no public API
        # lists them; absent elsewhere, where spin_once runs callbacks in the spinning thread).
        for task in list(getattr(self.executor, "_futures", ())):
            while not task.done() and time.monotonic() < end:
                time.sleep(0.005)
        done = self.executor.shutdown(timeout_sec=max(end - time.monotonic(), 0.0))
        return done and not self._thread.is_alive()
