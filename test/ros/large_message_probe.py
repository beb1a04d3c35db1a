"""Large sensor messages between two processes: what arrives of 640x480 organized clouds and
1280x720 RGB images published at 10 Hz with the sensor-data QoS, the inspection node's input
QoS (best effort, keep last 5). Used by test_transport.py; run alone to print the counts:

    source tools/activate.sh && python test/ros/large_message_probe.py compare [frames [w h]]

`sub` and `pub` are the two processes; `compare` runs them with the middleware's defaults and
with config/fastdds_single_host.xml and prints both counts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "config" / "fastdds_single_host.xml"
PROFILE_ENV = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
CLOUD_TOPIC, IMAGE_TOPIC = "probe/depth/points", "probe/rgb/image_raw"


def _qos():
    """The node's default input QoS (best effort, volatile, keep last 5); reliable with
    PROBE_RELIABLE=1 (as input_qos_reliability: reliable, with a reliable publisher)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    if os.environ.get("PROBE_RELIABLE") == "1":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    return qos_profile_sensor_data


def _messages(width: int = 640, height: int = 480):
    """An organized cloud (x, y, z, rgb float32: 16 bytes a point; 640x480: about 4.9 MB) and
    a 1280x720 rgb8 image (about 2.8 MB)."""
    from sensor_msgs.msg import Image, PointCloud2, PointField
    cloud = PointCloud2(height=height, width=width, is_bigendian=False, point_step=16,
                        row_step=width * 16, is_dense=True)
    cloud.fields = [PointField(name=n, offset=4 * k, datatype=PointField.FLOAT32, count=1)
                    for k, n in enumerate(("x", "y", "z", "rgb"))]
    cloud.data = bytes(height * width * 16)
    image = Image(height=720, width=1280, encoding="rgb8", is_bigendian=0, step=1280 * 3)
    image.data = bytes(720 * 1280 * 3)
    return cloud, image


def subscribe(seconds: float, idle_s: float = 3.0) -> dict:
    """Count the frames (distinct stamps) of each topic; stop `idle_s` after the last message
    or after `seconds`. Prints 'ready' once subscribed, then the counts as JSON."""
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2
    rclpy.init()
    node = rclpy.create_node("large_message_sub")
    got = {"cloud": set(), "image": set()}
    last = [time.monotonic()]

    def keep(key):
        def cb(msg):
            got[key].add(msg.header.stamp.sec)
            last[0] = time.monotonic()
        return cb
    node.create_subscription(PointCloud2, CLOUD_TOPIC, keep("cloud"), _qos())
    node.create_subscription(Image, IMAGE_TOPIC, keep("image"), _qos())
    print("ready", flush=True)
    end = time.monotonic() + seconds
    started = False
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        started = started or any(got.values())
        if started and time.monotonic() - last[0] > idle_s:
            break
    counts = {k: len(v) for k, v in got.items()}
    node.destroy_node()
    rclpy.shutdown()
    return counts


def publish(frames: int, width: int = 640, height: int = 480, rate_hz: float = 10.0,
            discovery_s: float = 30.0) -> dict:
    """Wait for the subscriber, then publish `frames` clouds and images at `rate_hz`."""
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2
    rclpy.init()
    node = rclpy.create_node("large_message_pub")
    pubs = [node.create_publisher(PointCloud2, CLOUD_TOPIC, _qos()),
            node.create_publisher(Image, IMAGE_TOPIC, _qos())]
    end = time.monotonic() + discovery_s
    while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs):
        time.sleep(0.05)
    matched = all(p.get_subscription_count() for p in pubs)
    time.sleep(0.5)  # let the readers settle before the first frame
    cloud, image = _messages(width, height)
    t0 = time.monotonic()
    for k in range(frames):
        for msg in (cloud, image):
            msg.header.stamp.sec = k + 1
            msg.header.frame_id = "probe"
        pubs[0].publish(cloud)
        pubs[1].publish(image)
        time.sleep(max(0.0, t0 + (k + 1) / rate_hz - time.monotonic()))
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()
    return {"published": frames, "matched": matched,
            "cloud_bytes": len(cloud.data), "image_bytes": len(image.data)}


def run_pair(frames: int, profile: bool, domain_id: int, cloud_size=(640, 480),
             timeout_s: float = 120.0) -> dict:
    """The two processes in `domain_id`, with or without the single-host profile."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    for k in PROFILE_ENV:
        env.pop(k, None)
    if profile:
        from zsg_iad_ros.ros.launch_args import profile_variable
        env[profile_variable(os.environ.get("ROS_DISTRO", ""))] = str(PROFILE)
    me = [sys.executable, str(Path(__file__).resolve())]
    sub = subprocess.Popen(me + ["sub", str(timeout_s)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in sub.stdout:  # middleware warnings may come first
            seen.append(line)
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError(f"subscriber did not start: {''.join(seen)}")
        pub = subprocess.run(me + ["pub", str(frames), *map(str, cloud_size)], env=env,
                             capture_output=True, text=True, timeout=timeout_s)
        out, _ = sub.communicate(timeout=timeout_s)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    if pub.returncode != 0 or sub.returncode != 0:
        raise RuntimeError(f"probe failed:\n{pub.stdout}{pub.stderr}\n{out}")
    result = json.loads(pub.stdout.strip().splitlines()[-1])
    result.update(json.loads(out.strip().splitlines()[-1]))
    result["profile"] = profile
    return result


def main(argv):
    mode = argv[1] if len(argv) > 1 else "compare"
    if mode == "sub":
        print(json.dumps(subscribe(float(argv[2]))), flush=True)
    elif mode == "pub":
        print(json.dumps(publish(*map(int, argv[2:5]))), flush=True)
    else:
        frames = int(argv[2]) if len(argv) > 2 else 30
        size = tuple(map(int, argv[3:5])) if len(argv) > 4 else (640, 480)
        domain = 150 + os.getpid() % 50
        for profile in (False, True):
            r = run_pair(frames, profile, domain, size)
            print(f"{'single-host profile' if profile else 'middleware defaults':20s}: "
                  f"{r['cloud']}/{r['published']} {size[0]}x{size[1]} clouds "
                  f"({r['cloud_bytes'] / 1e6:.1f} MB), "
                  f"{r['image']}/{r['published']} images ({r['image_bytes'] / 1e6:.1f} MB) "
                  f"at 10 Hz", flush=True)


if __name__ == "__main__":
    main(sys.argv)
