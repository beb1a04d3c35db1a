"""Procedural tri-modal industrial parts: RGB, a second sensor (thermal or X-ray) and depth.

`generate_sample(category, defect_type, seed)` renders one part seen by a robot cell:

* a scene is built from *pieces* (a plate, a gear body, a bottle cap, PCB components, cuts
  for holes) composited top-down on the image grid into per-pixel layers: height above the
  table [m], albedo, specular strength, emissivity, temperature [K] and X-ray attenuation
  (line integral of mu along the viewing ray, dimensionless);
* a defect edits the layers of the modalities that physically show it (a dent changes only
  the height used for depth, a stain only the albedo, a void only the X-ray attenuation,
  a missing component every layer);
* each modality is rendered from its layers with its own physics and noise: Lambert +
  Blinn-Phong shading for RGB (always shaded with the *defect-free* normals unless the defect
  also shows in RGB, so a dent does not leak into the image through shading), grey-body
  radiometry for thermal (apparent temperature from emissivity and reflected ambient),
  Beer-Lambert transmission with photon noise for X-ray, and a structured-light style depth
  camera (noise growing with z squared, NaN at depth edges, specular glints and dark spots).

Everything that is not the defect (pose, textures, lighting, noise) comes from random streams
keyed by (category, seed) only, so `generate_sample(c, "good", s)` is the exact defect-free
twin of `generate_sample(c, d, s)`: a modality that does not show the defect is bit-identical.
By default each seed is also a design of its own (a gear of 14-25 teeth, a capsule in random
colours); `design=` fixes the shape of object parts and the layout of circuit boards, as on a
production line of one product.
Per-modality ground-truth masks are measured, not declared: a pixel belongs to a modality's
mask where that modality's noise-free signal changed by more than a visibility threshold.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..core.frame import (GEOMETRY, RGB, SENSOR, THERMAL, XRAY, CameraIntrinsics, Frame,
                          Sample)

__all__ = ["CATEGORIES", "DEFECT_TYPES", "CategorySpec", "DefectSpec", "GOOD",
           "LAYOUT_CATEGORIES", "applicable_defects", "generate_sample", "has_design",
           "intrinsics_for"]

GOOD = "good"
REF_SIZE = 256.0          # piece dimensions below are given in pixels of a 256x256 render
FX_PER_PX = 2.0           # focal length / image width: a 0.2 m field of view at 0.4 m
#: Visibility thresholds on noise-free layer changes that define the per-modality masks.
MASK_ALBEDO = 0.03        # albedo units (RGB)
MASK_HEIGHT_M = 1.0e-4    # metres (geometry)
MASK_THERMAL_K = 0.1      # kelvin of apparent temperature
MASK_XRAY = 0.02          # attenuation (about 2 % transmission change)


# ----------------------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class CategorySpec:
    """A part category. `kind` is 'surface' (the part fills the view) or 'object' (a shaped
    part lying on a table). `sensor_type` is the second sensor of the cell that makes it."""

    name: str
    kind: str
    noun: str
    sensor_type: str
    structural: bool  # has sub-parts that can be missing or misplaced


@dataclass(frozen=True)
class DefectSpec:
    """A defect type: which modalities can show it and how it is described.

    modalities: modalities that show it ('rgb', 'sensor', 'geometry').
    sensor_types: sensor kinds in which it shows when 'sensor' is listed (a hot spot is
        thermal only, a void X-ray only).
    templates: sentence templates with the slots {size} {direction} {where} {part} {item}
        {item_the} {modality_note}.
    categories: categories where it can occur (None: all).
    """

    name: str
    phrase: str
    modalities: Tuple[str, ...]
    sensor_types: Tuple[str, ...]
    templates: Tuple[str, ...]
    categories: Optional[Tuple[str, ...]] = None

    def shows_in(self, sensor_type: str) -> Tuple[str, ...]:
        """Modalities that show this defect in a cell with the given second sensor."""
        return tuple(m for m in self.modalities
                     if m != SENSOR or sensor_type in self.sensor_types)

    def example_sentences(self, category: str) -> List[str]:
        """The templates filled with neutral slot values for `category` (prompt text)."""
        slots = dict(size="small", direction="across", where="centre",
                     part=CATEGORIES[category].noun, modality_note="", item="a part",
                     item_noun="part", item_the="the part")
        return [t.format(**slots) for t in self.templates]

    def applies_to(self, category: str, sensor_type: Optional[str] = None) -> bool:
        if category not in CATEGORIES:
            return False
        if self.categories is not None and category not in self.categories:
            return False
        st = sensor_type or CATEGORIES[category].sensor_type
        return len(self.shows_in(st)) > 0


def _cat(name, kind, noun, sensor, structural=False):
    return name, CategorySpec(name, kind, noun, sensor, structural)


CATEGORIES: Dict[str, CategorySpec] = dict([
    _cat("brushed_metal", "surface", "brushed metal plate", THERMAL),
    _cat("cast_metal", "surface", "cast aluminium surface", XRAY),
    _cat("wood", "surface", "wooden board", THERMAL),
    _cat("woven_fabric", "surface", "woven fabric", THERMAL),
    _cat("moulded_plastic", "surface", "moulded plastic panel", THERMAL),
    _cat("ceramic_tile", "surface", "ceramic tile", XRAY),
    _cat("pcb", "surface", "printed circuit board", THERMAL, True),
    _cat("bottle", "object", "bottle", XRAY, True),
    _cat("bracket", "object", "steel bracket", XRAY, True),
    _cat("gear", "object", "gear", XRAY, True),
    _cat("capsule", "object", "capsule", XRAY, True),
    _cat("hex_nut", "object", "hex nut", THERMAL, True),
])

_ALL3 = (RGB, SENSOR, GEOMETRY)
_BOTH = (THERMAL, XRAY)
_STRUCTURAL = tuple(n for n, c in CATEGORIES.items() if c.structural)
#: Parts thick enough for an internal flaw (a fabric has no inside to hide a void in).
_SOLID = tuple(n for n in CATEGORIES if n != "woven_fabric")


def _dspec(name, phrase, modalities, sensor_types, templates, categories=None):
    return name, DefectSpec(name, phrase, tuple(modalities), tuple(sensor_types),
                            tuple(templates), categories)


DEFECT_TYPES: Dict[str, DefectSpec] = dict([
    _dspec("scratch", "scratch", (RGB, GEOMETRY), (), [
        "a {size} scratch runs {direction} across the {where} of the {part}",
        "the {part} has a {size} scratch running {direction} in its {where}",
        "a {size} scratch is scored {direction} into the {where} of the {part}"]),
    _dspec("crack", "crack", _ALL3, _BOTH, [
        "a {size} crack runs {direction} through the {where} of the {part}",
        "a jagged {size} crack splits the {where} of the {part}",
        "the {part} is cracked {direction} in its {where}"],
        tuple(c for c in CATEGORIES if c != "woven_fabric")),
    _dspec("hole", "hole", _ALL3, _BOTH, [
        "a {size} hole goes through the {where} of the {part}",
        "the {part} is punctured by a {size} hole in its {where}",
        "there is a {size} through hole in the {where} of the {part}"]),
    _dspec("dent", "dent", (GEOMETRY,), (), [
        "a {size} dent presses into the {where} of the {part}{modality_note}",
        "the {where} of the {part} is dented inwards{modality_note}",
        "a shallow {size} dent deforms the {where} of the {part}{modality_note}"]),
    _dspec("bump", "bump", (GEOMETRY,), (), [
        "a {size} bump bulges out of the {where} of the {part}{modality_note}",
        "the {where} of the {part} has a raised {size} bulge{modality_note}",
        "a {size} swelling rises from the {where} of the {part}{modality_note}"]),
    _dspec("stain", "stain", (RGB,), (), [
        "a {size} stain discolours the {where} of the {part}{modality_note}",
        "the {where} of the {part} carries a {size} discoloured blotch{modality_note}",
        "a {size} dark mark stains the {where} of the {part}{modality_note}"]),
    _dspec("contamination", "contamination", (RGB,), (), [
        "{size} specks of contamination are scattered over the {where} of the {part}"
        "{modality_note}",
        "foreign particles contaminate the {where} of the {part}{modality_note}",
        "the {where} of the {part} is soiled with {size} debris{modality_note}"]),
    _dspec("hot_spot", "hot spot", (SENSOR,), (THERMAL,), [
        "a {size} hot spot glows in the {where} of the {part}{modality_note}",
        "the {where} of the {part} is locally overheated{modality_note}",
        "a {size} region of the {part} runs hotter than its surroundings in the {where}"
        "{modality_note}"]),
    _dspec("cold_spot", "cold spot", (SENSOR,), (THERMAL,), [
        "a {size} cold spot sits in the {where} of the {part}{modality_note}",
        "the {where} of the {part} is locally colder than the rest{modality_note}",
        "a {size} region of the {part} stays cooler in the {where}{modality_note}"]),
    _dspec("void", "void", (SENSOR,), (XRAY,), [
        "an internal {size} void lies beneath the {where} of the {part}{modality_note}",
        "a {size} gas pore is trapped inside the {where} of the {part}{modality_note}",
        "the {part} contains a hidden {size} cavity in its {where}{modality_note}"],
        _SOLID),
    _dspec("inclusion", "inclusion", (SENSOR,), (XRAY,), [
        "a dense {size} inclusion is embedded inside the {where} of the {part}"
        "{modality_note}",
        "a {size} foreign body is trapped within the {where} of the {part}{modality_note}",
        "the {part} holds a hidden {size} dense particle in its {where}{modality_note}"],
        _SOLID),
    _dspec("missing_part", "missing part", _ALL3, _BOTH, [
        "{item} is missing from the {where} of the {part}",
        "the {part} lacks {item} in its {where}",
        "{item} that belongs in the {where} of the {part} is absent"], _STRUCTURAL),
    _dspec("extra_part", "extra part", _ALL3, _BOTH, [
        "{item} lies on the {where} of the {part} where nothing belongs",
        "an unexpected {item_noun} sits on the {where} of the {part}",
        "the {part} carries a stray {item_noun} in its {where}"]),
    _dspec("misalignment", "misalignment", _ALL3, _BOTH, [
        "{item_the} is shifted out of place in the {where} of the {part}",
        "{item_the} of the {part} is misaligned in the {where}",
        "{item_the} sits off its nominal position in the {where} of the {part}"],
        _STRUCTURAL),
])

#: Defects with a smooth profile: their mask is the part above 25 % of the peak change.
_SMOOTH = ("dent", "bump", "hot_spot", "cold_spot", "void", "inclusion")

_MODALITY_NOTE = {
    GEOMETRY: ", visible only in the depth data",
    RGB: ", visible only in the colour image",
    THERMAL: ", visible only in the thermal image",
    XRAY: ", visible only in the X-ray image",
}


def applicable_defects(category: str, sensor_type: Optional[str] = None) -> List[str]:
    """Defect types that can be planted on `category` in a cell with `sensor_type`."""
    _check_category(category)
    return [d for d, s in DEFECT_TYPES.items() if s.applies_to(category, sensor_type)]


def _check_category(category):
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {sorted(CATEGORIES)}")


# ----------------------------------------------------------------------------- randomness
def _rng(*keys) -> np.random.Generator:
    """Independent, process-stable random stream per key tuple (str hashed with crc32)."""
    ints = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF
            for k in keys]
    return np.random.default_rng(np.random.SeedSequence(ints))


# ----------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class _Grid:
    size: int
    u: np.ndarray  # (H, W) float32 column index
    v: np.ndarray  # (H, W) float32 row index
    k: float       # pixels per reference pixel
    fx: float
    m_per_px: float  # metres per pixel at the nominal working distance


@lru_cache(maxsize=8)
def _grid(size: int) -> _Grid:
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    u.setflags(write=False)
    v.setflags(write=False)
    fx = FX_PER_PX * size
    return _Grid(size, u, v, size / REF_SIZE, fx, 0.42 / fx)


def intrinsics_for(size: int) -> CameraIntrinsics:
    """The generator's pinhole camera for a `size` x `size` render."""
    fx = FX_PER_PX * size
    c = (size - 1) / 2.0
    return CameraIntrinsics(fx=fx, fy=fx, cx=c, cy=c, width=size, height=size)


@lru_cache(maxsize=32)
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells + 2) Gaussian interpolation weights from a coarse lattice to pixels."""
    x = (np.arange(size) + 0.5) / size * cells + 0.5  # pixel position in lattice units
    w = np.exp(-0.5 * ((x[:, None] - np.arange(cells + 2)[None]) / 0.7) ** 2)
    w /= np.sqrt((w ** 2).sum(1, keepdims=True))  # unit variance for unit-variance nodes
    return w.astype(np.float32)


def _lowfreq(rng, size, cells) -> np.ndarray:
    """Smooth noise (H, W) float32, unit std, with about `cells` blobs across the image."""
    # separable smoothing as two small matrix products: much cheaper than zooming a grid
    coarse = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    a = _interp_matrix(size, cells)
    # einsum without BLAS: tiny products, and BLAS worker threads would only add overhead
    return np.einsum("ij,kj->ik", np.einsum("ij,jk->ik", a, coarse), a)


def _fine(rng, size, sigma=0.7) -> np.ndarray:
    n = rng.standard_normal((size, size), dtype=np.float32)
    return ndimage.gaussian_filter(n, sigma) * (1.8 * sigma + 0.6)


# ----------------------------------------------------------------------------- textures
@dataclass
class _Texture:
    albedo: np.ndarray                       # (H, W, 3) float32 in [0, 1]
    metal: Optional[np.ndarray] = None       # (H, W) float32 in [0, 1]: bare metal fraction
    relief: Optional[np.ndarray] = None      # (H, W) float32 metres


def _tex_brushed(rng, g, base=None):
    s = g.size
    base = np.array(base if base is not None else [0.62, 0.63, 0.65]) * rng.uniform(0.85, 1.1)
    th = rng.uniform(0, np.pi)
    t = -math.sin(th) * g.u + math.cos(th) * g.v
    n1 = ndimage.gaussian_filter1d(rng.standard_normal(4 * s), 0.6)
    streak = np.interp(t, np.arange(-2 * s, 2 * s), n1).astype(np.float32)
    low = _lowfreq(rng, s, 4)
    shade = 1 + 0.06 * streak + 0.03 * low
    return _Texture((base[None, None] * shade[..., None]).astype(np.float32),
                    metal=np.ones((s, s), np.float32), relief=4e-6 * streak)


def _tex_cast(rng, g):
    s = g.size
    base = np.array([0.52, 0.52, 0.53]) * rng.uniform(0.8, 1.1)
    mottle = _lowfreq(rng, s, 8)
    speck = _fine(rng, s, 0.8)
    shade = 1 + 0.07 * mottle + 0.06 * speck
    return _Texture((base[None, None] * shade[..., None]).astype(np.float32),
                    metal=np.full((s, s), 0.6, np.float32), relief=2.5e-5 * speck)


def _tex_wood(rng, g):
    s = g.size
    light = np.array([0.66, 0.48, 0.30]) * rng.uniform(0.85, 1.1)
    dark = light * rng.uniform(0.5, 0.7)
    th = rng.uniform(-0.3, 0.3) + rng.integers(0, 2) * np.pi / 2
    period = rng.uniform(10, 22) * g.k
    warp = _lowfreq(rng, s, 3) * rng.uniform(0.8, 2.0)
    x = (math.cos(th) * g.u + math.sin(th) * g.v) / period + warp
    ring = (0.5 + 0.5 * np.sin(2 * np.pi * x)) ** 3
    fibre = _fine(rng, s, 0.6)
    w = np.clip(0.75 * ring + 0.08 * fibre, 0, 1)[..., None]
    alb = light[None, None] * (1 - w) + dark[None, None] * w
    return _Texture(alb.astype(np.float32), relief=6e-6 * ring)


def _tex_weave(rng, g):
    s = g.size
    c1 = rng.uniform(0.15, 0.8, 3)
    c2 = np.clip(c1 * rng.uniform(0.75, 1.1, 3), 0, 1)
    p = rng.uniform(4, 7) * g.k
    th = rng.uniform(-0.15, 0.15)
    x = (math.cos(th) * g.u + math.sin(th) * g.v) / p
    y = (-math.sin(th) * g.u + math.cos(th) * g.v) / p
    over = ((np.floor(x) + np.floor(y)) % 2) == 0
    fx, fy = x - np.floor(x), y - np.floor(y)
    prof = np.where(over, np.sin(np.pi * fy), np.sin(np.pi * fx)).astype(np.float32)
    fuzz = _fine(rng, s, 0.6)
    col = np.where(over[..., None], c1[None, None], c2[None, None])
    alb = col * (0.55 + 0.45 * prof + 0.04 * fuzz)[..., None]
    return _Texture(np.clip(alb, 0, 1).astype(np.float32), relief=1.5e-4 * prof)


_PLASTIC_COLOURS = np.array([[0.75, 0.1, 0.08], [0.1, 0.25, 0.7], [0.9, 0.88, 0.85],
                             [0.15, 0.15, 0.16], [0.9, 0.7, 0.1], [0.2, 0.55, 0.25],
                             [0.85, 0.45, 0.1]])


def _tex_plastic(rng, g, colour=None):
    s = g.size
    c = colour if colour is not None else _PLASTIC_COLOURS[rng.integers(len(_PLASTIC_COLOURS))]
    c = np.clip(np.asarray(c) * rng.uniform(0.9, 1.1, 3), 0, 1)
    peel = _fine(rng, s, 1.5)
    alb = c[None, None] * (1 + 0.015 * peel + 0.02 * _lowfreq(rng, s, 3))[..., None]
    return _Texture(np.clip(alb, 0, 1).astype(np.float32), relief=3e-6 * peel)


def _tex_glaze(rng, g):
    s = g.size
    c = np.array([0.86, 0.84, 0.79]) * rng.uniform(0.9, 1.05, 3)
    sp = rng.random((s, s)) < 0.004
    speck = ndimage.gaussian_filter(sp.astype(np.float32), 0.6) * 3
    alb = c[None, None] * (1 + 0.02 * _lowfreq(rng, s, 5) - 0.5 * np.clip(speck, 0, 1))[..., None]
    return _Texture(np.clip(alb, 0, 1).astype(np.float32))


def _tex_pcb(rng, g, layout=None, shift=(0, 0)):
    """A circuit board's solder mask, traces, pads and silk screen; with `layout` (a design's
    generator) the traces, pads and silk come from it, moved by `shift` (rows, columns) px,
    and the colours and finish from `rng`."""
    mask_col = np.array([0.08, 0.33, 0.14]) * rng.uniform(0.8, 1.15, 3)
    copper_col = np.array([0.22, 0.45, 0.16]) * rng.uniform(0.9, 1.1)
    pad_col = np.array([0.78, 0.62, 0.32])
    layer = _pcb_layer(rng, g)  # drawn either way: the rest of the part stays the seed's
    if layout is not None:
        layer = ndimage.shift(_pcb_layer(layout, g), shift, order=0, mode="nearest")
    cols = np.stack([mask_col, copper_col, pad_col, np.array([0.9, 0.9, 0.88])]).astype(np.float32)
    alb = cols[layer] * (1 + 0.03 * _fine(rng, g.size, 0.7))[..., None]
    metal = (layer == 2).astype(np.float32)
    relief = np.where(layer == 1, 3.5e-5, 0).astype(np.float32)
    return _Texture(np.clip(alb, 0, 1).astype(np.float32), metal=metal, relief=relief)


def _pcb_layer(rng, g) -> np.ndarray:
    """(S, S) uint8 board layer map: 0 mask, 1 trace under mask, 2 exposed pad, 3 silk."""
    s = g.size
    k = g.k
    layer = np.zeros((s, s), np.uint8)
    for _ in range(rng.integers(14, 28)):
        w = max(1, int(round(rng.uniform(1.5, 3.5) * k)))
        a, b = sorted(rng.integers(0, s, 2))
        c = rng.integers(0, s - w)
        if rng.random() < 0.5:
            layer[c:c + w, a:b] = 1
        else:
            layer[a:b, c:c + w] = 1
    for _ in range(rng.integers(10, 25)):
        w = max(2, int(round(rng.uniform(2.5, 5) * k)))
        r0, c0 = rng.integers(0, s - w, 2)
        layer[r0:r0 + w, c0:c0 + w] = 2
    for _ in range(rng.integers(3, 7)):
        h, w = (rng.integers(1, 2) * max(1, int(k)), int(rng.uniform(8, 30) * k))
        r0, c0 = rng.integers(0, s - 30 * k, 2)
        layer[r0:r0 + h, c0:c0 + w] = 3
    return layer


def _tex_table(rng, g):
    s = g.size
    c = np.array([0.24, 0.25, 0.27]) * rng.uniform(0.7, 1.3)
    alb = c[None, None] * (1 + 0.05 * _lowfreq(rng, s, 6) + 0.05 * _fine(rng, s, 0.8))[..., None]
    return _Texture(np.clip(alb, 0, 1).astype(np.float32))


# ----------------------------------------------------------------------------- pieces
@dataclass
class _Piece:
    """A solid on the table seen from above. Dimensions in pixels of this render.

    kind: box (dims a, b half sizes, r corner radius) | disc (r, ri inner radius) |
          hex (r apothem, ri hole) | capsule (L half length, r radius: a lying cylinder with
          hemispherical ends) | gear (r root, rt tip, n teeth, ri bore).
    A `cut` piece removes everything composited before it inside its footprint.
    """

    kind: str
    cu: float
    cv: float
    angle: float = 0.0
    dims: Tuple[float, ...] = ()
    z0: float = 0.0          # base elevation above the table [m]
    height: float = 0.0      # flat thickness [m] (capsule: profile flattening factor)
    texture: Optional[str] = None
    colour: Optional[Tuple[float, float, float]] = None
    spec: float = 0.1
    shininess: float = 20.0
    eps: float = 0.9         # thermal emissivity
    dT: float = 0.0          # temperature above the part's base field [K]
    mu: float = 0.0          # X-ray attenuation [1/mm]
    cut: bool = False
    tilt: Tuple[float, float] = (0.0, 0.0)  # height slope [m/px] along u and v
    role: str = ""           # component | cap | hub | bore | feature ('' = body)
    label: str = ""          # noun used in descriptions
    unique: bool = False     # "the cap" rather than "a chip"
    group: int = -1          # pieces moved together by a misalignment
    present: bool = True     # False: removed by a missing-part defect (indices stay stable)

    def extent(self) -> float:
        d = self.dims
        if self.kind == "box":
            return math.hypot(d[0], d[1])
        if self.kind == "capsule":
            return d[0] + d[1]
        if self.kind == "gear":
            return d[1]
        return d[0] * (1.16 if self.kind == "hex" else 1.0)

    def render(self, g: _Grid):
        """Footprint and surfaces inside the piece's bounding window.

        Returns (window slices, inside (h, w) bool, top height (h, w) m, path length (h, w) mm)
        or None when the piece lies outside the image.
        """
        e = self.extent() + 2
        s = g.size
        v0, v1 = max(0, int(self.cv - e)), min(s, int(self.cv + e) + 2)
        u0, u1 = max(0, int(self.cu - e)), min(s, int(self.cu + e) + 2)
        if v0 >= v1 or u0 >= u1:
            return None
        sl = (slice(v0, v1), slice(u0, u1))
        du, dv = g.u[sl] - self.cu, g.v[sl] - self.cv
        c, sn = math.cos(self.angle), math.sin(self.angle)
        x, y = c * du + sn * dv, -sn * du + c * dv
        d = self.dims
        if self.kind == "box":
            r = d[2] if len(d) > 2 else 0.0
            qx, qy = np.abs(x) - d[0] + r, np.abs(y) - d[1] + r
            sdf = (np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
                   + np.minimum(np.maximum(qx, qy), 0) - r)
        elif self.kind == "disc":
            rho = np.hypot(x, y)
            sdf = rho - d[0]
            if len(d) > 1 and d[1] > 0:
                sdf = np.maximum(sdf, d[1] - rho)
        elif self.kind == "hex":
            ax, ay = np.abs(x), np.abs(y)
            sdf = np.maximum(ay, ax * 0.8660254 + ay * 0.5) - d[0]
            if len(d) > 1 and d[1] > 0:
                sdf = np.maximum(sdf, d[1] - np.hypot(x, y))
        elif self.kind == "capsule":
            dd = np.hypot(np.maximum(np.abs(x) - d[0], 0), y)
            sdf = dd - d[1]
        elif self.kind == "gear":
            rho = np.hypot(x, y)
            phi = np.arctan2(y, x)
            tooth = np.clip((np.cos(d[2] * phi) - 0.1) * 3.0, 0, 1)
            sdf = rho - (d[0] + (d[1] - d[0]) * tooth)
            if len(d) > 3 and d[3] > 0:
                sdf = np.maximum(sdf, d[3] - rho)
        else:
            raise ValueError(f"unknown piece kind {self.kind!r}")
        inside = sdf < 0
        if self.kind == "capsule":
            mpp = g.m_per_px
            chord = np.sqrt(np.maximum(d[1] ** 2 - dd ** 2, 0)) * mpp * self.height
            top = self.z0 + d[1] * mpp * self.height + chord
            if self.tilt != (0.0, 0.0):
                top = top + self.tilt[0] * du + self.tilt[1] * dv
            path = 2000.0 * chord
        else:
            top = np.full(inside.shape, self.z0 + self.height, np.float32)
            if self.tilt != (0.0, 0.0):
                top = top + self.tilt[0] * du + self.tilt[1] * dv
            path = np.full(inside.shape, 1000.0 * self.height, np.float32)
        return sl, inside, top.astype(np.float32), path.astype(np.float32)


@dataclass
class _Scene:
    pieces: List[_Piece]
    textures: Dict[str, _Texture]
    table: _Texture
    t_part: np.ndarray       # (H, W) base temperature of the part [K]
    t_amb: float
    eps_table: float = 0.95
    table_tilt: Tuple[float, float] = (0.0, 0.0)
    plain: Optional[np.ndarray] = None  # (H, W) fine noise modulating plain-coloured pieces
    density: Optional[np.ndarray] = None  # (H, W) relative material density (X-ray texture)


@dataclass
class _Layers:
    height: np.ndarray   # (H, W) float32 m above table
    pid: np.ndarray      # (H, W) int16 index of the visible piece, -1 table
    albedo: np.ndarray   # (H, W, 3) float32
    spec: np.ndarray     # (H, W) float32
    shin: np.ndarray     # (H, W) float32
    eps: np.ndarray      # (H, W) float32
    temp: np.ndarray     # (H, W) float32 K
    atten: np.ndarray    # (H, W) float32 X-ray line integral
    part: np.ndarray     # (H, W) bool

    def copy(self) -> "_Layers":
        return _Layers(**{k: v.copy() for k, v in self.__dict__.items()})


def _composite(scene: _Scene, g: _Grid) -> _Layers:
    s = g.size
    height = np.zeros((s, s), np.float32)
    pid = np.full((s, s), -1, np.int16)
    atten = np.zeros((s, s), np.float32)
    for i, p in enumerate(scene.pieces):
        r = p.render(g) if p.present else None
        if r is None:
            continue
        sl, inside, top, path = r
        if p.cut:
            height[sl][inside] = 0.0
            pid[sl][inside] = -1
            atten[sl][inside] = 0.0
            continue
        upd = inside & (top >= height[sl])
        height[sl][upd] = top[upd]
        pid[sl][upd] = i
        atten[sl][inside] += p.mu * path[inside]
    if scene.density is not None:
        atten *= scene.density
    albedo = scene.table.albedo.copy()
    spec = np.full((s, s), 0.05, np.float32)
    shin = np.full((s, s), 10.0, np.float32)
    eps = np.full((s, s), scene.eps_table, np.float32)
    temp = np.full((s, s), scene.t_amb, np.float32)
    part = pid >= 0
    for i, p in enumerate(scene.pieces):
        if p.cut or not p.present:
            continue
        m = pid == i
        if not m.any():
            continue
        if p.texture is not None:
            tex = scene.textures[p.texture]
            albedo[m] = tex.albedo[m]
            metal = tex.metal[m] if tex.metal is not None else 0.0
            if tex.relief is not None:
                height[m] += tex.relief[m]
        else:
            albedo[m] = np.asarray(p.colour, np.float32) * scene.plain[m][:, None]
            metal = 0.0
        spec[m] = p.spec + 0.25 * metal
        shin[m] = p.shininess
        eps[m] = p.eps * (1 - metal) + 0.12 * metal
        temp[m] = scene.t_part[m] + p.dT
    return _Layers(height, pid, albedo, spec, shin, eps, temp, atten, part)


# ----------------------------------------------------------------------------- scenes
def _pose(rng, g, jitter=0.06, scale=(0.85, 1.15)):
    s = g.size
    cu, cv = s / 2 + rng.normal(0, jitter * s, 2)
    return float(cu), float(cv), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(*scale))


def _rot(dx, dy, a):
    c, s = math.cos(a), math.sin(a)
    return c * dx - s * dy, s * dx + c * dy


def _place(pieces: List["_Piece"], rng, g, jitter: float = 0.04,
           angle_deg: Optional[float] = None) -> List["_Piece"]:
    """The pieces of one design turned by a random angle (or `angle_deg`) about their first
    piece (the body) and moved so that it lies near the image centre: one product in another
    pose."""
    th = float(rng.uniform(0, 2 * np.pi))  # drawn either way: the shift stays the seed's
    if angle_deg is not None:
        th = math.radians(float(angle_deg))
    cu, cv = g.size / 2 + rng.normal(0, jitter * g.size, 2)
    u0, v0 = pieces[0].cu, pieces[0].cv
    out = []
    for p in pieces:
        du, dv = _rot(p.cu - u0, p.cv - v0, th)
        tilt = _rot(p.tilt[0], p.tilt[1], th)
        out.append(replace(p, cu=float(cu + du), cv=float(cv + dv), angle=p.angle + th,
                           tilt=(float(tilt[0]), float(tilt[1]))))
    return out


def _part_temperature(rng, g, t_amb):
    """Base temperature field of a part coming out of a process: warm, smooth gradient."""
    s = g.size
    t0 = t_amb + rng.uniform(8, 35)
    gu, gv = rng.normal(0, 2.0, 2) / s
    return (t0 + gu * (g.u - s / 2) + gv * (g.v - s / 2)
            + rng.uniform(0.2, 1.0) * _lowfreq(rng, s, 3)).astype(np.float32)


_SURFACE = {
    # texture fn, spec, shininess, emissivity range, mu [1/mm], thickness range [mm]
    "brushed_metal": (_tex_brushed, 0.35, 25.0, (0.15, 0.3), 0.25, (2.0, 4.0)),
    "cast_metal": (_tex_cast, 0.15, 12.0, (0.45, 0.65), 0.07, (10.0, 18.0)),
    "wood": (_tex_wood, 0.04, 8.0, (0.88, 0.94), 0.012, (12.0, 25.0)),
    "woven_fabric": (_tex_weave, 0.02, 5.0, (0.86, 0.92), 0.02, (1.0, 2.5)),
    "moulded_plastic": (_tex_plastic, 0.25, 40.0, (0.9, 0.95), 0.025, (2.5, 5.0)),
    "ceramic_tile": (_tex_glaze, 0.45, 60.0, (0.9, 0.94), 0.09, (7.0, 11.0)),
    "pcb": (_tex_pcb, 0.2, 30.0, (0.88, 0.93), 0.05, (1.5, 1.7)),
}


#: surface categories with a layout that `design` fixes (the other surfaces are textures)
LAYOUT_CATEGORIES = ("pcb",)


def has_design(category: str) -> bool:
    """Whether `generate_sample(design=...)` fixes anything of this category: the shape of an
    object, the layout of a board (a texture has none)."""
    return category in _OBJECTS or category in LAYOUT_CATEGORIES


def _build_surface(category, rng, g, design: Optional[int] = None, pose=None):
    """A surface filling the view; a board (`LAYOUT_CATEGORIES`) of the given design has that
    design's layout, held in a fixture within a few pixels (`pose`: the part's generator)."""
    fn, spec, shin, eps_r, mu, th_r = _SURFACE[category]
    s = g.size
    layout = design is not None and category in LAYOUT_CATEGORIES
    shift = np.round(pose.normal(0, 1.5 * g.k, 2)) if layout else np.zeros(2)
    if layout:
        tex = fn(rng, g, layout=_rng("design", category, design), shift=tuple(shift))
    else:
        tex = fn(rng, g)
    thick = rng.uniform(*th_r) / 1000.0
    plate = _Piece("box", s / 2, s / 2, 0.0, (s, s), z0=rng.uniform(0.03, 0.05),
                   height=thick, texture="surface", spec=spec, shininess=shin,
                   eps=rng.uniform(*eps_r), mu=mu, tilt=tuple(rng.normal(0, 1.2e-5, 2)))
    pieces = [plate]
    if category == "pcb":
        pieces += _pcb_components(rng, g, plate)
        if layout:  # drawn as without a design above, so the rest of the part stays the seed's
            comps = _pcb_components(_rng("design-components", category, design), g, plate)
            pieces = [plate] + [replace(q, cu=q.cu + float(shift[1]), cv=q.cv + float(shift[0]))
                                for q in comps]
    return pieces, {"surface": tex}


def _pcb_components(rng, g, board: _Piece):
    k, s = g.k, g.size
    pieces: List[_Piece] = []
    boxes = []
    kinds = ["chip", "chip", "resistor", "resistor", "resistor", "capacitor", "capacitor",
             "connector", "chip", "resistor"]
    n = int(rng.integers(5, 9))
    for kind in kinds[:n]:
        for _ in range(30):
            ang = float(rng.integers(0, 2) * np.pi / 2 + rng.normal(0, 0.01))
            if kind == "chip":
                a, b = rng.uniform(10, 20) * k, rng.uniform(8, 14) * k
                dims, h = (a, b, 1.0 * k), rng.uniform(1.0, 2.0) / 1000
                colour, dT, mu, spec, kd = (0.05, 0.05, 0.06), rng.uniform(4, 15), 0.12, 0.3, "box"
            elif kind == "resistor":
                a, b = rng.uniform(4, 6) * k, rng.uniform(2, 3) * k
                dims, h = (a, b, 0.5 * k), 0.6 / 1000
                colour = (0.08, 0.08, 0.09) if rng.random() < 0.5 else (0.62, 0.52, 0.36)
                dT, mu, spec, kd = rng.uniform(1, 4), 0.2, 0.15, "box"
            elif kind == "capacitor":
                a = b = rng.uniform(4, 8) * k
                dims, h = (a, 0.0), rng.uniform(3, 7) / 1000
                colour, dT, mu, spec, kd = (0.1, 0.14, 0.45), rng.uniform(0, 2), 0.15, 0.4, "disc"
            else:
                a, b = rng.uniform(20, 30) * k, rng.uniform(4, 6) * k
                dims, h = (a, b, 0.5 * k), 5.0 / 1000
                colour, dT, mu, spec, kd = (0.88, 0.87, 0.82), 0.0, 0.05, 0.1, "box"
            cu, cv = rng.uniform(a + 6 * k, s - a - 6 * k), rng.uniform(a + 6 * k, s - a - 6 * k)
            r = math.hypot(a, b) + 3 * k
            if all(math.hypot(cu - bu, cv - bv) > r + br for bu, bv, br in boxes):
                boxes.append((cu, cv, r))
                # sit on the (tilted) board: its top at this spot, its slope
                z0 = (board.z0 + board.height + board.tilt[0] * (cu - board.cu)
                      + board.tilt[1] * (cv - board.cv))
                pieces.append(_Piece(kd, float(cu), float(cv), ang, dims, z0=z0, height=h,
                                     colour=colour, spec=spec, shininess=40, eps=0.92, dT=dT,
                                     mu=mu, tilt=board.tilt, role="component", label=kind,
                                     group=len(pieces)))
                break
    return pieces


def _build_bottle(rng, g):
    cu, cv, ang, sc = _pose(rng, g)
    k = g.k * sc
    L, r = rng.uniform(48, 62) * k, rng.uniform(22, 28) * k
    rn, ln = r * rng.uniform(0.4, 0.5), rng.uniform(10, 14) * k
    rc, lc = rn * rng.uniform(1.15, 1.3), rng.uniform(6, 9) * k
    tex = _tex_plastic(rng, g, colour=[[0.92, 0.92, 0.9], [0.6, 0.35, 0.12], [0.3, 0.55, 0.8]]
                       [rng.integers(3)])
    cap_col = tuple(_PLASTIC_COLOURS[rng.integers(len(_PLASTIC_COLOURS))])
    flat = rng.uniform(0.9, 1.0)
    body = _Piece("capsule", cu, cv, ang, (L, r), height=flat, texture="body", spec=0.3,
                  shininess=40, eps=0.93, mu=0.02)
    nx, ny = _rot(L + ln, 0, ang)
    neck = _Piece("capsule", cu + nx, cv + ny, ang, (ln, rn), z0=(r - rn) * g.m_per_px * flat,
                  height=flat, texture="body", spec=0.3, shininess=40, eps=0.93, mu=0.03)
    ox, oy = _rot(L + 2 * ln + lc * 0.6, 0, ang)
    cap = _Piece("capsule", cu + ox, cv + oy, ang, (lc, rc), z0=(r - rc) * g.m_per_px * flat,
                 height=flat, colour=cap_col, spec=0.25, shininess=30, eps=0.94,
                 dT=rng.uniform(-3, -1), mu=0.035, role="cap", label="cap", unique=True, group=0)
    return [body, neck, cap], {"body": tex}


def _build_capsule(rng, g):
    cu, cv, ang, sc = _pose(rng, g)
    k = g.k * sc
    L, r = rng.uniform(30, 40) * k, rng.uniform(17, 22) * k
    cols = _PLASTIC_COLOURS[rng.choice(len(_PLASTIC_COLOURS), 2, replace=False)]
    flat = rng.uniform(0.85, 1.0)
    body = _Piece("capsule", cu, cv, ang, (L, r), height=flat, colour=tuple(cols[0]), spec=0.5,
                  shininess=60, eps=0.93, mu=0.03)
    lc = L * rng.uniform(0.55, 0.65)
    ox, oy = _rot(-(L - lc) - 0.5 * k, 0, ang)
    rc = r + 1.2 * k
    cap = _Piece("capsule", cu + ox, cv + oy, ang, (lc, rc), height=flat * r / rc,
                 colour=tuple(cols[1]), spec=0.5, shininess=60, eps=0.93, dT=rng.uniform(0.5, 1.5),
                 mu=0.035, role="cap", label="cap", unique=True, group=0)
    return [body, cap], {}


def _build_gear(rng, g):
    cu, cv, ang, sc = _pose(rng, g, jitter=0.04, scale=(0.85, 1.05))
    k = g.k * sc
    rr = rng.uniform(70, 82) * k
    rt = rr + rng.uniform(8, 12) * k
    n = int(rng.integers(14, 26))
    th = rng.uniform(6, 10) / 1000
    tex = _tex_brushed(rng, g, base=[0.55, 0.56, 0.58])
    body = _Piece("gear", cu, cv, ang, (rr, rt, n, 0.0), height=th, texture="steel", spec=0.3,
                  shininess=25, eps=rng.uniform(0.25, 0.4), mu=0.2)
    rh = rng.uniform(20, 28) * k
    rb = rh * rng.uniform(0.4, 0.55)
    hub = _Piece("disc", cu, cv, 0.0, (rh, rb), z0=th, height=rng.uniform(3, 6) / 1000,
                 texture="steel", spec=0.3, shininess=25, eps=0.35, dT=rng.uniform(1.0, 2.5),
                 mu=0.2, role="hub", label="hub", unique=True, group=0)
    bore = _Piece("disc", cu, cv, 0.0, (rb,), cut=True, role="bore", label="bore",
                  unique=True, group=0)
    return [body, hub, bore], {"steel": tex}


def _build_bracket(rng, g):
    cu, cv, ang, sc = _pose(rng, g, jitter=0.04, scale=(0.85, 1.05))
    k = g.k * sc
    a1, b1 = rng.uniform(70, 85) * k, rng.uniform(15, 20) * k
    a2 = rng.uniform(45, 60) * k
    th = rng.uniform(3, 6) / 1000
    painted = rng.random() < 0.5
    tex = (_tex_plastic(rng, g) if painted else _tex_brushed(rng, g, base=[0.7, 0.72, 0.75]))
    eps = 0.9 if painted else 0.3
    common = dict(height=th, texture="steel", spec=0.25, shininess=30, eps=eps, mu=0.2)
    arm1 = _Piece("box", cu, cv, ang, (a1, b1, 3 * k), **common)
    ox, oy = _rot(-a1 + b1, a2 - b1, ang)
    arm2 = _Piece("box", cu + ox, cv + oy, ang, (b1, a2, 3 * k), **common)
    pieces = [arm1, arm2]
    rh = b1 * rng.uniform(0.3, 0.45)
    for t in (0.35, 0.8):
        hx, hy = _rot(a1 * t, 0, ang)
        pieces.append(_Piece("disc", cu + hx, cv + hy, 0.0, (rh,), cut=True, role="feature"))
    nx, ny = _rot(-a1 + b1, a2 * 0.6, ang)
    rn = b1 * rng.uniform(0.6, 0.75)
    pieces.append(_Piece("hex", cu + nx, cv + ny, ang + rng.uniform(0, 1), (rn, 0.0), z0=th,
                         height=rng.uniform(4, 6) / 1000, colour=(0.62, 0.63, 0.62), spec=0.4,
                         shininess=30, eps=0.3, dT=rng.uniform(-2.0, -0.8), mu=0.2,
                         role="component", label="welded nut", unique=True, group=0))
    pieces.append(_Piece("disc", cu + nx, cv + ny, 0.0, (rn * 0.45,), cut=True, role="bore",
                         group=0))
    return pieces, {"steel": tex}


def _build_hex_nut(rng, g):
    cu, cv, ang, sc = _pose(rng, g, jitter=0.05, scale=(0.85, 1.1))
    k = g.k * sc
    a = rng.uniform(55, 70) * k
    tex = _tex_brushed(rng, g, base=[0.68, 0.69, 0.7])
    nut = _Piece("hex", cu, cv, ang, (a, 0.0), height=rng.uniform(10, 16) / 1000,
                 texture="steel", spec=0.35, shininess=25, eps=rng.uniform(0.2, 0.35), mu=0.2)
    bore = _Piece("disc", cu, cv, 0.0, (a * rng.uniform(0.45, 0.55),), cut=True, role="bore",
                  label="threaded bore", unique=True, group=0)
    return [nut, bore], {"steel": tex}


_OBJECTS = {"bottle": _build_bottle, "capsule": _build_capsule, "gear": _build_gear,
            "bracket": _build_bracket, "hex_nut": _build_hex_nut}


def _scene(category: str, seed: int, g: _Grid, design: Optional[int] = None,
           angle_deg: Optional[float] = None) -> Tuple[_Scene, dict]:
    rng = _rng("scene", category, seed)
    t_amb = float(rng.uniform(293.0, 298.0))
    table = _tex_table(rng, g)
    if category in _OBJECTS:
        pieces, textures = _OBJECTS[category](rng, g)
        if design is not None:
            # Shape from the design, surface finish (textures) from this part; drawn after the
            # part's own pieces so the rest of the scene is the same as without a design.
            shape, _ = _OBJECTS[category](_rng("design", category, design), g)
            pieces = _place(shape, _rng("pose", category, seed), g, angle_deg=angle_deg)
    else:
        pieces, textures = _build_surface(category, rng, g, design,
                                          _rng("pose", category, seed))
    t_part = _part_temperature(rng, g, t_amb)
    plain = 1 + 0.03 * _fine(rng, g.size, 0.8)
    # density / thickness variation of the material: what an X-ray of a good part shows
    density = (1 + rng.uniform(0.02, 0.06) * _lowfreq(rng, g.size, 6)
               + rng.uniform(0.0, 0.02) * _fine(rng, g.size, 1.0)).astype(np.float32)
    scene = _Scene(pieces, textures, table, t_part, t_amb, plain=plain, density=density,
                   table_tilt=tuple(rng.normal(0, 1e-5, 2)))
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.3)
    light = dict(
        l=np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]),
        intensity=rng.uniform(0.75, 1.25), ambient=rng.uniform(0.2, 0.4),
        tint=rng.uniform(0.93, 1.07, 3), vignette=rng.uniform(0.0, 0.25),
        z_table=rng.uniform(0.40, 0.46))
    return scene, light


# ----------------------------------------------------------------------------- defects
def _sites(part: np.ndarray, margin: float) -> np.ndarray:
    """Flat indices of part pixels at least `margin` px from the part's border."""
    s = part.shape[0]
    f = 4
    small = part[::f, ::f]
    dist = ndimage.distance_transform_edt(np.pad(small, 1))[1:-1, 1:-1] * f
    ok = np.repeat(np.repeat(dist >= margin + f, f, 0), f, 1)[:s, :s] & part
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        idx = np.flatnonzero(part)
    return idx


def _ellipse_r2(g, cu: float, cv: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """Squared normalised radius of every pixel in an ellipse centred at (cu, cv) with
    semi-axes rx, ry [px] rotated by `angle` [rad]: < 1 inside."""
    c, s = math.cos(angle), math.sin(angle)
    du, dv = g.u - cu, g.v - cv
    return ((c * du + s * dv) / rx) ** 2 + ((-s * du + c * dv) / ry) ** 2


def _random_ellipse_r2(rng, g, cu: float, cv: float, rx_min: float, rx_max: float,
                       k: float) -> np.ndarray:
    """`_ellipse_r2` of an ellipse at (cu, cv) with a random semi-axis rx in [rx_min, rx_max)
    x k [px], ry 0.6-1.0 x rx and any orientation (drawn in that order from rng)."""
    rx = rng.uniform(rx_min, rx_max) * k
    ry = rx * rng.uniform(0.6, 1.0)
    return _ellipse_r2(g, cu, cv, rx, ry, rng.uniform(0, np.pi))


def _pick_site(rng, part, margin):
    idx = _sites(part, margin)
    i = idx[rng.integers(idx.size)]
    return float(i % part.shape[1]), float(i // part.shape[1])


def _polyline_dist(g, pts, reach=8.0):
    """Distance [px] (H, W) float32 from each pixel to a polyline (N, 2) of (u, v) points;
    exact within `reach` px of the line's bounding box, inf beyond."""
    # hand-written: scipy/numpy have no point-to-segment distance field; vectorised per segment
    d = np.full((g.size, g.size), np.inf, np.float32)
    u0w, v0w = (max(0, int(np.floor(pts[:, i].min() - reach))) for i in (0, 1))
    u1w, v1w = (min(g.size, int(np.ceil(pts[:, i].max() + reach)) + 1) for i in (0, 1))
    if u0w >= u1w or v0w >= v1w:
        return d
    sl = (slice(v0w, v1w), slice(u0w, u1w))
    uu, vv, dw = g.u[sl], g.v[sl], d[sl]
    for (u0, v0), (u1, v1) in zip(pts[:-1], pts[1:]):
        du, dv = u1 - u0, v1 - v0
        ll = du * du + dv * dv + 1e-9
        t = np.clip(((uu - u0) * du + (vv - v0) * dv) / ll, 0, 1)
        np.minimum(dw, np.hypot(uu - u0 - t * du, vv - v0 - t * dv), out=dw)
    return d


def _curve(rng, start, length, angle, n, wiggle):
    ang = angle + np.cumsum(rng.normal(0, wiggle, n))
    step = length / n
    pts = np.zeros((n + 1, 2))
    pts[0] = start
    pts[1:] = start + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1) * step, 0)
    return pts - (pts[-1] - pts[0]) / 2  # centre the curve on `start`


def _blob(rng, g, cu, cv, rx, ry, ang, rough):
    """Irregular blob: an ellipse with a noisy boundary. Returns soft alpha (H, W) in [0, 1]."""
    c, s = math.cos(ang), math.sin(ang)
    du, dv = g.u - cu, g.v - cv
    x, y = (c * du + s * dv) / rx, (-s * du + c * dv) / ry
    r = np.sqrt(x * x + y * y)
    n = _lowfreq(rng, g.size, 12) * rough
    return np.clip((1.0 - r + 0.35 * n) / 0.25, 0, 1).astype(np.float32)


def _apply_defect(name: str, rng, g: _Grid, scene: _Scene, clean: _Layers):
    """Plant `name`. Returns (layers, scene, info) where info has 'item' for structural ones."""
    k = g.k
    lay = clean.copy()
    info: dict = {}
    part = clean.part
    if name in ("missing_part", "misalignment", "extra_part", "hole"):
        pieces = [replace(p) for p in scene.pieces]
        if name == "hole":
            cu, cv = _pick_site(rng, part, 14 * k)
            pieces.append(_Piece("disc", cu, cv, 0.0, (rng.uniform(3, 15) * k,), cut=True))
        elif name == "extra_part":
            cu, cv = _pick_site(rng, part, 12 * k)
            top = float(clean.height[int(cv), int(cu)])
            # follow the local slope of the surface it lies on
            iv, iu = (min(max(int(x), 2), g.size - 3) for x in (cv, cu))
            tilt = (float(clean.height[iv, iu + 2] - clean.height[iv, iu - 2]) / 4,
                    float(clean.height[iv + 2, iu] - clean.height[iv - 2, iu]) / 4)
            kind = ["washer", "screw", "nut"][rng.integers(3)]
            steel = dict(colour=tuple(np.array([0.6, 0.61, 0.63]) * rng.uniform(0.8, 1.2)),
                         spec=0.5, shininess=30, eps=0.25, mu=0.25, z0=top, tilt=tilt,
                         dT=-0.7 * float(scene.t_part.mean() - scene.t_amb))
            if kind == "washer":
                r = rng.uniform(5, 12) * k
                p = _Piece("disc", cu, cv, 0.0, (r, r * 0.45), height=1.5e-3, **steel)
            elif kind == "screw":
                p = _Piece("capsule", cu, cv, rng.uniform(0, np.pi),
                           (rng.uniform(5, 9) * k, rng.uniform(1.8, 3) * k), height=1.0, **steel)
            else:
                p = _Piece("hex", cu, cv, rng.uniform(0, 1), (rng.uniform(5, 8) * k, 2.5 * k),
                           height=3e-3, **steel)
            pieces.append(p)
            info["item"] = f"a stray {kind}"
            info["item_noun"] = kind
        elif name == "missing_part":
            cands = [i for i, p in enumerate(pieces) if p.role in ("component", "cap")]
            if cands and not (scene.pieces[0].kind == "gear"):
                i = cands[rng.integers(len(cands))]
                lab, uniq = pieces[i].label, pieces[i].unique
                grp = pieces[i].group
                for j, p in enumerate(pieces):
                    if j == i or (grp >= 0 and p.group == grp and p.role == "bore"):
                        pieces[j] = replace(p, present=False)
                info["item"] = ("the " if uniq else "a ") + lab
            else:  # gear tooth or nut corner: cut it away
                body = pieces[0]
                if body.kind == "gear":
                    rr, rt, n = body.dims[:3]
                    t = int(rng.integers(n))
                    a = body.angle + 2 * np.pi * t / n
                    mu_, mv = _rot((rr + rt) / 2 + 3 * k, 0, a)
                    pieces.append(_Piece("box", body.cu + mu_, body.cv + mv, a,
                                         ((rt - rr) / 2 + 4 * k, np.pi * rr / n * 0.6),
                                         cut=True))
                    info["item"] = "a tooth"
                else:  # hex nut: a broken-off corner
                    a = body.angle + np.pi / 3 * rng.integers(6) + np.pi / 6
                    r = body.dims[0] * 1.1547
                    mu_, mv = _rot(r, 0, a)
                    pieces.append(_Piece("disc", body.cu + mu_, body.cv + mv, 0.0,
                                         (rng.uniform(0.25, 0.45) * body.dims[0],), cut=True))
                    info["item"] = "a corner"
        else:  # misalignment: move one group of pieces
            cands = [i for i, p in enumerate(pieces) if p.group >= 0]
            i = cands[rng.integers(len(cands))]
            grp = pieces[i].group
            shift = rng.uniform(3, 9) * k
            dirn = rng.uniform(0, 2 * np.pi)
            rot = rng.normal(0, 0.15) if pieces[i].role == "component" else 0.0
            for j, p in enumerate(pieces):
                if p.group == grp:
                    pieces[j] = replace(p, cu=p.cu + shift * math.cos(dirn),
                                        cv=p.cv + shift * math.sin(dirn), angle=p.angle + rot)
            main = next(p for p in pieces if p.group == grp and p.label)
            info["item_the"] = "the " + main.label
        new_scene = replace(scene, pieces=pieces)
        return _composite(new_scene, g), new_scene, info

    if name in ("scratch", "crack"):
        cu, cv = _pick_site(rng, part, 10 * k)
        if name == "scratch":
            length = rng.uniform(25, 90) * k
            pts = _curve(rng, np.array([cu, cv]), length, rng.uniform(0, np.pi), 6, 0.05)
            width = rng.uniform(0.6, 1.6) * k
            depth = rng.uniform(1.5e-4, 6e-4)
            contrast = rng.uniform(0.12, 0.45) * (1 if rng.random() < 0.6 else -1)
        else:
            length = rng.uniform(20, 70) * k
            pts = _curve(rng, np.array([cu, cv]), length, rng.uniform(0, np.pi), 14, 0.45)
            width = rng.uniform(0.6, 1.4) * k
            depth = rng.uniform(4e-4, 2e-3)
            contrast = -rng.uniform(0.3, 0.7)
        d = _polyline_dist(g, pts)
        prof = np.clip(1.0 - d / (width + 0.5), 0, 1) * part
        lay.albedo *= (1 + contrast * prof)[..., None]
        np.clip(lay.albedo, 0, 1, out=lay.albedo)
        lay.height -= depth * prof
        if name == "crack":
            lay.temp -= rng.uniform(0.8, 3.0) * np.clip(1.0 - d / (width + 2.5), 0, 1) * part
            lay.eps = lay.eps + (0.97 - lay.eps) * prof
            lay.atten *= (1 - rng.uniform(0.35, 0.8) * prof)
        return lay, scene, info

    if name in ("dent", "bump"):
        cu, cv = _pick_site(rng, part, 16 * k)
        r2 = _random_ellipse_r2(rng, g, cu, cv, 6, 24, k)
        prof = np.clip(1 - r2, 0, None) ** 2 * part
        amp = rng.uniform(3e-4, 2.5e-3) * (-1 if name == "dent" else 1)
        lay.height += amp * prof
        return lay, scene, info

    if name in ("stain", "contamination"):
        cu, cv = _pick_site(rng, part, 14 * k)
        if name == "stain":
            r = rng.uniform(7, 30) * k
            alpha = _blob(rng, g, cu, cv, r, r * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), 1.0)
            alpha *= rng.uniform(0.25, 0.7)
            colour = np.array([[0.25, 0.17, 0.08], [0.05, 0.05, 0.05], [0.55, 0.45, 0.15],
                               [0.8, 0.78, 0.7]])[rng.integers(4)]
        else:
            r = rng.uniform(8, 30) * k
            pts = rng.normal(0, r / 2, (int(rng.integers(6, 30)), 2)) + [cu, cv]
            spots = np.zeros((g.size, g.size), np.float32)
            ij = np.clip(np.round(pts).astype(int), 0, g.size - 1)
            spots[ij[:, 1], ij[:, 0]] = 1
            alpha = np.clip(ndimage.gaussian_filter(spots, rng.uniform(0.6, 1.4) * k) * 6, 0, 1)
            alpha *= rng.uniform(0.5, 0.9)
            colour = np.array([[0.08, 0.07, 0.06], [0.75, 0.72, 0.65], [0.4, 0.3, 0.2]])[
                rng.integers(3)]
        alpha = alpha * part
        lay.albedo = (lay.albedo * (1 - alpha[..., None])
                      + colour[None, None] * alpha[..., None]).astype(np.float32)
        return lay, scene, info

    if name in ("hot_spot", "cold_spot"):
        cu, cv = _pick_site(rng, part, 10 * k)
        sig = rng.uniform(4, 16) * k
        prof = np.exp(-((g.u - cu) ** 2 + (g.v - cv) ** 2) / (2 * sig * sig)) * part
        # contrast drawn as apparent kelvin, so low-emissivity metals get a larger true change
        eps_here = float(clean.eps[int(cv), int(cu)])
        amp = rng.uniform(0.6, 5.0) / max(eps_here, 0.15)
        lay.temp += (amp if name == "hot_spot" else -amp) * prof
        return lay, scene, info

    if name in ("void", "inclusion"):
        cu, cv = _pick_site(rng, part, 12 * k)
        r2 = _random_ellipse_r2(rng, g, cu, cv, 4, 16, k)
        chord = np.sqrt(np.clip(1 - r2, 0, None)) * part  # ellipsoid chord / max chord
        local = float(clean.atten[int(cv), int(cu)])
        if name == "void":
            lay.atten -= rng.uniform(0.1, 0.45) * local * chord
        else:
            lay.atten += rng.uniform(0.08, 0.6) * max(local, 0.3) * chord
        return lay, scene, info
    raise ValueError(f"unknown defect type {name!r}")


# ----------------------------------------------------------------------------- rendering
def _normals(height, mpp):
    gy, gx = np.gradient(height, mpp)
    n = np.stack([-gx, -gy, np.ones_like(height)], -1)
    n /= np.sqrt(np.einsum("...i,...i->...", n, n))[..., None]
    return n


@lru_cache(maxsize=8)
def _view_dirs(size: int) -> np.ndarray:
    """(H, W, 3) unit vectors from the surface towards the camera (table frame, z up)."""
    g = _grid(size)
    intr = intrinsics_for(size)
    vd = np.stack([-(g.u - intr.cx) / intr.fx, -(g.v - intr.cy) / intr.fy,
                   np.ones_like(g.u)], -1)
    vd /= np.linalg.norm(vd, axis=-1, keepdims=True)
    vd.setflags(write=False)
    return vd


def _shading(lay: _Layers, height, light, g):
    """Lambert term (H, W) and Blinn-Phong specular term (H, W) with per-pixel view rays."""
    n = _normals(height, g.m_per_px)
    ldir = light["l"]
    ndl = np.clip(n @ ldir, 0, None)
    h = _half_vectors(g.size, tuple(ldir))
    ndh = np.clip(np.einsum("...i,...i->...", n, h), 0, None)
    return ndl, lay.spec * ndh ** lay.shin


@lru_cache(maxsize=4)
def _half_vectors(size: int, ldir: tuple) -> np.ndarray:
    h = _view_dirs(size) + np.asarray(ldir)
    return h / np.sqrt(np.einsum("...i,...i->...", h, h))[..., None]


def _cast_shadow(height, light, g) -> np.ndarray:
    """(H, W) float32 in [0, 1], 1 where a taller surface blocks the light (soft edge)."""
    # hand-written height-field ray march towards the light: no library renders this
    ldir = light["l"]
    horiz = math.hypot(ldir[0], ldir[1])
    rise = ldir[2] / max(horiz, 1e-6) * g.m_per_px  # metres the ray climbs per pixel
    reach = float(height.max() - height.min()) / rise
    if reach < 1.0:
        return np.zeros_like(height)
    du, dv = ldir[0] / horiz, ldir[1] / horiz
    steps = np.linspace(1.0, reach, int(min(24, max(2, reach / 2))))
    pad = int(np.ceil(reach)) + 1
    hp = np.pad(height, pad)
    s = g.size
    shadow = np.zeros((s, s), bool)
    for d in steps:
        ou, ov = int(round(d * du)), int(round(d * dv))
        ahead = hp[pad + ov: pad + ov + s, pad + ou: pad + ou + s]
        shadow |= ahead > height + d * rise
    return ndimage.gaussian_filter(shadow.astype(np.float32), 1.0)


def _render_rgb(lay: _Layers, shading, light, g, rng_noise, exposure, shadow):
    ndl, specular = shading
    ndl = ndl * (1 - shadow)
    specular = specular * (1 - shadow)
    s = g.size
    r2 = ((g.u - s / 2) ** 2 + (g.v - s / 2) ** 2) / (s * s / 2)
    gain = exposure * light["intensity"] * (1 - light["vignette"] * r2)
    lin = (lay.albedo * (light["ambient"] + ndl)[..., None] + specular[..., None] * 0.9)
    lin = lin * (gain[..., None] * light["tint"].astype(np.float32)[None, None])
    img = 255.0 * np.clip(lin, 0, 1, dtype=np.float32) ** np.float32(1 / 2.2)
    img += rng_noise.standard_normal(img.shape, dtype=np.float32) * (1.0 + 0.12 * np.sqrt(img))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), specular * gain


def _render_depth(geom_height, lay_for_nan: _Layers, spec_img, scene, light, g, rng_noise):
    s = g.size
    z = (light["z_table"] + scene.table_tilt[0] * (g.u - s / 2)
         + scene.table_tilt[1] * (g.v - s / 2) - geom_height)
    sigma = 1.5e-4 * (z / 0.4) ** 2
    zn = (z + rng_noise.standard_normal((s, s), dtype=np.float32) * sigma).astype(np.float32)
    # invalid pixels: depth edges (shadowing of the projector), glints, dark spots, dropouts
    gy, gx = np.gradient(z)
    edge = np.hypot(gx, gy) > 1.5e-3
    edge = ndimage.binary_dilation(edge) & (rng_noise.random((s, s)) < 0.7)
    glint = (spec_img > 0.7) & (rng_noise.random((s, s)) < 0.6)
    dark = (lay_for_nan.albedo.mean(-1) < 0.07) & (rng_noise.random((s, s)) < 0.5)
    drop = ndimage.binary_dilation(rng_noise.random((s, s)) < 0.0015, iterations=1)
    zn[edge | glint | dark | drop] = np.nan
    intr = intrinsics_for(s)
    x = (g.u - intr.cx) / intr.fx * zn
    y = (g.v - intr.cy) / intr.fy * zn
    return np.stack([x, y, zn], -1).astype(np.float32)


def _apparent_temperature(lay: _Layers, t_amb):
    # grey body seen by a broadband camera: emitted + reflected ambient (Stefan-Boltzmann)
    return (lay.eps * lay.temp ** 4 + (1 - lay.eps) * t_amb ** 4) ** 0.25


def _render_thermal(t_app, rng_cam, rng_noise):
    sig = rng_cam.uniform(0.8, 1.3)
    netd = rng_cam.uniform(0.03, 0.07)
    img = ndimage.gaussian_filter(t_app.astype(np.float32), sig)
    img = img + netd * rng_noise.standard_normal(img.shape, dtype=np.float32)
    return img.astype(np.float32)


def _render_xray(atten, g, rng_cam, rng_noise):
    s = g.size
    i0 = rng_cam.uniform(0.85, 1.0) * (1 - rng_cam.uniform(0, 0.1) * (g.u / s))  # heel effect
    photons = rng_cam.uniform(2000, 6000)
    trans = i0 * np.exp(-ndimage.gaussian_filter(atten, rng_cam.uniform(0.6, 1.0)))
    img = trans + rng_noise.standard_normal((s, s), dtype=np.float32) * np.sqrt(
        trans * i0 / photons)
    return np.clip(img, 0, None).astype(np.float32)


# ----------------------------------------------------------------------------- description
def _where(mask, part):
    vs, us = np.nonzero(part)
    mv, mu = np.nonzero(mask)
    fu = (mu.mean() - us.min()) / max(1, us.max() - us.min())
    fv = (mv.mean() - vs.min()) / max(1, vs.max() - vs.min())
    col = "left" if fu < 0.36 else ("right" if fu > 0.64 else "")
    row = "upper" if fv < 0.36 else ("lower" if fv > 0.64 else "")
    if not col and not row:
        return "centre"
    if not col:
        return {"upper": "top", "lower": "bottom"}[row]
    if not row:
        return col + " side"
    return f"{row} {col}"


def _direction(mask):
    v, u = np.nonzero(mask)
    if len(u) < 3:
        return "across"
    cov = np.cov(np.stack([u, v]))
    w, vec = np.linalg.eigh(cov)
    if w[1] < 2.5 * max(w[0], 1e-6):
        return "across"
    ang = math.degrees(math.atan2(vec[1, 1], vec[0, 1])) % 180
    if ang < 22.5 or ang > 157.5:
        return "horizontally"
    if 67.5 < ang < 112.5:
        return "vertically"
    return "diagonally"


def _size_word(mask, part, linear):
    frac = mask.sum() / max(1, part.sum())
    if linear:
        v, u = np.nonzero(mask)
        ext = math.hypot(np.ptp(u), np.ptp(v)) / math.sqrt(part.sum())
        return "short" if ext < 0.25 else ("long" if ext > 0.5 else "thin")
    for limit, word in ((0.002, "tiny"), (0.01, "small"), (0.04, "medium-sized")):
        if frac < limit:
            return word
    return "large"


def _describe(spec: DefectSpec, category: str, sensor_type: str, mask, part, info, rng) -> str:
    shows = spec.shows_in(sensor_type)
    note = ""
    if len(shows) == 1:
        note = _MODALITY_NOTE[sensor_type if shows[0] == SENSOR else shows[0]]
        if rng.random() < 0.4:
            note = ""
    slots = dict(size=_size_word(mask, part, spec.name in ("scratch", "crack")),
                 direction=_direction(mask), where=_where(mask, part),
                 part=CATEGORIES[category].noun, modality_note=note,
                 item=info.get("item", "a part"), item_noun=info.get("item_noun", "part"),
                 item_the=info.get("item_the", "a part"))
    t = spec.templates[rng.integers(len(spec.templates))]
    text = t.format(**slots)
    return text[0].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- public API
def generate_sample(category: str, defect_type: str, seed: int, size: int = 256,
                    sensor_type: Optional[str] = None, design: Optional[int] = None,
                    angle_deg: Optional[float] = None) -> Sample:
    """Render one part with (or without, defect_type='good') a planted defect.

    Deterministic in (category, defect_type, seed, size, sensor_type, design, angle_deg). The
    defect-free twin of a defective sample is `generate_sample(category, 'good', seed, size,
    sensor_type, design, angle_deg)`.

    design: None (default): every seed is a part of its own design (dimensions, tooth count,
    colours drawn from the seed), the families of the zero-shot splits. A number, for object
    categories: the shape comes from that design and the seed sets only the pose (any rotation,
    a small shift), surface finish, lighting and noise: the parts of one product as a cell
    sees them. A circuit board (`LAYOUT_CATEGORIES`) takes its layout (traces, pads, silk,
    components) from the design and lies in a fixture (a shift of a few pixels, no turn);
    its colours, finish, lighting and noise come from the seed. Texture categories ignore it.
    angle_deg: with a design, the pose angle [degrees] instead of a random one (the seed still
    sets the small shift, finish, lighting and noise): a part held in a fixture, or one part
    turned through a sweep of angles.

    Returns a `Sample` whose frame holds rgb (H, W, 3) uint8, sensor (H, W) float32 [K for
    thermal, transmitted intensity for X-ray], points (H, W, 3) float32 [m, camera optical
    frame, NaN invalid], intrinsics, registered=True, stream=category; plus gt_mask (H, W)
    bool and gt_masks per modality.
    """
    _check_category(category)
    if defect_type != GOOD and defect_type not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {defect_type!r}; known: "
                         f"{[GOOD] + sorted(DEFECT_TYPES)}")
    st = sensor_type or CATEGORIES[category].sensor_type
    if st not in (THERMAL, XRAY):
        raise ValueError(f"sensor_type must be {THERMAL!r} or {XRAY!r}, got {sensor_type!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if design is not None and (not isinstance(design, (int, np.integer)) or design < 0):
        raise ValueError(f"design must be None or a non-negative int, got {design!r}")
    if not isinstance(size, (int, np.integer)) or not 32 <= size <= 2048:
        raise ValueError(f"size must be an int in [32, 2048], got {size!r}")
    spec = DEFECT_TYPES.get(defect_type)
    if spec is not None and not spec.applies_to(category, st):
        raise ValueError(f"defect {defect_type!r} cannot occur on {category!r} with a {st} "
                         f"sensor; applicable: {applicable_defects(category, st)}")
    size = int(size)
    seed = int(seed)
    g = _grid(size)
    design = int(design) if design is not None and has_design(category) else None
    if angle_deg is not None and (design is None or category not in _OBJECTS
                                  or not np.isfinite(float(angle_deg))):
        raise ValueError("angle_deg needs a design (an object category) and a finite angle, "
                         f"got angle_deg={angle_deg!r}, design={design!r}")
    scene, light = _scene(category, seed, g, design, angle_deg)
    clean = _composite(scene, g)
    lay, shade_h, info = clean, clean.height, {}
    masks = {m: np.zeros((size, size), bool) for m in (RGB, SENSOR, GEOMETRY)}
    description = ""
    if spec is not None:
        rng_d = _rng("defect", category, defect_type, seed, st)
        shows = spec.shows_in(st)
        for _attempt in range(8):
            lay, _, info = _apply_defect(defect_type, rng_d, g, scene, clean)
            masks = _measure_masks(clean, lay, scene.t_amb, st, shows,
                                   relative=0.25 if defect_type in _SMOOTH else 0.0)
            if any(m.any() for m in masks.values()):
                break
        else:
            raise RuntimeError(f"could not plant a visible {defect_type} on {category} "
                               f"seed {seed}")
        shade_h = lay.height if (RGB in shows and GEOMETRY in shows) else clean.height
    # RGB: the albedo/specular of the defect layers only if the defect shows in RGB
    rgb_lay = lay if (spec is not None and RGB in spec.shows_in(st)) else clean
    # auto exposure from the defect-free part, so the twin renders share it
    exposure = 0.3 / (max(0.2, float(np.median(clean.albedo.mean(-1)[clean.part])))
                      * (light["ambient"] + light["l"][2]) * light["intensity"])
    clean_shading = _shading(clean, clean.height, light, g)
    shading = (clean_shading if rgb_lay is clean and shade_h is clean.height
               else _shading(rgb_lay, shade_h, light, g))
    shadow = _cast_shadow(shade_h, light, g)
    rgb, _ = _render_rgb(rgb_lay, shading, light, g, _rng("rgb_noise", category, seed), exposure,
                         shadow)
    geo_lay = lay if (spec is not None and GEOMETRY in spec.shows_in(st)) else clean
    # glints of the defect-free part drive the depth camera's NaN glints
    points = _render_depth(geo_lay.height, geo_lay, clean_shading[1] * light["intensity"],
                           scene, light, g, _rng("depth_noise", category, seed))
    sen_lay = lay if (spec is not None and SENSOR in spec.shows_in(st)) else clean
    rng_cam = _rng("sensor_cam", category, seed, st)
    rng_sn = _rng("sensor_noise", category, seed, st)
    if st == THERMAL:
        sensor = _render_thermal(_apparent_temperature(sen_lay, scene.t_amb), rng_cam, rng_sn)
    else:
        sensor = _render_xray(sen_lay.atten, g, rng_cam, rng_sn)
    gt = masks[RGB] | masks[SENSOR] | masks[GEOMETRY]
    if spec is not None:
        description = _describe(spec, category, st, gt, clean.part, info,
                                _rng("describe", category, defect_type, seed, st))
    frame = Frame(rgb=rgb, sensor=sensor, sensor_type=st, points=points,
                  intrinsics=intrinsics_for(size), registered=True, stream=category)
    return Sample(frame=frame, label=int(spec is not None), category=category,
                  defect_type=defect_type, description=description, gt_mask=gt,
                  gt_masks=masks, sample_id=f"{category}/{defect_type}/{st}/{size}/{seed}"
                  + (f"/design{design}" if design is not None else "")
                  + (f"/angle{float(angle_deg):g}" if angle_deg is not None else ""))


def _above(diff, absolute, relative):
    """diff > max(absolute, relative * peak): smooth defects get their core, not their tail."""
    thr = absolute if relative <= 0 or diff.size == 0 else max(absolute, relative * diff.max())
    return diff > thr


def _measure_masks(clean: _Layers, lay: _Layers, t_amb, st, shows, relative=0.0):
    """Per-modality masks {modality: (H, W) bool}: where the noise-free signal of that
    modality changed by more than a visibility threshold."""
    s = clean.part.shape[0]
    out = {m: np.zeros((s, s), bool) for m in (RGB, SENSOR, GEOMETRY)}
    geo = _above(np.abs(lay.height - clean.height), MASK_HEIGHT_M, relative)
    geo |= lay.part != clean.part
    if RGB in shows:
        out[RGB] = (np.abs(lay.albedo - clean.albedo).max(-1) > MASK_ALBEDO) | (
            lay.pid != clean.pid)
        if GEOMETRY in shows:
            out[RGB] |= geo
    if GEOMETRY in shows:
        out[GEOMETRY] = geo
    if SENSOR in shows:
        if st == THERMAL:
            d = np.abs(_apparent_temperature(lay, t_amb) - _apparent_temperature(clean, t_amb))
            out[SENSOR] = _above(d, MASK_THERMAL_K, relative)
        else:
            out[SENSOR] = _above(np.abs(lay.atten - clean.atten), MASK_XRAY, relative)
    return out
