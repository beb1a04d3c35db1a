"""Fine specks on a grey part's faces that show in brightness: dark or pale matter (oil,
graphite, dust) that hardly tints the part, so that its hue specks (core/hue_specks.py) miss
them or see them faintly.

A brushed grey part's brightness varies along the streaks of its finish and with the lamp's
slow shading by more than such a speck changes it, but the streaks are lines and the shading is
smooth, while a speck is a blob of a few pixels. On the logarithm of the brightness (the finish
and the lamp multiply it) `hue_specks.line_top_hat` keeps streaks, straight edges and shading
and leaves the specks narrower than its segments. The map covers the part's faces
(`hue_specks.interior`: at an outline or a bore the image mixes the part with the table or a
shadow), away from edges of the brightness itself (`EDGE`: a cast shadow's curved edge, whose
place moves as the part turns, is a speck by that measure), and a speck must cover `SPECK_PX`
pixels (the `SPECK_PX`-th largest value of each 3 x 3 neighbourhood).

The map joins the RGB map only, not the part's score (`Detector._score_aligned`): as a score of
its own it diluted what only the colour model sees (one-design seed 0: misses 0.16 → 0.20,
docs/DETECTOR.md, "Hue specks on coloured parts"). Written here: no library offers a speck
detector; the filters are scipy's grey-level morphology and Gaussian derivatives.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from scipy import ndimage

from .hue_specks import LINE_PX, interior, line_top_hat, part_box

#: brightness (mean of the channels in [0, 1]) below which its logarithm is held: the camera's
#: noise in the dark
DARK = 0.02
#: a pixel within 2 px of where the log brightness changes by more than this per px (Gaussian
#: gradient at `EDGE_PX`) lies on an edge of light or shadow; a speck of the sizes seen changes
#: it by less at that scale
EDGE = 0.05
EDGE_PX = 2.0
#: pixels a speck covers at least: good grey capsules showed pairs of pixels darker than their
#: neighbours by half, the camera's
SPECK_PX = 3
#: floors of the scale of the map's calibration: absolute [log brightness], about a tenth of a
#: grey part's normal peak (medians 0.036-0.042 on good gears of three designs), and relative,
#: a quarter of the references' median peak (references held in one pose agree more closely
#: than turned parts do)
SCALE_FLOOR = 3e-3
REL_SCALE = 0.25


def speck_map(colour: torch.Tensor, height: np.ndarray) -> Optional[np.ndarray]:
    """(H, W) float32 map of specks narrower than `hue_specks.LINE_PX` that darken or lighten
    a grey part's faces (0 elsewhere), in log brightness, from its (3, H, W) colour rendering
    in [0, 1] and its (H, W) height map [mm] on the same grid; None where the height map shows
    no part."""
    inside = interior(height)
    if inside is None:
        return None
    crop = part_box(inside, LINE_PX + int(4 * EDGE_PX))
    brightness = colour.float().cpu().numpy()[(slice(None),) + crop].mean(0)
    log = np.log(np.maximum(brightness, DARK))
    edge = ndimage.binary_dilation(ndimage.gaussian_gradient_magnitude(log, EDGE_PX) > EDGE,
                                   iterations=2)
    out = np.zeros(inside.shape, np.float32)
    out[crop] = np.where(inside[crop] & ~edge,
                         ndimage.rank_filter(line_top_hat(log), rank=-SPECK_PX, size=3), 0.0)
    return out
