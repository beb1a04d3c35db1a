"""Bag writer/reader: exact round trips in mcap and sqlite3, grouping, conversions."""
import numpy as np
import pytest

from zsg_iad_ros.core.frame import CameraIntrinsics, Frame, Sample
from zsg_iad_ros.data import msgconv
from zsg_iad_ros.data.bags import (SENSOR_FRAME_IDS, TOPIC_GT, TOPIC_POINTS, TOPIC_RGB,
                                   TOPIC_SENSOR, bag_info, iter_bag_groups, iter_bag_messages,
                                   read_bag, sensor_type_from_frame_id, write_bag)
from zsg_iad_ros.data.synthetic import generate_sample


def _samples():
    return [generate_sample("gear", "crack", 1, size=64),
            generate_sample("pcb", "good", 2, size=64),
            generate_sample("woven_fabric", "cold_spot", 3, size=64)]


def _assert_same(a: Sample, b: Sample):
    fa, fb = a.frame, b.frame
    for name in ("rgb", "sensor", "points"):
        x, y = getattr(fa, name), getattr(fb, name)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
    assert np.array_equal(a.gt_mask, b.gt_mask)
    assert a.gt_masks.keys() == b.gt_masks.keys()
    for k in a.gt_masks:
        assert np.array_equal(a.gt_masks[k], b.gt_masks[k]), k
    assert fa.intrinsics == fb.intrinsics
    for attr in ("sensor_type", "stream", "registered"):
        assert getattr(fa, attr) == getattr(fb, attr), attr
    for attr in ("label", "category", "defect_type", "description", "sample_id"):
        assert getattr(a, attr) == getattr(b, attr), attr


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_exact(tmp_path, storage):
    samples = _samples()
    path = tmp_path / f"parts_{storage}"
    assert write_bag(path, samples, storage=storage, rate_hz=4.0, start_ns=10**18) == 3
    assert (path / "metadata.yaml").is_file()
    back = list(read_bag(path))
    assert len(back) == 3
    for a, b in zip(samples, back):
        _assert_same(a, b)
        assert b.frame.rgb.flags.writeable and b.frame.sensor.flags.writeable
    assert [b.frame.stamp_ns for b in back] == [10**18, 10**18 + 250_000_000, 10**18 + 500_000_000]
    info = bag_info(path)
    assert info.parts == 3 and info.topics[TOPIC_GT] == 3 and info.bytes > 0


def test_messages_share_the_rgb_stamp(tmp_path):
    path = tmp_path / "b"
    write_bag(path, _samples()[:2])
    groups = list(iter_bag_groups(path))
    assert len(groups) == 2
    for g in groups:
        stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in g.values()}
        assert len(stamps) == 1
        assert g[TOPIC_SENSOR].header.frame_id in SENSOR_FRAME_IDS.values()
        assert g[TOPIC_POINTS].height == 64 and g[TOPIC_POINTS].width == 64
    assert list(iter_bag_messages(path, topics=["/not/recorded"])) == []
    raw = list(iter_bag_messages(path, topics=[TOPIC_RGB], raw=True))
    assert len(raw) == 2 and all(isinstance(r[3], (bytes, memoryview)) for r in raw)


def test_missing_modalities_and_no_pixel_truth(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    s = Sample(frame=Frame(rgb=rgb, registered=False, stream="tile"), label=1,
               category="tile", defect_type="crack", gt_mask=None, sample_id="t/1")
    path = tmp_path / "b"
    write_bag(path, [s], storage="sqlite3")
    (b,) = list(read_bag(path))
    assert b.frame.sensor is None and b.frame.points is None and b.frame.intrinsics is None
    assert b.gt_mask is None and b.label == 1 and b.frame.registered is False
    assert np.array_equal(b.frame.rgb, rgb)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError):
        write_bag(tmp_path / "x", _samples()[:1], storage="rosbag1")
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        write_bag(tmp_path / "exists", _samples()[:1])
    with pytest.raises(FileNotFoundError):
        list(read_bag(tmp_path / "nothing"))


def test_conversions():
    assert sensor_type_from_frame_id("xray_optical_frame") == "xray"
    assert sensor_type_from_frame_id("camera_optical_frame") is None

    class Msg:  # any object with the message's attributes works
        pass

    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    m = Msg()
    for k, v in msgconv.numpy_to_image_kwargs(a, "mono16").items():
        setattr(m, k, v)
    assert np.array_equal(msgconv.image_to_numpy(m), a)
    # big-endian, padded rows
    m.is_bigendian, m.step = 1, 10
    m.data = np.concatenate([np.pad(r.astype(">u2").view(np.uint8), (0, 2)) for r in a])
    assert np.array_equal(msgconv.image_to_numpy(m), a)
    m.encoding = "yuv422"
    with pytest.raises(ValueError):
        msgconv.image_to_numpy(m)
    with pytest.raises(ValueError):
        msgconv.numpy_to_image_kwargs(a.astype(np.float32), "mono16")
    intr = CameraIntrinsics(100.0, 101.0, 31.5, 23.5, 64, 48)
    m = Msg()
    for k, v in msgconv.intrinsics_to_camera_info_kwargs(intr).items():
        setattr(m, k, v)
    assert msgconv.camera_info_to_intrinsics(m) == intr


def test_cloud_with_padding_and_extra_fields():
    class Field:
        def __init__(self, name, offset, datatype, count=1):
            self.name, self.offset, self.datatype, self.count = name, offset, datatype, count

    class Msg:
        pass

    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(2, 3, 3)).astype(np.float32)
    xyz[0, 1] = np.nan
    rec = np.zeros((2, 3), np.dtype({"names": ["x", "y", "z", "rgb"],
                                     "formats": ["<f4", "<f4", "<f4", "<u4"],
                                     "offsets": [0, 4, 8, 16], "itemsize": 32}))
    rec["x"], rec["y"], rec["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    m = Msg()
    m.height, m.width, m.point_step, m.row_step, m.is_bigendian = 2, 3, 32, 32 * 3 + 8, False
    m.fields = [Field("x", 0, 7), Field("y", 4, 7), Field("z", 8, 7), Field("rgb", 16, 6)]
    m.data = np.concatenate([np.pad(r.view(np.uint8), (0, 8)) for r in rec])
    out = msgconv.cloud_to_numpy(m)
    assert out.shape == (2, 3, 3) and np.array_equal(out, xyz, equal_nan=True)
    assert msgconv.cloud_to_numpy(m, organized=False).shape == (6, 3)
    assert msgconv.cloud_curvature(m) is None
    m.fields = m.fields[:2]
    with pytest.raises(ValueError, match="lacks"):
        msgconv.cloud_to_numpy(m)


def test_cloud_curvature_field_round_trip():
    class Field:
        def __init__(self, d):
            self.__dict__.update(d)

    class Msg:
        pass

    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(2, 3, 3)).astype(np.float32)
    curv = rng.random((2, 3)).astype(np.float32)
    m = Msg()
    for k, v in msgconv.numpy_to_cloud_kwargs(xyz, curv).items():
        setattr(m, k, v)
    m.fields = [Field(f) for f in m.fields]
    assert m.point_step == 16 and [f.name for f in m.fields] == ["x", "y", "z", "curvature"]
    assert np.array_equal(msgconv.cloud_to_numpy(m), xyz)
    assert np.array_equal(msgconv.cloud_curvature(m), curv)
    with pytest.raises(ValueError, match="one value per point"):
        msgconv.numpy_to_cloud_kwargs(xyz, curv[:1])


def test_bag_messages_deserialize_with_the_ros_message_classes(tmp_path):
    """The cdr in our bags is what rclpy (and so `ros2 bag play`) expects for each type."""
    serialization = pytest.importorskip("rclpy.serialization")
    gen = pytest.importorskip("zsg_iad_ros.msg")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    path = tmp_path / "b"
    s = generate_sample("pcb", "missing_part", 5, size=32)
    write_bag(path, [s])
    classes = {"sensor_msgs/msg/Image": sensor_msgs.Image,
               "sensor_msgs/msg/PointCloud2": sensor_msgs.PointCloud2,
               "sensor_msgs/msg/CameraInfo": sensor_msgs.CameraInfo,
               "zsg_iad_ros/msg/GroundTruth": gen.GroundTruth}
    seen = set()
    for topic, msgtype, _t, raw in iter_bag_messages(path, raw=True):
        msg = serialization.deserialize_message(bytes(raw), classes[msgtype])
        seen.add(topic)
        if msgtype == "zsg_iad_ros/msg/GroundTruth":
            assert msg.category == "pcb" and msg.label == 1 and msg.has_mask
            assert list(msg.mask_modalities) == ["rgb", "sensor", "geometry"]
            assert msg.sample_id == s.sample_id and msg.registered
            mask = np.frombuffer(bytes(msg.mask.data), np.uint8).reshape(32, 32) > 0
            assert np.array_equal(mask, s.gt_mask)
        if topic == TOPIC_RGB:
            rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(32, 32, 3)
            assert np.array_equal(rgb, s.frame.rgb)
    assert seen == {TOPIC_RGB, TOPIC_SENSOR, TOPIC_POINTS, TOPIC_GT, "/rgb/camera_info"}
