"""Variation model: rotated good parts stay in the band, missing and extra material flagged."""
import numpy as np
import pytest
from scipy import ndimage

from zsg_iad_ros.core.backbones import rgb_image, sensor_image
from zsg_iad_ros.core.registration import frame_foreground
from zsg_iad_ros.core.variation import VariationConfig, VariationModel, image_score
from zsg_iad_ros.data.synthetic import generate_sample
from zsg_iad_ros.data.transforms import rotate_sample

SEED = 22


def modality(frame, name):
    if name == "rgb":
        return rgb_image(frame.rgb, 256)
    return sensor_image(frame.sensor, frame.sensor_type)


@pytest.fixture(scope="module")
def gear():
    return generate_sample("gear", "good", SEED)


@pytest.fixture(scope="module")
def models(gear):
    """One taught reference, registered on the raw RGB image; the sensor model reuses the
    RGB model's pose (the frame is pixel-registered)."""
    f = gear.frame
    fg = frame_foreground(f.rgb)
    rgb = VariationModel.teach([modality(f, "rgb")], masks=[fg], signals=[f.rgb])
    sen = VariationModel.teach([modality(f, "sensor")], masks=[fg], signals=[f.rgb],
                               registrations=rgb.ref_registrations, medoid=0)
    return {"rgb": rgb, "sensor": sen}


def inspect(models, sample):
    f = sample.frame
    fg = frame_foreground(f.rgb)
    reg = models["rgb"].register(f.rgb, fg)
    return {m: models[m].inspect(modality(f, m), mask=fg, registration=reg) for m in models}


def test_rotated_good_part_stays_in_band_missing_tooth_is_flagged(gear, models):
    rng = np.random.default_rng(3)
    good = [inspect(models, rotate_sample(gear, a)) for a in rng.uniform(0, 360, 3)]
    bad = rotate_sample(generate_sample("gear", "missing_part", SEED), rng.uniform(0, 360))
    res = inspect(models, bad)
    near = ndimage.binary_dilation(bad.gt_mask, iterations=3)
    for m in models:
        g = max(image_score(r[m].map) for r in good)
        b = image_score(res[m].map)
        assert all(not r[m].fallback and r[m].aligned for r in good)
        assert g < 2.0, (m, g)           # a turned good part reads as normal
        assert b > 1.5 * g and b > 3.0, (m, g, b)
        sm = ndimage.gaussian_filter(res[m].map, 2.0)
        assert near[np.unravel_index(np.argmax(sm), sm.shape)], m  # flagged where planted
        assert res[m].map.shape == bad.gt_mask.shape  # on the query's own pixels
    # material the model has and the part lacks is reported as missing, where planted
    assert (res["sensor"].missing & near).any()
    assert not (res["sensor"].extra & near).any()


def test_a_part_put_on_the_grid_once_gives_the_inspections_of_its_image(gear, models):
    """`on_grid` once, then `inspect(query=..., full=False)` per pose and `to_query` for the
    pose kept: the same deviation and map as inspecting the image itself, in every pose."""
    bad = rotate_sample(generate_sample("gear", "missing_part", SEED), 211.0)
    f = bad.frame
    fg = frame_foreground(f.rgb)
    reg = models["rgb"].register(f.rgb, fg)
    poses = [reg] + list(reg.alternatives)
    for m, model in models.items():
        query = model.on_grid(modality(f, m), fg)
        for r in poses:
            whole = model.inspect(modality(f, m), mask=fg, registration=r)
            grid = model.inspect(None, registration=r, query=query, full=False)
            assert grid.map is None
            for name in ("total", "below", "above", "missing", "extra"):
                np.testing.assert_array_equal(getattr(grid.deviation, name),
                                              getattr(whole.deviation, name))
            np.testing.assert_array_equal(model.to_query(grid.deviation.total, r,
                                                         bad.gt_mask.shape), whole.map)
    sensor = models["sensor"]
    kept = sensor.inspect(None, registration=reg, query=sensor.on_grid(modality(f, "sensor"), fg),
                          full=False)
    assert kept.deviation.missing.any()  # the sensor model still finds the missing tooth
    with pytest.raises(ValueError, match="registration"):
        models["rgb"].inspect(None, query=query)


def test_image_score_blurs_only_around_the_deviations_with_the_same_result():
    """The score blurs the box around a map's nonzero pixels: the same value, to the bit, as
    blurring the whole map, wherever the deviations lie (at the border too) and whatever
    their sign."""
    rng = np.random.default_rng(5)
    for i in range(400):
        h, w = rng.integers(4, 70, 2)
        m = np.zeros((h, w), np.float32)
        for _ in range(rng.integers(0, 5)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = rng.normal(i % 3, 2)
        if i % 5 == 0:
            m[rng.integers(0, h), rng.integers(0, w)] = np.nan
        sigma = (2.0, 1.0, 0.7)[i % 3]
        whole = float(ndimage.gaussian_filter(np.nan_to_num(m), sigma).max())
        assert image_score(m, sigma) == whole, i
    assert image_score(np.zeros((0, 0), np.float32)) == 0.0


def test_extra_blob_on_the_table_and_on_the_part(gear, models):
    f = gear.frame
    fg = frame_foreground(f.rgb)
    v, u = np.mgrid[0:256, 0:256]
    dist = ndimage.distance_transform_edt(~fg)
    # a bright washer on the table, 10-14 px from the part
    cv, cu = np.argwhere((dist > 10) & (dist < 14))[0]
    blob = (u - cu) ** 2 + (v - cv) ** 2 <= 36
    rgb = f.rgb.copy()
    rgb[blob] = 235
    from dataclasses import replace
    stray = rotate_sample(replace(gear, frame=replace(f, rgb=rgb), gt_mask=blob), 58.0)
    r = inspect(models, stray)["rgb"]
    near = ndimage.binary_dilation(stray.gt_mask, iterations=3)
    sm = ndimage.gaussian_filter(r.map, 2.0)
    assert near[np.unravel_index(np.argmax(sm), sm.shape)]
    assert (r.extra & near).any() and not (r.missing & near).any()
    # the generator's extra part lying on the gear
    on_part = rotate_sample(generate_sample("gear", "extra_part", SEED), 201.0)
    r = inspect(models, on_part)["rgb"]
    sm = ndimage.gaussian_filter(r.map, 2.0)
    assert ndimage.binary_dilation(on_part.gt_mask, iterations=3)[
        np.unravel_index(np.argmax(sm), sm.shape)]
    assert image_score(r.map) > 5.0


def test_several_references_and_composed_registrations():
    refs = [generate_sample("capsule", "good", s) for s in (31, 32, 33, 34)]
    imgs = [modality(r.frame, "rgb") for r in refs]
    fgs = [frame_foreground(r.frame.rgb) for r in refs]
    model = VariationModel.teach(imgs, masks=fgs, signals=[r.frame.rgb for r in refs])
    assert model.kind == "object" and model.alignable
    assert 0 <= model.medoid < 4 and model.mean.shape == (128, 128, 3)
    assert (model.spread > 0).all() and model.material.any()
    # spread is wider across four different capsules than the floor of one
    one = VariationModel.teach(imgs[:1], masks=fgs[:1], signals=[refs[0].frame.rgb])
    assert np.median(model.spread[model.material]) > np.median(one.spread[one.material])
    # query -> reference i by composition agrees with a direct registration of the same part
    q = rotate_sample(refs[2], 40.0)
    reg = model.register(q.frame.rgb, frame_foreground(q.frame.rgb))
    comp = model.registration_to_reference(reg, 2)
    p = np.array([[128.0, 128.0], [100.0, 90.0]])
    t = np.deg2rad(40.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    in_query = (p - 127.5) @ rot.T + 127.5
    # (two registrations across different capsules: their errors cancel to a few px)
    assert np.abs(comp.map_uv(in_query) - p).max() < 3.0


def test_texture_and_failed_registration_fall_back(models):
    fabric = [generate_sample("woven_fabric", "good", s).frame.rgb for s in (1, 2)]
    tex = VariationModel.teach(fabric)
    assert tex.kind == "texture" and not tex.alignable
    r = tex.inspect(generate_sample("woven_fabric", "good", 3).frame.rgb)
    assert r.fallback and r.map is None and "texture" in r.reason
    # an empty, noisy view (no part on the table) cannot be registered
    rng = np.random.default_rng(4)
    empty = (110 + 40 * rng.random((256, 256, 3))).astype(np.uint8)
    r = models["rgb"].inspect(modality(generate_sample("gear", "good", 1).frame, "rgb"),
                              signal=empty)
    assert r.fallback and r.map is None and "quality" in r.reason


def test_unaligned_baseline_misses_what_alignment_sees(gear):
    """Without registration a turned good part already deviates as much as a defect."""
    f = gear.frame
    fg = frame_foreground(f.rgb)
    flat = VariationModel.teach([modality(f, "sensor")], masks=[fg],
                                config=VariationConfig(align=False))
    turned = rotate_sample(gear, 23.0)
    r = flat.inspect(modality(turned.frame, "sensor"), mask=frame_foreground(turned.frame.rgb))
    assert not r.aligned and image_score(r.map) > 3.0


def test_a_height_map_says_where_material_is_missing_extra_or_holed():
    """With `material_level` the image's own level says where there is material (a height
    map: the part stands above the table), not the foregrounds: a colour image's foreground
    takes in the cast shadow, which fills the gap of a missing piece. A piece cut from the
    outline is missing, a bore through the middle is missing and enclosed by the part (a
    hole), a block on the table is extra; the foreground alone sees none of the missing
    material where it says the part is whole."""
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:128, 0:128]
    disc = (u - 64) ** 2 + (v - 64) ** 2 <= 40 ** 2

    def heights(shape):
        return (6.0 * shape + rng.normal(0, 0.05, shape.shape)).astype(np.float32)

    wedge = disc & (u > 94) & (abs(v - 64) < 10)         # a piece broken off the outline
    bore = (u - 54) ** 2 + (v - 64) ** 2 <= 6 ** 2        # a hole through the middle
    block = (abs(u - 64) < 6) & (v > 112) & (v < 124)     # material on the table
    query = heights((disc & ~wedge & ~bore) | block)
    shadowed = disc | block                              # the foreground, shadow-filled
    for level in (0.5, 0.0):
        cfg = VariationConfig(align=False, material_level=level)
        model = VariationModel.teach([heights(disc) for _ in range(3)], masks=[disc] * 3,
                                     kind="object", config=cfg)
        found = model.inspect(query, mask=shadowed)
        missing, extra, hole = model.material_to_query(found.deviation, found.registration,
                                                       query.shape)
        np.testing.assert_array_equal(missing, found.missing)
        np.testing.assert_array_equal(extra, found.extra)
        if level == 0.0:  # the foreground says the part is whole
            assert not missing.any() and not hole.any()
            continue
        # a pixel of the band's positional tolerance at the cut's edges is not counted
        inner = ndimage.binary_erosion
        assert missing[inner(wedge, iterations=2)].all() and missing[inner(bore)].all()
        assert not missing[~ndimage.binary_dilation(wedge | bore, iterations=2)].any()
        assert hole[inner(bore)].all() and not hole[wedge].any()
        assert extra[inner(block, iterations=2)].all()
        assert not extra[~ndimage.binary_dilation(block, iterations=2)].any()
