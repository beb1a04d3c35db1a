"""Real-sample loaders on the files in the shared data folder (skipped where absent), and the
real-data evaluation on a folder in a dataset's layout."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

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


def _tile_root(root, n=4):
    """A magnetic-tile folder in the dataset's layout: n defect-free tiles and n with a dark
    blowhole, the defective ones shot under a brighter lamp (a capture difference)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:96]
    for cls, k in (("MT_Free", 0), ("MT_Blowhole", 1)):
        (root / "images" / cls).mkdir(parents=True)
        (root / "ground_truth" / cls).mkdir(parents=True)
        for i in range(n):
            grey = 110 + 8 * np.sin(x / 5.0) + rng.normal(0, 2, (96, 96))
            hole = (y - 30 - 8 * i) ** 2 + (x - 50) ** 2 <= 25 if k else np.zeros((96, 96), bool)
            grey[hole] = 40
            grey *= 1.3 if k else 1.0
            Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(
                root / "images" / cls / f"t{i}.jpg", quality=95)
            Image.fromarray((hole * 255).astype(np.uint8)).save(
                root / "ground_truth" / cls / f"t{i}.png")


def test_real_evaluation_prints_the_content_free_baseline_beside_the_detector(tmp_path):
    """`zsg-evaluate real` scores the content-free map on the same parts: its pixel figures
    and the image AUROC of the frames' brightness, which here separates the tiles by their
    lamp alone (1.0, bright)."""
    from zsg_iad_ros.evaluation.cli import main as cli_main
    _tile_root(tmp_path / "tiles")
    out = tmp_path / "out"
    assert cli_main(["real", "--dataset", "magnetic_tile", "--root", str(tmp_path / "tiles"),
                     "--out", str(out), "--device", "cpu", "--no-plots"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    cf = data["baselines"]["content-free map"]
    assert cf["image_auroc"] == 1.0 and cf["image_polarity"] == "bright"
    assert 0.0 <= cf["pixel_auroc"] <= 1.0
    assert data["configs"]["all"]["overall"]["n_samples"] == 8
    summary = (out / "summary.md").read_text()
    assert "| baseline: content-free map |" in summary
    assert "img AUROC is the frame's mean brightness, bright frames" in summary
    assert "thermal / X-ray brightness" not in data["baselines"]  # tiles have no sensor image


@pytest.mark.skipif(not MULSEN.is_dir(), reason="MulSen-AD samples not present")
def test_real_data_baselines_include_the_sensor_images_level():
    """On MulSen-AD the thermal image's overall level alone ranks the cubes at about 0.94
    (good cubes brighter in it), the RGB frame's brightness at about 0.84."""
    from zsg_iad_ros.evaluation.baselines import real_data_baselines
    b = real_data_baselines(load_mulsen(categories=["cube"]), pixel_stride=8)
    sensor, rgb = b["thermal / X-ray brightness"], b["content-free map"]
    assert sensor["image_polarity"] == "dark" and float(sensor["image_auroc"]) > 0.9
    assert rgb["image_polarity"] == "bright" and float(rgb["image_auroc"]) > 0.8
    assert float(sensor["per_category"]["cube"]["image_auroc"]) == float(sensor["image_auroc"])
