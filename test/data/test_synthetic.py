"""Procedural generator: determinism, per-modality masks, modality exclusivity, bad input."""
import numpy as np
import pytest
from scipy import ndimage

from zsg_iad_ros.core.frame import GEOMETRY, RGB, SENSOR, THERMAL, XRAY
from zsg_iad_ros.data.synthetic import (CATEGORIES, DEFECT_TYPES, applicable_defects,
                                        generate_sample)

SIZE = 128  # small renders keep the suite fast; geometry scales with size


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _category_for(defect):
    """A category where `defect` shows in its default sensor (prefer structural ones)."""
    for c in ("pcb", "gear", "capsule", "cast_metal", "woven_fabric", "wood", "bottle"):
        if defect in applicable_defects(c):
            return c
    raise AssertionError(defect)


def test_catalogue_sizes():
    assert len(CATEGORIES) >= 10
    assert {c.sensor_type for c in CATEGORIES.values()} == {THERMAL, XRAY}
    for spec in DEFECT_TYPES.values():
        assert set(spec.modalities) <= {RGB, SENSOR, GEOMETRY}
        assert spec.templates
    assert DEFECT_TYPES["dent"].modalities == (GEOMETRY,)
    assert DEFECT_TYPES["stain"].modalities == (RGB,)
    assert DEFECT_TYPES["hot_spot"].shows_in(XRAY) == ()
    assert DEFECT_TYPES["void"].shows_in(THERMAL) == ()


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_good_sample_layout(category):
    s = generate_sample(category, "good", 3, size=SIZE)
    f = s.frame
    assert f.rgb.shape == (SIZE, SIZE, 3) and f.rgb.dtype == np.uint8
    assert f.sensor.shape == (SIZE, SIZE) and f.sensor.dtype == np.float32
    assert f.points.shape == (SIZE, SIZE, 3) and f.points.dtype == np.float32
    assert f.sensor_type == CATEGORIES[category].sensor_type and f.registered
    assert f.stream == category and s.label == 0 and s.description == ""
    assert not s.gt_mask.any() and all(not m.any() for m in s.gt_masks.values())
    z = f.points[..., 2]
    nan = np.isnan(z)
    assert 0.001 < nan.mean() < 0.1  # a few invalid pixels, like a real depth camera
    assert np.array_equal(nan, np.isnan(f.points).any(-1))
    assert 0.3 < np.nanmin(z) and np.nanmax(z) < 0.5
    # organized cloud: every valid point projects back onto its own pixel
    k = f.intrinsics
    v, u = np.nonzero(~nan)
    p = f.points[v, u]
    assert np.allclose(k.fx * p[:, 0] / p[:, 2] + k.cx, u, atol=1e-3)
    assert np.allclose(k.fy * p[:, 1] / p[:, 2] + k.cy, v, atol=1e-3)
    if f.sensor_type == THERMAL:
        assert 285 < f.sensor.min() and f.sensor.max() < 400  # kelvin
    else:
        assert f.sensor.min() >= 0 and f.sensor.max() < 1.5  # transmitted fraction


def test_deterministic_and_seed_dependent():
    a = generate_sample("gear", "crack", 11, size=SIZE)
    b = generate_sample("gear", "crack", 11, size=SIZE)
    c = generate_sample("gear", "crack", 12, size=SIZE)
    for x, y in ((a.frame.rgb, b.frame.rgb), (a.frame.sensor, b.frame.sensor),
                 (a.frame.points, b.frame.points), (a.gt_mask, b.gt_mask)):
        assert _same(x, y)
    assert a.description == b.description and a.sample_id == b.sample_id
    assert a.sample_id != c.sample_id
    assert not _same(a.frame.rgb, c.frame.rgb)
    assert not _same(a.frame.sensor, c.frame.sensor)
    assert not _same(a.gt_mask, c.gt_mask)


def _signal_diff(mod, s, twin):
    """Per-pixel |defect - twin| of one modality (NaN where depth is invalid in either)."""
    if mod == RGB:
        return np.abs(s.frame.rgb.astype(float) - twin.frame.rgb).max(-1)
    if mod == SENSOR:
        return np.abs(s.frame.sensor.astype(float) - twin.frame.sensor)
    return np.abs(s.frame.points[..., 2].astype(float) - twin.frame.points[..., 2])


@pytest.mark.parametrize("defect", sorted(DEFECT_TYPES))
def test_masks_follow_the_planted_defect(defect):
    cat = _category_for(defect)
    seed = 5
    s = generate_sample(cat, defect, seed, size=SIZE)
    twin = generate_sample(cat, "good", seed, size=SIZE)
    shows = DEFECT_TYPES[defect].shows_in(s.frame.sensor_type)
    assert s.label == 1 and s.defect_type == defect and s.description.endswith(".")
    assert np.array_equal(s.gt_mask, s.gt_masks[RGB] | s.gt_masks[SENSOR] | s.gt_masks[GEOMETRY])
    assert s.gt_mask.any()
    for mod in (RGB, SENSOR, GEOMETRY):
        mask = s.gt_masks[mod]
        diff = _signal_diff(mod, s, twin)
        if mod not in shows:
            assert not mask.any(), (defect, mod)
            # exclusive: this modality is the defect-free render, bit for bit
            arr = {RGB: "rgb", SENSOR: "sensor", GEOMETRY: "points"}[mod]
            assert _same(getattr(s.frame, arr), getattr(twin.frame, arr)), (defect, mod)
            continue
        if not mask.any():
            # allowed only where the physics gives no visible change (e.g. a capacitor of
            # the board's temperature moved on a thermal image); the union is non-empty
            continue
        inside = np.nanmean(diff[mask])
        outside = np.nanmean(diff[~mask])
        noise = {RGB: 2.0, SENSOR: 1e-3, GEOMETRY: 5e-5}[mod]  # below any real change
        assert inside > noise and inside > 3 * outside, (defect, mod, inside, outside)


def test_masks_are_localised():
    for defect in ("scratch", "dent", "stain", "void", "hole"):
        cat = _category_for(defect)
        s = generate_sample(cat, defect, 2, size=SIZE)
        assert 0 < s.gt_mask.mean() < 0.2, defect


def test_description_mentions_part_and_defect():
    s = generate_sample("pcb", "missing_part", 4, size=SIZE)
    assert "printed circuit board" in s.description
    s = generate_sample("cast_metal", "crack", 4, size=SIZE)
    assert "crack" in s.description and "cast aluminium" in s.description


def test_sensor_override_keeps_rgb_and_depth():
    x = generate_sample("gear", "good", 8, size=SIZE)
    t = generate_sample("gear", "good", 8, size=SIZE, sensor_type=THERMAL)
    assert x.frame.sensor_type == XRAY and t.frame.sensor_type == THERMAL
    assert _same(x.frame.rgb, t.frame.rgb) and _same(x.frame.points, t.frame.points)
    assert t.frame.sensor.min() > 285
    hot = generate_sample("gear", "hot_spot", 8, size=SIZE, sensor_type=THERMAL)
    assert hot.gt_masks[SENSOR].any() and not hot.gt_masks[RGB].any()


def test_hidden_defects_need_the_right_sensor():
    assert "void" in applicable_defects("cast_metal")
    assert "void" not in applicable_defects("woven_fabric")
    assert "cold_spot" in applicable_defects("pcb")
    with pytest.raises(ValueError, match="cannot occur"):
        generate_sample("cast_metal", "hot_spot", 0)
    with pytest.raises(ValueError, match="cannot occur"):
        generate_sample("wood", "missing_part", 0)


@pytest.mark.parametrize("args", [("nope", "good", 0), ("gear", "melted", 0),
                                  ("gear", "good", -1), ("gear", "good", 1.5)])
def test_bad_input(args):
    with pytest.raises(ValueError):
        generate_sample(*args)
    with pytest.raises(ValueError):
        generate_sample("gear", "good", 0, size=8)
    with pytest.raises(ValueError):
        generate_sample("gear", "good", 0, sensor_type="lidar")


def test_every_applicable_defect_plants_visibly():
    """Every (category, defect) pair a split can ask for yields a visible, labelled defect."""
    for cat in sorted(CATEGORIES):
        for defect in applicable_defects(cat):
            for seed in (0, 1):
                s = generate_sample(cat, defect, seed, size=64)
                assert s.gt_mask.any() and s.description, (cat, defect, seed)


def _part_area(sample) -> int:
    """Pixels of the part: more than 3 mm above the table (the median depth of the border; the
    table itself tilts by up to about 2 mm across the view)."""
    z = sample.frame.points[..., 2]
    border = np.concatenate([z[0], z[-1], z[:, 0], z[:, -1]])
    return int((z < np.nanmedian(border) - 3e-3).sum())


def test_one_design_keeps_the_shape_and_changes_the_pose():
    same = [generate_sample("gear", "good", s, size=128, design=7) for s in (1, 2, 3)]
    own = [generate_sample("gear", "good", s, size=128) for s in (1, 2, 3)]
    areas = [_part_area(s) for s in same]
    assert max(areas) / min(areas) < 1.03  # one product: the same gear in every part
    assert not np.array_equal(same[0].frame.rgb, same[1].frame.rgb)  # in another pose
    own_areas = [_part_area(s) for s in own]
    assert max(own_areas) / min(own_areas) > 1.1  # default: every seed a design of its own
    assert same[0].sample_id.endswith("/design7") and "design" not in own[0].sample_id
    # the defect-free twin holds with a design: a defect shown by X-ray only leaves RGB alone
    void = generate_sample("gear", "void", 2, size=128, design=7)
    assert np.array_equal(void.frame.rgb, same[1].frame.rgb)
    assert void.gt_mask.any() and not np.array_equal(void.frame.sensor, same[1].frame.sensor)


def _components(sample) -> np.ndarray:
    """Pixels of the board's components: more than 0.4 mm above the board (a plane fitted to
    the depth by least squares: the board tilts by a few mm across the view; the depth's
    noise smoothed by a 5 x 5 median)."""
    z = ndimage.median_filter(sample.frame.points[..., 2].astype(np.float64), 5)
    v, u = np.mgrid[0:z.shape[0], 0:z.shape[1]]
    ok = np.isfinite(z)
    design = np.stack([u[ok], v[ok], np.ones(ok.sum())], 1)
    plane = np.linalg.lstsq(design, z[ok], rcond=None)[0]
    return z < (plane[0] * u + plane[1] * v + plane[2]) - 4e-4


def test_boards_of_one_design_share_their_layout_in_a_fixture():
    same = [generate_sample("pcb", "good", s, size=128, design=7) for s in (1, 2, 3)]
    own = [generate_sample("pcb", "good", s, size=128) for s in (1, 2, 3)]

    def near(a, b):  # share of b's component pixels within 3 px of a's
        return (b & ndimage.binary_dilation(a, iterations=3)).sum() / max(b.sum(), 1)
    comps = [_components(s) for s in same]
    # one layout, held within a few pixels (measured 0.98-0.99)
    assert min(near(comps[0], c) for c in comps[1:]) > 0.9
    owns = [_components(s) for s in own]
    assert max(near(owns[0], c) for c in owns[1:]) < 0.2  # default: a layout per seed
    # each board its own colours, lighting and noise
    assert not np.array_equal(same[0].frame.rgb, same[1].frame.rgb)
    assert same[0].sample_id.endswith("/design7")
    # the defect-free twin holds: a missing component is missing where the twin has it
    missing = generate_sample("pcb", "missing_part", 2, size=128, design=7)
    assert missing.gt_mask.any() and (missing.gt_mask & comps[1]).sum() > 0
    assert not (missing.gt_mask & _components(missing)).any()
    with pytest.raises(ValueError, match="angle_deg"):  # a board in a fixture is not turned
        generate_sample("pcb", "good", 2, size=64, design=7, angle_deg=30.0)


def _axis_deg(mask: np.ndarray) -> float:
    """Orientation of a mask's long axis (second moments), degrees in [0, 180)."""
    v, u = np.nonzero(mask)
    du, dv = u - u.mean(), v - v.mean()
    return float(np.degrees(0.5 * np.arctan2(2 * (du * dv).mean(),
                                             (du * du).mean() - (dv * dv).mean())) % 180)


def test_a_fixed_angle_turns_the_same_part():
    parts = {a: generate_sample("capsule", "good", 5, size=128, design=3, angle_deg=a)
             for a in (0.0, 30.0, 90.0)}
    masks = {a: np.isfinite(p.frame.points[..., 2]) & (p.frame.points[..., 2] < np.nanmedian(
        p.frame.points[..., 2]) - 3e-3) for a, p in parts.items()}
    areas = [int(m.sum()) for m in masks.values()]
    assert max(areas) / min(areas) < 1.03
    for a in (30.0, 90.0):  # the long axis turns by the angle asked for
        turn = (_axis_deg(masks[a]) - _axis_deg(masks[0.0])) % 180
        assert min(abs(turn - a), 180 - abs(turn - a)) < 3.0, (a, turn)
    assert parts[30.0].sample_id.endswith("/design3/angle30")
    # a defect and its twin share the angle
    crack = generate_sample("capsule", "crack", 5, size=128, design=3, angle_deg=30.0)
    assert crack.gt_mask.any() and (crack.gt_mask & ~masks[30.0]).sum() < crack.gt_mask.sum()
    with pytest.raises(ValueError, match="angle_deg"):
        generate_sample("capsule", "good", 5, size=64, angle_deg=30.0)  # no design


def test_textures_have_no_design():
    a = generate_sample("wood", "good", 4, size=64, design=7)
    b = generate_sample("wood", "good", 4, size=64)
    assert np.array_equal(a.frame.rgb, b.frame.rgb) and a.sample_id == b.sample_id
    with pytest.raises(ValueError, match="design"):
        generate_sample("gear", "good", 4, size=64, design=-1)
