"""Hue specks on a grey part (core/hue_specks.py): a few pixels tinted by foreign matter stand
out where they lie, while the finish and the lamp's shading, which change a grey part's
brightness far more, do not; the outline, where the part meets a table of another colour, does
not count."""
import numpy as np
import pytest
import torch

from zsg_iad_ros.core import hue_specks

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
