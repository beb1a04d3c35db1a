"""Fine hue specks on a grey part: foreign matter that shows in colour, not in brightness.

A grey metal part's finish (brushing, machining marks) and the lamp's shading change its
brightness from part to part by more than faint specks of dust, oil or chips do, but they
scale the three colour channels alike: the part's chromaticity stays flat, up to camera noise,
while a speck of another material tints it over a pixel or two. On the 128-px grid of the
comparison in register such a speck is half a pixel, within its positional tolerance; here it
is looked for at the image's own resolution, on the part alone:

- two opponent colour channels, red minus blue and green minus the mean of red and blue,
  each over the pixel's intensity (`opponent_hue`), minus their blur at `COARSE_PX`, blurred
  at `FINE_PX` (a difference of Gaussians: the speck's scale, with the lamp's slow tint and
  the camera's pixel noise left out), as a magnitude over the two channels. Opponent channels,
  not the red and green shares of `backbones.chromaticity`: a warm speck on a cool grey part
  raises red and lowers blue, and red minus blue sees both (on the gears of one design the
  faintest specks stood 1.24-2.04 times above the good parts' peaks, against 0.87-1.75 with
  the shares);
- on the part's interior only: where its height map stands above half its median height,
  eroded by `ERODE_PX`, and away from steps of the height map (`EDGE_MM_PER_PX`): at an
  outline or a bore the colour image mixes the part with the table or a shadow.

The image score is the map's peak. It says nothing of a part that carries colour (a capsule's
two colours meet along an edge of hue): there the variation model compares the chromaticity
in register (core/aligned.py). Written here: no library offers a hue-speck detector; the
filters are scipy's Gaussians (`backbones.gaussian_blur`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from scipy import ndimage

from .backbones import gaussian_blur

#: the speck's scale and the lamp's: Gaussian sigmas [px] of the difference of Gaussians
FINE_PX = 1.0
COARSE_PX = 6.0
#: a height step steeper than this [mm per px] is an edge of the part's shape, not its face
EDGE_MM_PER_PX = 0.2
#: pixels kept clear of the part's outline and of its height steps
ERODE_PX = 3
#: heights [mm] below this are the table
TABLE_MM = 0.2
#: intensity (sum of the channels in [0, 1]) below which a pixel's hue is not trusted
DARK = 0.15
#: floor of the scale of the score's calibration: about a tenth of a grey part's normal
#: score (0.008-0.010 on gears of one design), whose scores agree within 0.001
SCALE_FLOOR = 1e-4


def opponent_hue(colour: np.ndarray) -> np.ndarray:
    """(3, H, W) colour in [0, 1] -> (2, H, W): red - blue and green - (red + blue) / 2, over
    the pixel's intensity (shading and brushing scale the channels alike and cancel out)."""
    r, g, b = colour
    intensity = np.maximum(r + g + b, DARK)
    return np.stack([(r - b) / intensity, (g - 0.5 * (r + b)) / intensity])


def interior(height: np.ndarray) -> Optional[np.ndarray]:
    """(H, W) bool: the faces of a part standing on a table, from its height map [mm] (heights
    above the table's plane); None where nothing stands above the table."""
    h = np.nan_to_num(np.asarray(height, np.float32), nan=0.0)
    above = h > TABLE_MM
    if not above.any():
        return None
    part = h > 0.5 * float(np.median(h[above]))
    flat = ndimage.gaussian_gradient_magnitude(h, 1.0) < EDGE_MM_PER_PX
    inside = ndimage.binary_erosion(part, iterations=ERODE_PX) & flat
    inside = ndimage.binary_erosion(inside, iterations=2)
    return inside if inside.any() else None


def speck_map(colour: torch.Tensor, height: np.ndarray) -> Optional[np.ndarray]:
    """(H, W) float32 map of fine hue changes on the part's interior (0 elsewhere) from its
    (3, H, W) colour rendering in [0, 1] and its (H, W) height map [mm] on the same grid; None
    where the height map shows no part."""
    inside = interior(height)
    if inside is None:
        return None
    hue = opponent_hue(colour.float().cpu().numpy())
    fine = np.stack([gaussian_blur(c, FINE_PX) - gaussian_blur(c, COARSE_PX) for c in hue])
    return np.where(inside, np.sqrt((fine * fine).sum(0)), 0.0).astype(np.float32)


def image_score(speck: np.ndarray) -> float:
    """A part's score: the peak of its `speck_map`."""
    return float(np.max(speck))
