"""The part's foreground, estimated from the RGB image alone, on images with a known answer."""
import numpy as np
import pytest
from scipy import ndimage

from zsg_iad_ros.evaluation.foreground import part_foreground

S = 256  # the size of the real development images


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _ellipse(cy, cx, ry, rx, size=S):
    y, x = np.mgrid[0:size, 0:size]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def _scene(part, background, colour, seed=0, noise=2.0):
    rng = np.random.default_rng(seed)
    img = np.asarray(background, np.float32).copy()
    img = np.broadcast_to(img, (S, S, 3)).copy()
    img[part] = colour
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_object_on_a_plain_background_is_the_object():
    part = _ellipse(120, 140, 80, 60)
    # Shading on the part (darker rim) must not split it.
    rgb = _scene(part, (12, 12, 18), (200, 190, 170))
    rim = part & ~ndimage.binary_erosion(part, iterations=4)
    rgb[rim] = (70, 65, 60)
    fg = part_foreground(rgb)
    assert _iou(fg, part) > 0.9
    assert fg[part].mean() == 1.0  # the margin errs on the side of the part


def test_small_object_and_uneven_lighting():
    part = _ellipse(128, 128, 20, 14)  # 1.4 % of the image, like a small part seen from afar
    y, x = np.mgrid[0:S, 0:S]
    # Table brighter in the middle (vignetting): the border is darker than the table near the
    # part, which a constant background colour would call foreground.
    glow = 25 * np.exp(-(((y - 128) ** 2 + (x - 128) ** 2) / (2 * 120.0 ** 2)))
    background = np.stack([90 + glow] * 3, -1)
    rgb = _scene(part, background, (230, 200, 60), seed=1)
    fg = part_foreground(rgb)
    assert _iou(fg, part) > 0.5  # a small part: the margin weighs
    assert fg[part].all() and fg.mean() < 0.05


def test_object_touching_the_border_is_kept():
    part = np.zeros((S, S), bool)
    part[60:S, 80:180] = True  # runs out of the bottom edge
    rgb = _scene(part, (20, 20, 20), (180, 180, 190), seed=2)
    assert _iou(part_foreground(rgb), part) > 0.9


@pytest.mark.parametrize("kind", ["noise", "stripes", "stripes_with_blob"])
def test_a_frame_filling_texture_is_all_foreground(kind):
    rng = np.random.default_rng(3)
    if kind == "noise":
        grey = ndimage.gaussian_filter(rng.normal(128, 60, (S, S)), 1.5)
    else:
        grey = 128 + 50 * np.sin(np.arange(S) / 6.0)[None, :] + rng.normal(0, 4, (S, S))
    if kind == "stripes_with_blob":
        grey[_ellipse(128, 128, 28, 28)] = 10  # a dark defect must not become "the part"
    rgb = np.clip(np.stack([grey] * 3, -1), 0, 255).astype(np.uint8)
    assert part_foreground(rgb).all()


def test_plain_image_and_thin_scratch_are_all_foreground():
    flat = _scene(np.zeros((S, S), bool), (150, 150, 150), 0)
    assert part_foreground(flat).all()
    scratch = np.zeros((S, S), bool)
    scratch[40:200, 120:123] = True  # a thin stroke on a plain surface is not a part
    assert part_foreground(_scene(scratch, (150, 150, 150), (30, 30, 30))).all()


def test_shapes_and_grey_input():
    part = _ellipse(100, 100, 40, 60, size=S)
    grey = _scene(part, (0, 0, 0), (220, 220, 220))[..., 0]
    assert np.array_equal(part_foreground(grey), part_foreground(np.stack([grey] * 3, -1)))
    # A larger image is worked on at a coarser grid; odd sizes keep their shape.
    rgb = np.stack([grey] * 3, -1)
    big = np.repeat(np.repeat(rgb, 2, 0), 2, 1)
    odd = np.pad(big, ((0, 45), (0, 5), (0, 0)), mode="edge")
    fg = part_foreground(odd)
    assert fg.shape == odd.shape[:2] and fg.dtype == bool
    big_part = np.repeat(np.repeat(part, 2, 0), 2, 1)
    assert fg[:2 * S, :2 * S][big_part].all()  # the margin, in working pixels, is wider here
    assert _iou(fg[:2 * S, :2 * S], big_part) > 0.8
    with pytest.raises(ValueError, match="rgb must be"):
        part_foreground(np.zeros((8, 8, 3), np.uint8))
