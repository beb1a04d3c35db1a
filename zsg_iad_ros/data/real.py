"""Loaders for the real development samples in `<data root>/` (see its README.md).

Data root: `$ZSG_REAL_DATA`, else `<repository>/../shared/data/real`.

**MulSen-AD** (`mulsen_ad_processed/`, Li et al., CVPR 2025, CC BY 4.0): RGB + infrared
thermography + 3D scan, one folder per part, `<category>/test/<defect_type>/<id>/`.
* `frame.rgb`: rgb.png (256x256x3 uint8).
* `frame.sensor`: ir.png as float32 grey values 0..255 (intensity-normalised lock-in
  thermography, not kelvin); `sensor_type='thermal'`.
* `frame.points`: organized (256, 256, 3) float32 built from the top-down height map
  pc_depth.png. The projection is normalised, so the metric scale is nominal:
  orthographic, `MULSEN_PIXEL_PITCH_M` metres per pixel, 8-bit value v -> height
  v / 255 * `MULSEN_HEIGHT_RANGE_M`, z = `MULSEN_STANDOFF_M` - height (z away from a viewer
  above the part). The projection fills the whole grid, so every point is valid.
  `frame.cloud_frame_id='scan_frame'`, no intrinsics.
* `frame.extra_maps`: 'pc_curvature' (`frame.SCAN_CURVATURE`, which the geometry modality
  reads) and 'pc_normal_deviation' as float32 0..1 (8-bit value / 255) on the scan grid.
* `frame.registered=False`: the three modalities are not pixel-aligned.
* `gt_mask`: gt_mask.png in the RGB frame (bool). A defective part without an RGB mask (its
  defect shows only in the infrared or the scan) gets `gt_mask=None`, so pixel metrics skip
  it; good parts get an all-False mask. `gt_masks={'rgb': gt_mask}` when a mask exists.
* `label`: 0 for the `good` folder, 1 otherwise; `defect_type` = folder name.

**Magnetic tile** (`magnetic_tile/`, Huang, Qiu, Yuan, The Visual Computer 2020; cite when
shown): grayscale ROI crops of varying size. Each image is resized to 256x256 (bilinear,
aspect ratio not kept), the mask with nearest neighbour; `rgb` repeats the grey channel,
no sensor, no geometry. Classes MT_Blowhole, MT_Crack, MT_Fray -> defect types blowhole,
crack, fray; MT_Free -> good.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, List, Optional, Union

import numpy as np
from PIL import Image

from ..core.frame import RGB, THERMAL, Frame, Sample

__all__ = ["real_data_root", "load_mulsen", "load_magnetic_tile", "MULSEN_PIXEL_PITCH_M",
           "MULSEN_HEIGHT_RANGE_M", "MULSEN_STANDOFF_M", "MAGNETIC_TILE_SIZE"]

MULSEN_PIXEL_PITCH_M = 5.0e-4   # nominal: 256 px -> 128 mm
MULSEN_HEIGHT_RANGE_M = 0.05    # nominal: 8-bit range -> 50 mm
MULSEN_STANDOFF_M = 0.4
MAGNETIC_TILE_SIZE = 256
_MT_CLASSES = {"MT_Blowhole": "blowhole", "MT_Crack": "crack", "MT_Fray": "fray",
               "MT_Free": "good", "MT_Break": "break", "MT_Uneven": "uneven"}


def real_data_root() -> Path:
    env = os.environ.get("ZSG_REAL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


def _resolve(root, sub) -> Path:
    base = Path(root) if root is not None else real_data_root() / sub
    if not base.is_dir():
        raise FileNotFoundError(f"real data folder not found: {base} (set ZSG_REAL_DATA or "
                                f"pass root=)")
    return base


def _png(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert(mode))


def _height_map_points(depth_u8: np.ndarray) -> np.ndarray:
    h, w = depth_u8.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    height = depth_u8.astype(np.float32) / 255.0 * MULSEN_HEIGHT_RANGE_M
    x = (u - (w - 1) / 2) * MULSEN_PIXEL_PITCH_M
    y = (v - (h - 1) / 2) * MULSEN_PIXEL_PITCH_M
    return np.stack([x, y, MULSEN_STANDOFF_M - height], -1).astype(np.float32)


def _mulsen_sample(folder: Path, category: str, defect: str, sid: str) -> Sample:
    rgb = _png(folder / "rgb.png", "RGB")
    ir = _png(folder / "ir.png", "L").astype(np.float32)
    points = _height_map_points(_png(folder / "pc_depth.png", "L"))
    extra = {name: _png(folder / f"{name}.png", "L").astype(np.float32) / 255.0
             for name in ("pc_curvature", "pc_normal_deviation")
             if (folder / f"{name}.png").is_file()}
    label = int(defect != "good")
    mask_path = folder / "gt_mask.png"
    if mask_path.is_file():
        gt = _png(mask_path, "L") > 127
        if gt.shape != rgb.shape[:2]:
            raise ValueError(f"{mask_path}: mask {gt.shape} does not match rgb {rgb.shape}")
    elif label == 0:
        gt = np.zeros(rgb.shape[:2], bool)
    else:
        gt = None  # defect not visible in RGB: no pixel ground truth
    frame = Frame(rgb=rgb, sensor=ir, sensor_type=THERMAL, points=points, intrinsics=None,
                  cloud_frame_id="scan_frame", registered=False, stream=category,
                  extra_maps=extra)
    desc = "" if label == 0 else (f"{defect.replace('_', ' ')} on the "
                                  f"{category.replace('_', ' ')}")
    return Sample(frame=frame, label=label, category=category, defect_type=defect,
                  description=desc, gt_mask=gt, gt_masks={RGB: gt} if gt is not None else {},
                  sample_id=f"mulsen/{category}/{defect}/{sid}")


def load_mulsen(root: Union[str, Path, None] = None,
                categories: Optional[Iterable[str]] = None) -> List[Sample]:
    """All MulSen-AD parts under `root` (default: `<data root>/mulsen_ad_processed`), sorted
    by category, defect type and id; `categories` restricts the categories."""
    base = _resolve(root, "mulsen_ad_processed")
    cats = sorted(p.name for p in base.iterdir() if p.is_dir())
    if categories is not None:
        wanted = list(categories)
        unknown = sorted(set(wanted) - set(cats))
        if unknown:
            raise ValueError(f"unknown MulSen-AD categories {unknown}; present: {cats}")
        cats = [c for c in cats if c in wanted]
    out = []
    for cat in cats:
        for split_dir in sorted(p for p in (base / cat).iterdir() if p.is_dir()):
            for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                for part in sorted(p for p in defect_dir.iterdir() if p.is_dir()):
                    if not (part / "rgb.png").is_file():
                        continue
                    out.append(_mulsen_sample(part, cat, defect_dir.name, part.name))
    if not out:
        raise FileNotFoundError(f"no MulSen-AD parts found under {base}")
    return out


def load_magnetic_tile(root: Union[str, Path, None] = None) -> List[Sample]:
    """All magnetic-tile images under `root` (default: `<data root>/magnetic_tile`), resized to
    256x256, sorted by class and name."""
    base = _resolve(root, "magnetic_tile")
    rows = []
    manifest = base / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as f:
            rows = [(r["defect_class"], base / r["image"], base / r["mask"])
                    for r in csv.DictReader(f)]
    else:
        for cls_dir in sorted(p for p in (base / "images").iterdir() if p.is_dir()):
            for img in sorted(cls_dir.glob("*.jpg")):
                rows.append((cls_dir.name, img,
                             base / "ground_truth" / cls_dir.name / (img.stem + ".png")))
    rows.sort(key=lambda r: (r[0], r[1].name))
    out = []
    size = (MAGNETIC_TILE_SIZE, MAGNETIC_TILE_SIZE)
    for cls, img_path, mask_path in rows:
        defect = _MT_CLASSES.get(cls, cls.lower().removeprefix("mt_"))
        with Image.open(img_path) as im:
            grey = np.array(im.convert("L").resize(size, Image.BILINEAR))
        if mask_path.is_file():
            with Image.open(mask_path) as im:
                mask = np.array(im.convert("L").resize(size, Image.NEAREST)) > 127
        elif defect == "good":
            mask = np.zeros(size, bool)
        else:
            raise FileNotFoundError(f"mask missing for {img_path}: {mask_path}")
        label = int(defect != "good")
        frame = Frame(rgb=np.repeat(grey[..., None], 3, -1), sensor=None, points=None,
                      registered=True, stream="magnetic_tile")
        out.append(Sample(frame=frame, label=label, category="magnetic_tile",
                          defect_type=defect,
                          description="" if not label else f"{defect} on the magnetic tile",
                          gt_mask=mask, gt_masks={RGB: mask},
                          sample_id=f"magnetic_tile/{cls}/{img_path.stem}"))
    if not out:
        raise FileNotFoundError(f"no magnetic-tile images found under {base}")
    return out
