"""In-process bag player: publishes a bag's messages on their topics with rclpy, keeping the
recorded headers, at real time or `rate` times faster.

Bags are read with `zsg_iad_ros.data.bags.iter_bag_messages` (rosbags, no ROS install); each
message's CDR bytes are deserialized straight into the rclpy message class of its type, so
what is published is bit-for-bit what was recorded. Topics are published relative to the
player's namespace ("/rgb/image_raw" -> "rgb/image_raw"), so a namespace moves them.

    python -m zsg_iad_ros.ros.replay --bag path/to/bag --rate 2.0
"""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from zsg_iad_ros.data.bags import iter_bag_messages


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class sensor_msgs.msg.Image."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"cannot map message type {msgtype!r} to a Python class")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as e:
        raise ValueError(f"message type {msgtype!r} is not available in this ROS install: "
                         f"{e}") from e


class BagPlayer(Node):
    """Publishes a bag. `play()` blocks until done (or `stop()`); spin the node elsewhere.

    rate: playback speed factor (1.0 = recorded timing; <= 0 = as fast as possible).
    before_part: optional callable `before_part(stamp_ns)` invoked before the first message of
      each part (a new header stamp) is published; the demo uses it to wait until the node
      has taken the previous part in and to announce the part's stream.
    """

    def __init__(self, bag: str, rate: float = 1.0, topics: Optional[Iterable[str]] = None,
                 node_name: str = "bag_player", before_part: Optional[Callable] = None,
                 **kwargs):
        super().__init__(node_name, **kwargs)
        self.bag = Path(bag)
        if not self.bag.exists():
            raise FileNotFoundError(f"no bag at {self.bag}")
        self.rate = float(rate)
        self.topics = None if topics is None else list(topics)
        self.before_part = before_part
        self._pubs: Dict[str, object] = {}
        self._stop = threading.Event()
        self.published: Dict[str, int] = {}
        self.parts = 0
        # Reliable and deep enough for a burst of one part; a best-effort subscriber matches.
        self._qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)

    def _publisher(self, topic: str, msgtype: str):
        if topic not in self._pubs:
            self._pubs[topic] = (self.create_publisher(message_class(msgtype),
                                                       topic.lstrip("/"), self._qos),
                                 message_class(msgtype))
        return self._pubs[topic]

    def wait_for_subscribers(self, topics: Iterable[str], timeout: float = 10.0) -> bool:
        """Create the publishers of `topics` and wait until each has a subscriber."""
        for topic, msgtype in topics:
            self._publisher(topic, msgtype)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(self._pubs[t][0].get_subscription_count() > 0 for t, _ in topics):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        self._stop.set()

    def play(self) -> Dict[str, int]:
        """Publish every message; returns the count per topic."""
        start_wall = start_bag = None
        last_stamp = None
        for topic, msgtype, t_ns, data in iter_bag_messages(self.bag, self.topics, raw=True):
            if self._stop.is_set():
                break
            pub, cls = self._publisher(topic, msgtype)
            msg = deserialize_message(bytes(data), cls)
            stamp = _header_stamp_ns(msg)
            if stamp is not None and stamp != last_stamp:
                if self.before_part is not None:
                    self.before_part(stamp)
                    if start_wall is not None:  # waiting is not replay time
                        start_wall, start_bag = time.monotonic(), t_ns
                last_stamp = stamp
                self.parts += 1
            if self.rate > 0:
                if start_wall is None:
                    start_wall, start_bag = time.monotonic(), t_ns
                delay = (t_ns - start_bag) * 1e-9 / self.rate - (time.monotonic() - start_wall)
                if delay > 0:
                    self._stop.wait(delay)
            pub.publish(msg)
            self.published[topic] = self.published.get(topic, 0) + 1
        return dict(self.published)


def _header_stamp_ns(msg) -> Optional[int]:
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    return None if stamp is None else stamp.sec * 1_000_000_000 + stamp.nanosec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bag", required=True, help="bag directory written by zsg_iad_ros")
    ap.add_argument("--rate", type=float, default=1.0, help="speed factor; <= 0 = flat out")
    ap.add_argument("--wait", type=float, default=5.0,
                    help="seconds to wait for subscribers before playing")
    args, ros_args = ap.parse_known_args(argv)
    rclpy.init(args=[sys.argv[0], *ros_args])
    player = BagPlayer(args.bag, rate=args.rate)
    spinner = threading.Thread(target=rclpy.spin, args=(player,), daemon=True)
    spinner.start()
    try:
        time.sleep(args.wait)  # discovery
        counts = player.play()
        print(f"published {sum(counts.values())} messages of {player.parts} parts: {counts}")
    except KeyboardInterrupt:
        pass
    finally:
        player.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
