"""Registration: rotation and shift recovered, quality, mirror, texture test, point clouds."""
import numpy as np
import pytest
from scipy import ndimage

from zsg_iad_ros.core.registration import (RegistrationConfig, align_clouds, foreground_mask,
                                           frame_foreground, is_texture, layout_agreement,
                                           LAYOUT_THRESHOLD, make_template,
                                           region_centroid_3d, register, register_images,
                                           rigid_from_registration, similarity_matrix,
                                           texture_score, transform_points, warp_channels)
from zsg_iad_ros.data.synthetic import generate_sample
from zsg_iad_ros.data.transforms import rotate_sample

C = 127.5  # centre of a 256 px image


@pytest.fixture(scope="module")
def bracket():
    # an L-shaped part: no rotational symmetry, so the angle is unique
    return generate_sample("bracket", "good", 5).frame.rgb


def ndimage_turn(img, angle, shift):
    """Independent of the code under test: scipy turns counter-clockwise on screen, i.e. by
    -angle in the (u right, v down) convention of the registration; then shifts."""
    out = [ndimage.shift(ndimage.rotate(img[..., c].astype(np.float32), angle, reshape=False,
                                        order=1, mode="reflect"),
                         (shift[1], shift[0]), order=1, mode="reflect") for c in range(3)]
    return np.stack(out, -1)


def where_scipy_puts(uv, angle, shift):
    d = np.asarray(uv, float) - C
    t = np.deg2rad(angle)
    return C + np.stack([np.cos(t) * d[:, 0] + np.sin(t) * d[:, 1],
                         -np.sin(t) * d[:, 0] + np.cos(t) * d[:, 1]], 1) + shift


def test_recovers_random_rotation_and_shift(bracket):
    tmpl = make_template(bracket)
    rng = np.random.default_rng(7)
    pts = np.array([[60.0, 80.0], [200.0, 150.0], [C, C]])
    for angle in rng.uniform(0, 360, 6):
        shift = rng.uniform(-8, 8, 2)
        query = ndimage_turn(bracket, angle, shift)
        reg = register(query, tmpl)
        # query -> reference undoes scipy's turn: +angle in the registration's convention
        err = (reg.angle_deg - angle + 180) % 360 - 180
        assert abs(err) < 1.0, (angle, reg.angle_deg)
        back = reg.map_uv(where_scipy_puts(pts, angle, shift))
        assert np.abs(back - pts).max() < 1.0, (angle, shift, back)
        assert abs(reg.scale - 1) < 0.01
        assert reg.ok and reg.quality > 0.9


def test_a_fixed_angle_searches_the_shift_alone(bracket):
    """`fixed_angle`: how well a part matches held at that turn. A shifted part held at 0
    degrees matches as well as registered freely; a turned one does not, unless held at its
    own turn."""
    tmpl = make_template(bracket)
    shifted = ndimage_turn(bracket, 0.0, (5, -4))
    free, held = register(shifted, tmpl), register(shifted, tmpl, fixed_angle=0.0)
    assert held.angle_deg == 0.0 and abs(held.scale - 1) < 1e-6
    assert np.abs(held.map_uv([[C + 5, C - 4]]) - C).max() < 1.0
    assert held.quality > free.quality - 0.02
    turned = ndimage_turn(bracket, 40.0, (5, -4))
    assert register(turned, tmpl, fixed_angle=0.0).quality < register(turned, tmpl).quality - 0.2
    at_its_turn = register(turned, tmpl, fixed_angle=40.0)
    assert at_its_turn.ok and at_its_turn.quality > 0.9


def test_quality_high_for_same_part_low_for_unrelated(bracket):
    tmpl = make_template(bracket)
    same = register(ndimage_turn(bracket, 123.0, (4, -3)), tmpl)
    other = register(generate_sample("capsule", "good", 3).frame.rgb, tmpl)
    noise = np.random.default_rng(0).random((256, 256, 3)).astype(np.float32)
    rand = register(noise, tmpl)
    assert same.ok and same.quality > 0.9
    assert other.quality < 0.5  # well below the same part turned
    assert not rand.ok and rand.quality < 0.3  # a garbled view is flagged


def test_mirrored_part_is_not_aligned_as_a_normal_one(bracket):
    tmpl = make_template(bracket)
    turned = register(ndimage_turn(bracket, 70.0, (0, 0)), tmpl)
    mirrored = register(ndimage_turn(bracket[:, ::-1], 70.0, (0, 0)), tmpl)
    # no rotation maps an L onto its mirror image: the residual stays, quality drops a lot
    assert mirrored.quality < turned.quality - 0.2


def test_scale_is_recovered_when_allowed(bracket):
    z = 1.12
    big = np.stack([ndimage.affine_transform(bracket[..., c].astype(np.float32),
                                             np.eye(2) / z, offset=C - C / z, order=1,
                                             mode="reflect") for c in range(3)], -1)
    reg = register_images(big, bracket)
    assert abs(reg.scale - 1 / z) < 0.02
    fixed = register_images(big, bracket, config=RegistrationConfig(allow_scale=False))
    assert fixed.scale == pytest.approx(1.0, abs=1e-6)


def test_foreground_of_an_object_and_of_a_texture():
    s = generate_sample("gear", "good", 2)
    fg = foreground_mask(s.frame.rgb)
    # the gear is about 45 % of the view and lies near the centre
    assert 0.25 < fg.mean() < 0.7
    v, u = np.nonzero(fg)
    assert abs(u.mean() - C) < 30 and abs(v.mean() - C) < 30
    assert not fg[:4].any() and not fg[:, :4].any()
    fabric = generate_sample("woven_fabric", "good", 2).frame.rgb
    assert foreground_mask(fabric).mean() < 0.05
    both = frame_foreground(s.frame.rgb, points=s.frame.points)
    assert (both & fg).sum() > 0.8 * fg.sum()


def test_texture_detector_from_self_similarity():
    for cat in ("woven_fabric", "cast_metal"):
        refs = [generate_sample(cat, "good", i).frame.rgb for i in (1, 2)]
        tex, score = is_texture(refs)
        assert tex, (cat, score)
    for cat in ("gear", "capsule"):
        refs = [generate_sample(cat, "good", i).frame.rgb for i in (1, 2)]
        tex, score = is_texture(refs)
        assert not tex, (cat, score)
    assert 0.0 <= texture_score(refs[0]) <= 1.0


def test_boards_of_one_layout_are_not_a_texture():
    """A board of one product fills the view and is nearly as self-similar as a texture, but
    its references repeat one layout in register: compared in register, not as a texture.
    Textures and boards of different layouts share no fine structure."""
    def refs(cat, design=None):
        return [generate_sample(cat, "good", i, design=design).frame.rgb for i in (1, 2, 3, 4)]
    boards = refs("pcb", design=3)
    assert texture_score(boards[0]) > 0.1  # near the texture threshold on its own
    assert layout_agreement(boards) >= LAYOUT_THRESHOLD + 0.2
    assert not is_texture(boards)[0]
    assert layout_agreement(boards[:2]) >= LAYOUT_THRESHOLD  # two references suffice
    for other in (refs("pcb"), refs("woven_fabric"), refs("cast_metal"), refs("wood")):
        assert layout_agreement(other) < LAYOUT_THRESHOLD - 0.2
    assert is_texture(refs("woven_fabric"))[0]
    with pytest.raises(ValueError):
        layout_agreement(boards[:1])


def test_region_centroid_follows_a_rotated_organized_cloud():
    s = generate_sample("gear", "missing_part", 4)
    angle = 137.0
    r = rotate_sample(s, angle)
    ref_fg = frame_foreground(s.frame.rgb)
    reg = register(r.frame.rgb, make_template(s.frame.rgb, ref_fg),
                   frame_foreground(r.frame.rgb))
    assert reg.ok
    region = s.gt_mask  # found on the reference / model grid
    pts = s.frame.points[region]
    c_ref = np.median(pts[np.isfinite(pts).all(1)], axis=0)
    t = np.deg2rad(angle)
    rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    expected = rz @ c_ref  # the part turned about the optical axis
    got = np.array(region_centroid_3d(region, reg, r.frame.points))
    assert np.linalg.norm(got - expected) < 2e-3, (got, expected)
    # without following the alignment the centroid lands elsewhere on the part
    naive = np.array(region_centroid_3d(region, None, r.frame.points))
    assert np.linalg.norm(naive - expected) > 1e-2
    # the registration also gives the 3D transform of the organized clouds
    rigid = rigid_from_registration(reg, r.frame.points, s.frame.points, mask=ref_fg)
    assert rigid.fitness > 0.6
    assert np.linalg.norm(transform_points(rigid.transform, expected) - c_ref) < 2e-3


def test_unorganized_clouds_aligned_by_plane_axis_and_icp():
    pts = generate_sample("bracket", "good", 6).frame.points.reshape(-1, 3)
    ref = pts[np.isfinite(pts).all(1)]
    t = np.deg2rad(71.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    centre = np.median(ref, axis=0)
    query = (ref - centre) @ rot.T + centre + np.array([0.004, -0.003, 0.001])
    al = align_clouds(query, ref)
    assert al.ok and al.fitness > 0.9
    probe = centre + np.array([0.02, 0.01, -0.005])  # a region centroid in the reference
    in_query = (probe - centre) @ rot.T + centre + np.array([0.004, -0.003, 0.001])
    assert np.linalg.norm(transform_points(al.inverse_transform(), probe) - in_query) < 1.5e-3
    assert np.linalg.norm(transform_points(al.transform, in_query) - probe) < 1.5e-3


@pytest.mark.parametrize("order, cval", [(1, np.nan), (1, 0.0), (0, 0.0)])
def test_warp_channels_resamples_as_scipy_does(order, cval):
    """All channels at once, as scipy's affine_transform does one by one: the same values, the
    same fill outside, and NaN holes spoiling the same neighbours (the aligned comparison's
    figures depend on the holes' outlines), under turns and under whole-pixel shifts."""
    rng = np.random.default_rng(3)
    for trial in range(12):
        h, w = (int(x) for x in rng.integers(20, 90, 2))
        a = rng.random((h, w, 3)).astype(np.float32)
        a[rng.random((h, w)) < 0.02, 1] = np.nan
        shape = tuple(int(x) for x in rng.integers(20, 90, 2))
        if trial % 3 == 0:  # whole pixels: the neighbours a hole spoils are a convention
            m = np.eye(3)
            m[:2, 2] = rng.integers(-4, 5, 2)
        else:
            m = similarity_matrix(rng.uniform(0, 360), rng.uniform(0.8, 1.2), (w / 2, h / 2),
                                  (shape[1] / 2 + rng.normal(0, 4), shape[0] / 2))
        out_to_in = np.linalg.inv(m)
        lin, off = out_to_in[:2, :2][::-1, ::-1], out_to_in[:2, 2][::-1]
        want = np.stack([ndimage.affine_transform(a[..., c], lin, offset=off, output_shape=shape,
                                                  order=order, cval=cval, prefilter=False)
                         for c in range(3)], -1)
        got = warp_channels(a, out_to_in, shape, order, cval)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4, equal_nan=True)


def test_robust_standardisation_uses_scipys_mad_to_the_bit():
    """The registration signal's robust z-score divides by the MAD written out as scipy's
    `median_abs_deviation(..., scale="normal")` computes it (to the same bits), on images
    with non-finite pixels and with more pixels than the subsample keeps."""
    from scipy.stats import median_abs_deviation

    from zsg_iad_ros.core.registration import _robust_z

    rng = np.random.default_rng(5)
    for size in (20, 128, 300):
        x = (rng.standard_normal((size, size)) * rng.uniform(0.1, 50)).astype(np.float32)
        x[rng.random(x.shape) < 0.05] = np.nan
        v = x[np.isfinite(x)]
        if v.size > 16384:
            v = v[:: v.size // 16384]
        med = float(np.median(v))
        scale = max(float(median_abs_deviation(v, scale="normal")),
                    1e-3 * (float(v.max()) - float(v.min())), 1e-12)
        want = np.where(np.isfinite(x), (x - med) / scale, 0.0).astype(np.float32)
        np.testing.assert_array_equal(_robust_z(x), want)


def test_log_polar_samples_are_map_coordinates():
    """The log-polar spectrum is sampled by a precomputed sparse matrix: the float32 values of
    scipy's bilinear `map_coordinates`, on spectra of images and of noise."""
    from zsg_iad_ros.core.registration import _log_polar_coords, _log_polar_operator

    rng = np.random.default_rng(2)
    for n, n_angles, n_radii in ((128, 360, 96), (64, 90, 32)):
        coords, _ = _log_polar_coords(n, n_angles, n_radii)
        op = _log_polar_operator(n, n_angles, n_radii)
        for _ in range(5):
            x = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(rng.random((n, n))))))
            want = ndimage.map_coordinates(x, coords, order=1, prefilter=False)
            got = (op @ x.ravel()).reshape(n_angles, n_radii)
            np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_ncc_against_one_reference_is_the_plain_ncc_to_the_bit():
    """A registration correlates many shifted queries with one reference, whose side is taken
    once (`_NccWith`): the same bits as the normalised cross-correlation written out, also
    where the query or the reference has NaN pixels, and NaN where too few pixels are left."""
    from zsg_iad_ros.core.registration import _NccWith

    def plain(a, b, m):
        m = m & np.isfinite(a) & np.isfinite(b)
        if m.sum() < 16:
            return float("nan")
        x, y = a[m].astype(np.float64), b[m].astype(np.float64)
        x, y = x - x.mean(), y - y.mean()
        den = np.sqrt((x * x).sum() * (y * y).sum())
        return float((x * y).sum() / den) if den > 0 else 0.0

    rng = np.random.default_rng(4)
    b = rng.standard_normal((64, 64)).astype(np.float32)
    b[rng.random(b.shape) < 0.05] = np.nan
    m = rng.random(b.shape) < 0.6
    with_b = _NccWith(b, m)
    for k in range(6):
        a = (0.5 * np.nan_to_num(b) + rng.standard_normal(b.shape)).astype(np.float32)
        if k % 2:
            a[rng.random(a.shape) < 0.1] = np.nan  # the query's holes leave the mask too
        assert with_b(a) == plain(a, b, m)
    assert np.isnan(_NccWith(b, np.zeros_like(m))(b))
