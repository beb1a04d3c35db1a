"""Geometry maps: a planted bump / dent shows where planted, organized and unorganized clouds."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from zsg_iad_ros.core.frame import CameraIntrinsics
from zsg_iad_ros.core.geometry import (centroid_3d, geometry_maps, height_above_plane,
                                       organized_maps, project_to_grid, surface_depth,
                                       unorganized_maps)

K = CameraIntrinsics(fx=300.0, fy=300.0, cx=63.5, cy=63.5, width=128, height=128)


def tilted_plane(bump_m=0.0, at=(90, 40), sigma=4.0, size=128):
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    z = 0.5 + 0.03 * u / size + 0.01 * v / size
    z = z - bump_m * np.exp(-((u - at[0]) ** 2 + (v - at[1]) ** 2) / (2 * sigma ** 2))
    x = (u - K.cx) * z / K.fx
    y = (v - K.cy) * z / K.fy
    return np.stack([x, y, z], -1).astype(np.float32)


def peak(a):
    return np.unravel_index(np.argmax(a), a.shape)


def test_organized_bump_shows_where_planted():
    pts = tilted_plane(bump_m=0.002)
    pts[5:12, 5:12] = np.nan  # invalid pixels must not disturb the maps elsewhere
    m = organized_maps(pts)
    dev = m.deviation.numpy()
    v, u = peak(dev)  # bump towards the camera -> positive deviation
    assert abs(u - 90) <= 2 and abs(v - 40) <= 2
    assert dev[v, u] > 1e-3 * 0.5
    cv, cu = peak(m.curvature.numpy() * m.valid.numpy())
    assert abs(cu - 90) <= 6 and abs(cv - 40) <= 6
    assert not m.valid[8, 8] and m.deviation[8, 8] == 0
    # far from the bump the plane is flat: deviation at noise level
    assert np.abs(dev[100:, :40]).max() < 1e-5


def test_organized_dent_is_negative():
    m = organized_maps(tilted_plane(bump_m=-0.002))
    v, u = peak(-m.deviation.numpy())
    assert abs(u - 90) <= 2 and abs(v - 40) <= 2


def test_unorganized_cloud_projected_bump():
    pts = tilted_plane(bump_m=0.002).reshape(-1, 3)
    rng = np.random.default_rng(0)
    sub = pts[rng.choice(len(pts), int(0.8 * len(pts)), replace=False)]
    sub = np.concatenate([sub, np.full((10, 3), np.nan, np.float32)])  # invalid points skipped
    m = unorganized_maps(sub, K, (128, 128))
    v, u = peak(m.deviation.numpy())
    assert abs(u - 90) <= 3 and abs(v - 40) <= 3
    assert m.valid.float().mean() > 0.9
    cv, cu = peak(m.curvature.numpy())
    assert abs(cu - 90) <= 8 and abs(cv - 40) <= 8


def test_unorganized_fpfh_optional():
    pts = tilted_plane(bump_m=0.002, size=128)[::2, ::2].reshape(-1, 3)
    m = geometry_maps(pts, K, (64, 64), fpfh=True)
    assert m.fpfh is not None and m.fpfh.shape == (33, 64, 64)
    assert torch.isfinite(m.fpfh).all()


def test_projection_round_trip_exact():
    pts = tilted_plane()
    flat = pts.reshape(-1, 3)
    org, vals, index = project_to_grid(flat, K, values=np.arange(len(flat))[:, None])
    hit = index >= 0
    assert hit.mean() > 0.95
    np.testing.assert_array_equal(org[hit], flat[index[hit]])
    np.testing.assert_array_equal(vals[hit][:, 0], index[hit].astype(np.float32))


def test_geometry_errors_and_centroid():
    with pytest.raises(ValueError, match="intrinsics"):
        geometry_maps(np.zeros((10, 3), np.float32), None, (8, 8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(N, 3\)"):
        geometry_maps(np.zeros((4, 4), np.float32), K, (8, 8))
    pts = tilted_plane()
    region = np.zeros((128, 128), bool)
    region[40:44, 90:94] = True
    c = centroid_3d(pts, region, K)
    np.testing.assert_allclose(c, np.median(pts[region], axis=0), rtol=1e-6)
    assert centroid_3d(None, region, K) is None
    all_nan = np.full_like(pts, np.nan)
    assert centroid_3d(all_nan, region, K) is None


def part_on_tilted_table(height_mm=10.0, bulge_mm=2.0, size=128):
    """A box-shaped part (its top parallel to the table) with a smooth bulge, on a table seen
    obliquely: points where the camera's rays meet the table or the part's top."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], -1)
    n = np.array([0.15, -0.1, 1.0])
    n /= np.linalg.norm(n)
    top = (u >= 30) & (u < 70) & (v >= 40) & (v < 90)
    bulge = bulge_mm * np.exp(-((u - 50) ** 2 + (v - 65) ** 2) / (2 * 5.0 ** 2))
    h = np.where(top, height_mm + bulge, 0.0) * 1e-3
    t = (0.6 - h) / (rays @ n)  # the plane n.p = 0.6 - h, met along each ray
    return (rays * t[..., None]).astype(np.float32), top


@pytest.mark.parametrize("cloud, size", [("organized", (128, 128)), ("organized", (96, 96)),
                                         ("unorganized", (128, 128))])
def test_the_height_map_alone_is_the_maps_height(cloud, size):
    """A pixel comparison that needs only the height map gets it without the normals and
    curvature (`surface_depth`): the same map, to the bit, for an organized cloud on the grid
    or resampled to it and for an unorganized one projected onto it."""
    pts, _ = part_on_tilted_table()
    pts[60, 40] = np.nan
    if cloud == "unorganized":
        pts = pts.reshape(-1, 3)[::2]
    depth, valid = surface_depth(pts, K, size)
    assert depth.shape == size and valid.any()
    np.testing.assert_array_equal(height_above_plane(depth, valid),
                                  geometry_maps(pts, K, size).height())
    # too few points to be a part: no valid pixel, as in the maps
    few = pts.reshape(-1, 3)[:10]
    depth, valid = surface_depth(few, K, size)
    assert not valid.any() and not bool(geometry_maps(few, K, size).valid.any())


def test_height_stands_out_of_the_table_plane():
    pts, top = part_on_tilted_table()
    pts[60, 40] = np.nan  # a dropout on the part is filled from its neighbours
    pts[:8, :8] = np.nan  # a large invalid corner has no height
    h = organized_maps(pts).height()
    assert h.shape == (128, 128) and h.dtype == np.float32
    table = ~ndimage.binary_dilation(top, iterations=5)  # off the smoothed step
    table[:12, :12] = False
    assert np.abs(h[table]).max() < 0.05  # mm: the oblique table reads flat
    # along the ray, the part's top at 10 mm reads about 10 mm / cos(view angle)
    assert 9.5 < float(np.median(h[45:55, 60:68])) < 10.8
    assert 9.5 < h[60, 40] < 10.8
    v, u = np.unravel_index(np.nanargmax(h), h.shape)
    assert abs(u - 50) <= 1 and abs(v - 65) <= 1 and h[v, u] > 11.5
    assert np.isnan(h[2, 2])
