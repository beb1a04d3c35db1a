"""Hue specks (core/hue_specks.py). On a grey part: a few pixels tinted by foreign matter stand
out where they lie, while the finish and the lamp's shading, which change a grey part's
brightness far more, do not; the outline, where the part meets a table of another colour, does
not count. On a coloured part: specks of another material stand out, while the edge between its
colours, its specular ridge, a stray pixel and a highlight on a rounded end do not. Brightness
specks on a grey part (core/brightness_specks.py, at the end): dark or pale specks stand out,
the streaks of its finish, a cast shadow's edge and a pair of stray pixels do not."""
import numpy as np
import pytest
import torch

from zsg_iad_ros.core import brightness_specks, hue_specks

S = 128


def grey_part(seed, specks=(), tint=(0.06, 0.0, -0.06), table=(0.30, 0.36, 0.30)):
    """(colour (3, S, S) tensor, height (S, S) mm): a grey disc 3 mm high with a bore, brushed
    (streaks that scale the channels alike), shaded by a lamp, on a greenish table; `specks`:
    (row, col) centres of 2-px spots tinted by `tint` (about no change of brightness)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[:S, :S].astype(np.float64)
    r = np.hypot(v - S / 2, u - S / 2)
    part = (r < 0.4 * S) & (r > 0.08 * S)
    height = np.where(part, 3.0, 0.0)
    theta = rng.uniform(0, np.pi)
    streaks = np.interp(-np.sin(theta) * u + np.cos(theta) * v, np.arange(-2 * S, 2 * S),
                        rng.standard_normal(4 * S))
    shade = (0.6 + 0.3 * (u / S)) * (1 + 0.05 * streaks)
    colour = np.where(part, 0.7 * shade, 1.0) * np.ones((3, 1, 1))
    colour = np.where(part, colour, np.array(table)[:, None, None])
    for cv, cu in specks:
        spot = (v - cv) ** 2 + (u - cu) ** 2 <= 2.0
        colour += np.array(tint)[:, None, None] * spot
    colour += rng.normal(0, 0.004, colour.shape)  # camera noise, per channel
    return torch.from_numpy(np.clip(colour, 0, 1)).float(), height


CLUSTER = [(40, 70), (44, 75), (38, 79), (47, 68), (42, 84)]


def test_tinted_specks_stand_out_where_they_are():
    good = [hue_specks.image_score(hue_specks.speck_map(*grey_part(s))) for s in range(6)]
    colour, height = grey_part(10, CLUSTER)
    speck = hue_specks.speck_map(colour, height)
    assert hue_specks.image_score(speck) > 1.5 * max(good), (hue_specks.image_score(speck), good)
    v, u = np.unravel_index(np.argmax(speck), speck.shape)
    assert min(np.hypot(v - cv, u - cu) for cv, cu in CLUSTER) <= 2, (v, u)


def test_brightness_alone_does_not_count():
    """Dark grey specks (oil, graphite) change the brightness, not the hue: this check leaves
    them to the luminance models."""
    good = [hue_specks.image_score(hue_specks.speck_map(*grey_part(s))) for s in range(6)]
    colour, height = grey_part(10, CLUSTER, tint=(-0.2, -0.2, -0.2))
    assert hue_specks.image_score(hue_specks.speck_map(colour, height)) < 1.2 * max(good)


def test_the_outline_and_the_bore_do_not_count():
    colour, height = grey_part(3)
    inside = hue_specks.interior(height)
    r = np.hypot(*(np.mgrid[:S, :S] - S / 2))
    assert inside[(r > 0.15 * S) & (r < 0.33 * S)].all()
    assert not inside[(r > 0.38 * S) | (r < 0.1 * S)].any()  # the table's hue stays out
    speck = hue_specks.speck_map(colour, height)
    assert not speck[~inside].any()


@pytest.mark.parametrize("height", [np.zeros((S, S)), np.full((S, S), np.nan)])
def test_no_part_on_a_table_gives_no_map(height):
    colour, _ = grey_part(0)
    assert hue_specks.interior(height) is None
    assert hue_specks.speck_map(colour, height) is None


def coloured_part(seed, specks=(), speck=(0.75, 0.72, 0.65), stray=None):
    """(colour (3, S, S) tensor, height (S, S) mm): a lying capsule of two colours (orange
    body, green cap meeting across its length), shaded across its width, with a specular ridge
    along its length that pales it, on a grey table; `specks`: (row, col) centres of 2-px spots
    of another material (`speck`, light grey by default) over it; `stray`: (row, col) of one
    pixel in the cap's colour on the body."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[:S, :S].astype(np.float64)
    across = (v - S / 2) / (0.16 * S)  # -1..1 over the capsule's width
    part = (np.abs(across) < 1) & (np.abs(u - S / 2) < 0.35 * S)
    height = np.where(part, 4.0 * np.sqrt(np.clip(1 - across ** 2, 0, 1)), 0.0)
    body, cap = np.array([0.85, 0.55, 0.2]), np.array([0.35, 0.7, 0.45])
    albedo = np.where(u < S / 2 + rng.uniform(-4, 4), body[:, None, None], cap[:, None, None])
    shade = 0.45 + 0.5 * np.sqrt(np.clip(1 - across ** 2, 0, 1))
    ridge = 0.35 * np.exp(-0.5 * ((across - rng.uniform(-0.3, 0.3)) * 0.16 * S / 1.5) ** 2)
    colour = albedo * shade + ridge
    for cv, cu in specks:
        spot = (v - cv) ** 2 + (u - cu) ** 2 <= 2.0
        colour = np.where(spot, 0.3 * colour + 0.7 * np.array(speck)[:, None, None], colour)
    if stray is not None:
        colour[:, stray[0], stray[1]] = cap * shade[stray]
    colour = np.where(part, colour, 0.45)
    colour += rng.normal(0, 0.004, colour.shape)
    return torch.from_numpy(np.clip(colour, 0, 1)).float(), height


BODY_SPECKS = [(58, 40), (62, 46), (68, 43), (64, 52)]


def coloured_score(*args, **kw):
    return hue_specks.image_score(hue_specks.coloured_speck_map(*coloured_part(*args, **kw)))


@pytest.mark.parametrize("speck", [(0.75, 0.72, 0.65), (0.08, 0.07, 0.06), (0.4, 0.3, 0.2)])
def test_specks_on_a_coloured_part_stand_out_where_they_are(speck):
    """Light grey, dark and brown specks on the orange body of a two-coloured capsule; the edge
    between its colours and its pale specular ridge, where the difference of Gaussians of a
    grey part peaks, do not count."""
    good = [coloured_score(s) for s in range(6)]
    colour, height = coloured_part(10, BODY_SPECKS, speck)
    found = hue_specks.coloured_speck_map(colour, height)
    assert hue_specks.image_score(found) > 2 * max(good), (hue_specks.image_score(found), good)
    v, u = np.unravel_index(np.argmax(found), found.shape)
    assert min(np.hypot(v - cv, u - cu) for cv, cu in BODY_SPECKS) <= 2, (v, u)


def test_a_coloured_parts_edge_and_ridge_would_outweigh_its_specks_without_the_segments():
    """Why a coloured part has a map of its own: the grey part's difference of Gaussians, on
    its whole outline, peaks at the edge between the two colours and along the ridge, above
    the specks."""
    colour, height = coloured_part(10, BODY_SPECKS)
    h = np.asarray(height)
    dog = hue_specks.speck_map(colour, np.where(h > 0, 4.0, 0.0))  # as if flat: the outline
    v, u = np.unravel_index(np.argmax(dog), dog.shape)
    assert min(np.hypot(v - cv, u - cu) for cv, cu in BODY_SPECKS) > 4, (v, u)


def test_one_stray_pixel_is_no_speck():
    """A single pixel in the other colour (the camera's, at an edge between two colours) scores
    as the good parts do; a 2-px speck of the same colour does not."""
    good = [coloured_score(s) for s in range(6)]
    assert coloured_score(10, stray=(62, 44)) < 1.2 * max(good)
    assert coloured_score(10, [(62, 44)], speck=(0.35, 0.7, 0.45)) > 2 * max(good)


def test_the_table_around_a_coloured_part_does_not_count():
    colour, height = coloured_part(3)
    found = hue_specks.coloured_speck_map(colour, height)
    assert not found[np.asarray(height) <= hue_specks.TABLE_MM].any()


@pytest.mark.parametrize("height", [np.zeros((S, S)), np.full((S, S), np.nan)])
def test_no_coloured_part_on_a_table_gives_no_map(height):
    colour, _ = coloured_part(0)
    assert hue_specks.coloured_speck_map(colour, height) is None


def rounded_capsule():
    """(H, W) height map [mm] of a lying capsule with rounded ends: 4 mm radius over 16 px,
    its axis along the columns 36-92 of row 64."""
    v, u = np.mgrid[:S, :S].astype(np.float64)
    d = np.hypot(v - S / 2, u - np.clip(u, 36, 92))  # distance from the axis segment [px]
    return np.where(d < 16, 4.0 * np.sqrt(np.clip(1 - (d / 16) ** 2, 0, 1)), 0.0)


def test_a_highlight_on_a_rounded_end_is_no_speck():
    """The lamp lights a surface curved both ways (a capsule's rounded end) in a pale spot
    whose place moves as the part turns; such surfaces are left out of a coloured part's map,
    a cylinder's body (curved one way) is not."""
    height = rounded_capsule()
    curved = hue_specks.doubly_curved(height)
    assert curved[64, 30] and curved[64, 98]  # on the ends
    assert not curved[58:71, 44:85].any()      # along the body
    colour, _ = coloured_part(0)
    v, u = np.mgrid[:S, :S]
    for cv, cu in ((64, 30), (64, 50)):  # a pale spot on an end, then on the body
        spotted = colour.clone()
        spotted[:, (v - cv) ** 2 + (u - cu) ** 2 <= 2] = 0.9
        found = hue_specks.coloured_speck_map(spotted, height)
        assert (float(found[cv - 3:cv + 4, cu - 3:cu + 4].max()) > 0.05) == (cu == 50), (cv, cu)


def test_the_pixel_level_is_the_references_median():
    """The level above which a part's speck map joins the RGB map: each reference's 99.9th
    percentile over its part's pixels, the median of those; one reference with a bright patch
    of its own does not move it (pooled, its 0.1 % highest pixels would decide)."""
    rng = np.random.default_rng(0)
    refs = [np.where(rng.random((S, S)) < 0.5, rng.random((S, S)) * 0.01, 0.0)
            for _ in range(4)]
    level = hue_specks.pixel_level(refs)
    assert 0.0098 < level < 0.01
    refs[0][:20, :20] = 0.5  # about 5 % of that part's pixels
    assert hue_specks.pixel_level(refs) < 0.0101
    assert hue_specks.pixel_level([np.zeros((S, S))] * 3) == np.inf  # no part: nothing lifts


# ---- brightness specks on a grey part (core/brightness_specks.py)

def brightness_score(colour, height):
    return float(np.max(brightness_specks.speck_map(colour, height)))


@pytest.mark.parametrize("tint", [(-0.15, -0.15, -0.15), (0.15, 0.15, 0.15)])
def test_dark_and_pale_specks_on_a_grey_part_stand_out_where_they_are(tint):
    """Specks that darken or lighten a brushed grey part without tinting it (the hue specks
    hardly see them) stand above the good parts' peaks, where they lie."""
    good = [brightness_score(*grey_part(s)) for s in range(6)]
    colour, height = grey_part(10, CLUSTER, tint=tint)
    found = brightness_specks.speck_map(colour, height)
    assert float(np.max(found)) > 1.5 * max(good), (float(np.max(found)), good)
    v, u = np.unravel_index(np.argmax(found), found.shape)
    assert min(np.hypot(v - cv, u - cu) for cv, cu in CLUSTER) <= 2, (v, u)


def test_a_pair_of_stray_pixels_is_no_brightness_speck():
    """Two pixels at half the brightness (diagonal neighbours, on the part's face) leave the
    part's score as it was: a speck must cover three pixels (counted as a speck of one pixel,
    they raised it 7.8 times)."""
    colour, height = grey_part(10)
    plain = brightness_score(colour, height)
    colour = colour.clone()
    colour[:, 60, 95] *= 0.5
    colour[:, 61, 96] *= 0.5
    assert brightness_score(colour, height) <= 1.05 * plain


def test_the_edge_of_a_cast_shadow_is_no_brightness_speck():
    """A shadow with a round edge over the part's face (its place moves as the part turns)
    leaves the part's score as it was: its edge, which segments of one direction do not keep
    whole, is left out."""
    colour, height = grey_part(10)
    plain = brightness_score(colour, height)
    v, u = np.mgrid[:S, :S]
    shade = torch.from_numpy(np.where((v - 40) ** 2 + (u - 64) ** 2 < 12 ** 2, 0.5, 1.0))
    assert brightness_score(colour * shade.float(), height) <= 1.05 * plain


@pytest.mark.parametrize("height", [np.zeros((S, S)), np.full((S, S), np.nan)])
def test_no_grey_part_gives_no_brightness_map(height):
    colour, _ = grey_part(0)
    assert brightness_specks.speck_map(colour, height) is None
