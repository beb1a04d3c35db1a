"""msg <-> numpy conversions: exact round trips, padding, byte order, and clear refusals."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import PointField
from zsg_ros_testkit import header

from zsg_iad_ros.core.frame import CameraIntrinsics, DefectRegion, Detection
from zsg_iad_ros.msg import AnomalyReport, DefectRegion as DefectRegionMsg
from zsg_iad_ros.ros import conversions as conv

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("encoding,dtype,ch", [
    ("rgb8", np.uint8, 3), ("bgr8", np.uint8, 3), ("mono8", np.uint8, 1),
    ("mono16", np.uint16, 1), ("16UC1", np.uint16, 1), ("32FC1", np.float32, 1),
    ("64FC1", np.float64, 1), ("16SC1", np.int16, 1)])
def test_image_round_trip_is_exact(encoding, dtype, ch):
    shape = (5, 7, ch) if ch > 1 else (5, 7)
    a = (RNG.random(shape) * 1000).astype(dtype)
    msg = conv.numpy_to_image(a, encoding, header(1.0))
    assert msg.step == 7 * ch * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(conv.image_to_numpy(msg), a)


def _padded(arr: np.ndarray, encoding: str, pad: int, bigendian: bool):
    """Image with `pad` bytes of garbage at the end of each row, in the given byte order."""
    msg = conv.numpy_to_image(arr, encoding)
    a = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.reshape(arr.shape[0], -1).view(np.uint8).reshape(arr.shape[0], -1)
    rows = np.concatenate([rows, np.full((arr.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg.step = rows.shape[1]
    msg.is_bigendian = int(bigendian)
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("bigendian", [False, True])
def test_row_padding_and_byte_order_are_honoured(bigendian):
    a16 = (RNG.random((4, 6)) * 60000).astype(np.uint16)
    np.testing.assert_array_equal(
        conv.image_to_numpy(_padded(a16, "mono16", 6, bigendian)), a16)
    f32 = RNG.random((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(conv.image_to_sensor(_padded(f32, "32FC1", 4, bigendian)),
                                  f32)


def test_bgr_is_swapped_to_rgb_and_sensor_is_float32():
    rgb = RNG.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(conv.image_to_rgb(conv.numpy_to_image(rgb[..., ::-1], "bgr8")),
                                  rgb)
    mono = RNG.integers(0, 255, (4, 4), dtype=np.uint8)
    s = conv.image_to_sensor(conv.numpy_to_image(mono, "mono8"))
    assert s.dtype == np.float32 and (s == mono).all()


@pytest.mark.parametrize("mutate,reason", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported_encoding"),
    (lambda m: setattr(m, "data", m.data[:-1]), "truncated"),
    (lambda m: setattr(m, "data", m.data + m.data[:3]), "size_mismatch"),
    (lambda m: setattr(m, "step", 2), "bad_step"),
    (lambda m: setattr(m, "width", 0), "empty_image"),
])
def test_malformed_images_are_refused_with_a_reason(mutate, reason):
    msg = conv.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    mutate(msg)
    with pytest.raises(conv.ConversionError) as e:
        conv.image_to_rgb(msg)
    assert e.value.reason == reason


def test_wrong_modality_encoding_is_refused():
    with pytest.raises(conv.ConversionError, match="unsupported_encoding"):
        conv.image_to_rgb(conv.numpy_to_image(np.zeros((4, 4), np.uint8), "mono8"))
    with pytest.raises(conv.ConversionError, match="unsupported_encoding"):
        conv.image_to_sensor(conv.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8"))
    nan = conv.numpy_to_image(np.full((4, 4), np.nan, np.float32), "32FC1")
    with pytest.raises(conv.ConversionError, match="no_finite_values"):
        conv.image_to_sensor(nan)


def test_organized_cloud_round_trip_keeps_nan():
    pts = RNG.random((4, 5, 3)).astype(np.float32)
    pts[1, 2] = np.nan
    out = conv.pointcloud2_to_xyz(conv.xyz_to_pointcloud2(pts, header(1.0)))
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, pts)


@pytest.mark.parametrize("bigendian", [False, True])
def test_cloud_with_extra_fields_any_offsets_and_row_padding(bigendian):
    o = ">" if bigendian else "<"
    dt = np.dtype({"names": ["rgb", "z", "intensity", "x", "y"],
                   "formats": [o + "u4", o + "f4", o + "f8", o + "f4", o + "f4"],
                   "offsets": [0, 4, 8, 20, 28], "itemsize": 36})
    rec = np.zeros((3, 4), dt)
    xyz = RNG.random((3, 4, 3)).astype(np.float32)
    rec["x"], rec["y"], rec["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    msg = conv.array_to_pointcloud2(rec)
    assert msg.is_bigendian == bigendian
    # pad every row with 8 bytes
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(3, -1)
    msg.data = np.concatenate([rows, np.zeros((3, 8), np.uint8)], axis=1).tobytes()
    msg.row_step += 8
    np.testing.assert_array_equal(conv.pointcloud2_to_xyz(msg), xyz)


def test_scanner_curvature_field_read_from_an_organized_cloud():
    """PCL PointNormal layout (x, y, z, pad, normal_x..z, curvature): the curvature comes back
    on the cloud's grid; an unorganized cloud or one without the field gives None."""
    dt = np.dtype({"names": ["x", "y", "z", "normal_x", "normal_y", "normal_z", "curvature"],
                   "formats": ["<f4"] * 7, "offsets": [0, 4, 8, 16, 20, 24, 32],
                   "itemsize": 48})
    rec = np.zeros((3, 4), dt)
    curv = RNG.random((3, 4)).astype(np.float32)
    curv[0, 1] = np.inf
    rec["x"], rec["y"], rec["z"], rec["curvature"] = 0.1, 0.2, 0.5, curv
    out = conv.pointcloud2_curvature(conv.array_to_pointcloud2(rec))
    assert out.shape == (3, 4) and np.isnan(out[0, 1])
    np.testing.assert_array_equal(np.delete(out.ravel(), 1), np.delete(curv.ravel(), 1))
    assert conv.pointcloud2_curvature(conv.array_to_pointcloud2(rec.reshape(-1))) is None
    assert conv.pointcloud2_curvature(conv.xyz_to_pointcloud2(RNG.random((3, 4, 3)))) is None


def test_unorganized_cloud_drops_non_finite_points():
    pts = RNG.random((10, 3)).astype(np.float32)
    pts[3] = np.nan
    out = conv.pointcloud2_to_xyz(conv.xyz_to_pointcloud2(pts))
    np.testing.assert_array_equal(out, np.delete(pts, 3, axis=0))


def test_malformed_clouds_are_refused_with_a_reason():
    good = conv.xyz_to_pointcloud2(np.ones((4, 3), np.float32))

    def refused(msg, reason):
        with pytest.raises(conv.ConversionError) as e:
            conv.pointcloud2_to_xyz(msg)
        assert e.value.reason == reason

    no_z = conv.xyz_to_pointcloud2(np.ones((4, 3), np.float32))
    no_z.fields = no_z.fields[:2]
    refused(no_z, "missing_xyz_fields")
    int_z = conv.xyz_to_pointcloud2(np.ones((4, 3), np.float32))
    int_z.fields[2].datatype = PointField.INT32
    refused(int_z, "bad_xyz_datatype")
    empty = conv.xyz_to_pointcloud2(np.ones((4, 3), np.float32))
    empty.width, empty.row_step, empty.data = 0, 0, b""
    refused(empty, "empty_cloud")
    refused(conv.xyz_to_pointcloud2(np.full((4, 3), np.nan, np.float32)), "no_finite_points")
    trunc = conv.xyz_to_pointcloud2(np.ones((4, 3), np.float32))
    trunc.data = trunc.data[:-4]
    refused(trunc, "truncated")
    past = conv.xyz_to_pointcloud2(np.ones((4, 3), np.float32))
    past.fields[2].offset = 10
    refused(past, "bad_field")
    assert conv.pointcloud2_to_xyz(good).shape == (4, 3)


def test_camera_info_round_trip_and_refusal():
    intr = CameraIntrinsics(500.0, 510.0, 320.5, 240.5, 640, 480)
    assert conv.camera_info_to_intrinsics(conv.intrinsics_to_camera_info(intr)) == intr
    bad = conv.intrinsics_to_camera_info(intr)
    bad.k = [0.0] * 9
    with pytest.raises(conv.ConversionError, match="bad_camera_info"):
        conv.camera_info_to_intrinsics(bad)


def test_region_round_trip_is_exact():
    r = DefectRegion("scratch", 0.75, (3, 4, 10, 2), 17, (8.5, 5.0), (0.1, -0.2, 0.5),
                     ["rgb", "geometry"], "major")
    msg = conv.region_to_msg(r, header(2.0), "depth_optical")
    assert msg.centroid_3d.header.frame_id == "depth_optical" and msg.has_centroid_3d
    assert msg.severity == DefectRegionMsg.SEVERITY_MAJOR
    back = conv.region_from_msg(msg)
    assert back.bbox_xywh == r.bbox_xywh and back.area_px == 17 and back.severity == "major"
    np.testing.assert_allclose(back.centroid_3d, r.centroid_3d, rtol=1e-6)
    assert back.modalities == r.modalities and back.defect_type == "scratch"
    no3d = conv.region_to_msg(DefectRegion("dent", 0.5, (0, 0, 1, 1), 1, (0, 0)), header(0), "f")
    assert not no3d.has_centroid_3d and conv.region_from_msg(no3d).centroid_3d is None


def test_detection_to_report_fields():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:3] = True
    det = Detection(anomaly_map=mask.astype(np.float32), pred_mask=mask, pred_score=0.8,
                    threshold=0.5, modality_scores={"rgb": 0.8, "geometry": 0.3},
                    modalities_present={"rgb": True, "sensor": False, "geometry": True},
                    regions=[DefectRegion("dent", 0.9, (1, 1, 2, 2), 4, (1.5, 1.5))],
                    timings_ms={"features": 12.0}, model_id="m1",
                    report={"schema_version": "1.0", "valid": True},
                    rule_results=[{"name": "structure", "passed": True, "reason": "",
                                   "score": 1.0}])
    r = conv.detection_to_report(det, header(3.0), "xray", "line1", "cam", {"queue": 1.0})
    assert r.status == AnomalyReport.STATUS_ANOMALOUS and r.pred_score == pytest.approx(0.8)
    assert {m.name: (m.present, round(m.score, 3)) for m in r.modality_scores} == {
        "rgb": (True, 0.8), "sensor": (False, 0.0), "geometry": (True, 0.3)}
    assert r.mask_area_fraction == pytest.approx(0.2) and r.report_valid
    assert r.report_schema_version == "1.0" and r.sensor_type == "xray"
    assert {s.stage for s in r.latencies} == {"features", "queue"}
    det.confident = False
    assert conv.detection_to_report(det, header(3.0), "xray", "l", "c").status == \
        AnomalyReport.STATUS_UNKNOWN
    det.confident, det.report = True, None
    assert not conv.detection_to_report(det, header(3.0), "xray", "l", "c").report_valid
