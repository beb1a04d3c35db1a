"""Real-sample loaders on the files in the shared data folder (skipped where absent)."""
import csv

import numpy as np
import pytest

from zsg_iad_ros.data.bags import read_bag, write_bag
from zsg_iad_ros.data.real import load_magnetic_tile, load_mulsen, real_data_root

ROOT = real_data_root()
MULSEN = ROOT / "mulsen_ad_processed"
TILE = ROOT / "magnetic_tile"


@pytest.mark.skipif(not MULSEN.is_dir(), reason="MulSen-AD samples not present")
def test_mulsen_matches_manifest():
    samples = load_mulsen(categories=["cube"])
    with open(MULSEN / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] == "cube"]
    assert len(samples) == len(rows)
    by_id = {s.sample_id: s for s in samples}
    for r in rows:
        s = by_id[f"mulsen/cube/{r['defect_type']}/{r['sample_id']}"]
        assert s.label == int(r["is_anomalous"])
        f = s.frame
        assert f.registered is False and f.sensor_type == "thermal" and f.stream == "cube"
        assert f.rgb.shape == (256, 256, 3) and f.rgb.dtype == np.uint8
        assert f.sensor.dtype == np.float32 and f.sensor.shape == (256, 256)
        assert f.points.shape == (256, 256, 3) and np.isfinite(f.points).all()
        assert set(f.extra_maps) == {"pc_curvature", "pc_normal_deviation"}
        assert all(0 <= m.min() and m.max() <= 1 for m in f.extra_maps.values())
        if r["gt_mask"]:
            assert s.gt_mask.sum() == int(r["mask_pixels"])
        elif s.label:
            assert s.gt_mask is None  # defect without RGB ground truth: pixel metrics skip it
        else:
            assert not s.gt_mask.any()


@pytest.mark.skipif(not MULSEN.is_dir(), reason="MulSen-AD samples not present")
def test_mulsen_bag_round_trip(tmp_path):
    samples = [s for s in load_mulsen(categories=["button_cell"])][:3]
    write_bag(tmp_path / "m", samples)
    back = list(read_bag(tmp_path / "m"))
    for a, b in zip(samples, back):
        assert np.array_equal(a.frame.rgb, b.frame.rgb)
        assert a.frame.points.tobytes() == b.frame.points.tobytes()
        # the scanner's curvature travels as the cloud's `curvature` field
        curv = [s.frame.extra_maps["pc_curvature"] for s in (a, b)]
        assert np.array_equal(*curv)
        assert b.frame.registered is False
        assert (a.gt_mask is None) == (b.gt_mask is None)
    with pytest.raises(ValueError):
        load_mulsen(categories=["teapot"])


@pytest.mark.skipif(not TILE.is_dir(), reason="magnetic tile samples not present")
def test_magnetic_tile():
    samples = load_magnetic_tile()
    with open(TILE / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(samples) == len(rows)
    kinds = {s.defect_type for s in samples}
    assert kinds == {"good", "blowhole", "crack", "fray"}
    for s in samples:
        f = s.frame
        assert f.rgb.shape == (256, 256, 3) and f.sensor is None and f.points is None
        assert np.array_equal(f.rgb[..., 0], f.rgb[..., 2])
        assert s.gt_mask.shape == (256, 256)
        assert s.gt_mask.any() == bool(s.label)  # nearest resize keeps every defect


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mulsen(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        load_magnetic_tile(tmp_path)
