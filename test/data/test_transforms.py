"""Turning a sample about the optical axis: quarter turns are exact, 3D points turn with it."""
import numpy as np
import pytest

from zsg_iad_ros.data.synthetic import generate_sample
from zsg_iad_ros.data.transforms import rotate_sample


@pytest.mark.parametrize("quarters", [1, 2, 3])
def test_quarter_turns_move_every_pixel_and_lose_none(quarters):
    s = generate_sample("gear", "crack", 3, size=64)
    r = rotate_sample(s, 90.0 * quarters)
    # +angle turns +u towards +v (clockwise on screen): np.rot90 with a negative k
    assert np.array_equal(r.frame.rgb, np.rot90(s.frame.rgb, -quarters))
    assert np.array_equal(r.gt_mask, np.rot90(s.gt_mask, -quarters))
    before, after = np.isnan(s.frame.points[..., 2]), np.isnan(r.frame.points[..., 2])
    assert np.array_equal(after, np.rot90(before, -quarters))  # no border pixel lost


def test_points_turn_about_the_optical_axis_and_keep_their_depth():
    s = generate_sample("gear", "good", 3, size=64)
    r = rotate_sample(s, 90.0)
    p, q = s.frame.points, np.rot90(r.frame.points, 1)  # q[v, u] is where p[v, u] went
    ok = np.isfinite(p).all(-1)
    np.testing.assert_allclose(q[ok][:, 2], p[ok][:, 2])
    # turned by +90 degrees: (x, y) -> (-y, x)
    np.testing.assert_allclose(q[ok][:, 0], -p[ok][:, 1], atol=1e-7)
    np.testing.assert_allclose(q[ok][:, 1], p[ok][:, 0], atol=1e-7)
