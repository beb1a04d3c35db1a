"""Reference maps that know nothing about defects, scored like the detector's maps.

`content_free_metrics` scores the content-free map: the RGB image in grey, Gaussian-blurred
and scaled to [0, 1] per image. It says where the part is and how bright it is, nothing about
defects, so a pixel metric it scores well on measures the setting more than the detector. Its
image score is the frame's mean grey level: an image AUROC far from 0.5 says that good and
defective parts were captured under different light or exposure (or that a defect type makes
the whole frame brighter or darker), which any detector that sees absolute brightness can
score without seeing a defect. Both are printed beside the detector's figures in the same run.
"""
from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np
from scipy import ndimage

from zsg_iad_ros.evaluation import metrics as M
from zsg_iad_ros.evaluation.foreground import part_foreground

#: Blur of the content-free map [pixels of the full-resolution image].
CONTENT_FREE_SIGMA = 4.0
#: Polarities tried: "bright" scores bright pixels as anomalous, "dark" dark ones.
POLARITIES = ("bright", "dark")


def content_free_map(rgb: np.ndarray, sigma: float = CONTENT_FREE_SIGMA,
                     polarity: str = "bright") -> np.ndarray:
    """(H, W) float32 in [0, 1]: grey of `rgb` (H, W, 3) uint8 (or (H, W)), blurred with a
    Gaussian of `sigma` pixels, min-max scaled per image; inverted for polarity "dark"."""
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    img = np.asarray(rgb, dtype=np.float32)
    grey = img.mean(axis=-1) if img.ndim == 3 else img
    grey = ndimage.gaussian_filter(grey, sigma)
    lo, hi = float(grey.min()), float(grey.max())
    out = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
    return (out if polarity == "bright" else 1.0 - out).astype(np.float32)


def frame_brightness(rgb: np.ndarray) -> float:
    """Mean grey level of a frame (H, W, 3) or (H, W): the content-free map's image score."""
    img = np.asarray(rgb, dtype=np.float32)
    return float(img.mean())


def _image_metrics(items: List[tuple]) -> Dict[str, object]:
    """Image AUROC of the frames' brightness (label, brightness) in the polarity that flatters
    it, named beside it."""
    labels = [y for y, _ in items]
    per_pol = {"bright": M.image_auroc(labels, [b for _, b in items]),
               "dark": M.image_auroc(labels, [-b for _, b in items])}
    pol = max(POLARITIES, key=lambda p: -np.inf if np.isnan(float(per_pol[p]))
              else float(per_pol[p]))
    return {"image_auroc": per_pol[pol], "image_polarity": pol}


def _levels(samples: Iterable, image: str) -> Dict[str, List[tuple]]:
    """category -> [(label, frame_brightness)] of every sample whose frame has `image`
    ("rgb" or "sensor")."""
    out: Dict[str, List[tuple]] = {}
    for sample in samples:
        img = getattr(sample.frame, image)
        if img is not None:
            out.setdefault(sample.category, []).append((int(sample.label), frame_brightness(img)))
    return out


def sensor_brightness_metrics(samples: Iterable) -> Dict[str, object]:
    """The same image score on the thermal / X-ray image: {"image_auroc", "image_polarity",
    "per_category": {category: the same}} over every sample with a sensor image, or {} where
    none has one. A sensor's level follows the part's pose and the capture as well as its
    defects, so this says how far the sensor's overall level alone tells the labels apart."""
    levels = _levels(samples, "sensor")
    if not levels:
        return {}
    return {**_image_metrics([x for items in levels.values() for x in items]),
            "per_category": {c: _image_metrics(items) for c, items in sorted(levels.items())}}


def real_data_baselines(samples: Iterable, pixel_stride: int = 1) -> Dict[str, dict]:
    """{name: metrics} of the content-free baselines of a real-data run, for
    `record["baselines"]`: the content-free map, and the sensor image's brightness where the
    parts have one."""
    samples = list(samples)  # read by both
    out = {"content-free map": content_free_metrics(samples, pixel_stride)}
    sensor = sensor_brightness_metrics(samples)
    if sensor:
        out["thermal / X-ray brightness"] = sensor
    return out


def _scores(gts, maps, fgs) -> Dict[str, M.Metric]:
    return {"pixel_auroc": M.pixel_auroc(gts, maps), "aupro": M.aupro(gts, maps),
            "pixel_auroc_fg": M.pixel_auroc(gts, maps, fgs),
            "aupro_fg": M.aupro(gts, maps, foregrounds=fgs)}


def _better(per_pol: Dict[str, Dict[str, M.Metric]], key: str) -> str:
    """The polarity with the higher `key` (NaN counts lowest; "bright" on a tie)."""
    def value(p):
        v = float(per_pol[p][key])
        return -np.inf if np.isnan(v) else v
    return max(POLARITIES, key=value)


def _metrics_of(items: List[tuple]) -> Dict[str, object]:
    gts = [g for g, _, _ in items]
    fgs = [f for _, _, f in items]
    per_pol = {p: _scores(gts, [m[p] for _, m, _ in items], fgs) for p in POLARITIES}
    whole, inside = _better(per_pol, "pixel_auroc"), _better(per_pol, "pixel_auroc_fg")
    return {
        "n_pixel_gt": len(items),
        # Each view gets the polarity that flatters the baseline most, named beside it: a
        # detector has to beat the stronger of the two.
        "pixel_auroc": per_pol[whole]["pixel_auroc"], "aupro": per_pol[whole]["aupro"],
        "polarity": whole,
        "pixel_auroc_fg": per_pol[inside]["pixel_auroc_fg"],
        "aupro_fg": per_pol[inside]["aupro_fg"], "polarity_fg": inside,
        "fg_defect_coverage": (M.foreground_coverage(gts, fgs) if items
                               else M.Metric.nan("no sample with pixel ground truth")),
        "per_polarity": per_pol,
    }


def content_free_metrics(samples: Iterable, pixel_stride: int = 1,
                         sigma: float = CONTENT_FREE_SIGMA, per_category: bool = True
                         ) -> Dict[str, object]:
    """Pixel metrics of the content-free map over `samples` (core `Sample`s with
    `frame.rgb`; those without `gt_mask` or RGB are skipped, like in the evaluation).

    Maps, ground truth and foregrounds are subsampled by `pixel_stride` as the offline
    evaluation does. Returns {"n_pixel_gt", "pixel_auroc", "aupro", "polarity",
    "pixel_auroc_fg", "aupro_fg", "polarity_fg", "fg_defect_coverage", "per_polarity":
    {"bright": {...}, "dark": {...}}, "image_auroc", "image_polarity"} with `Metric` values
    (whole-image figures for the polarity with the better whole-image pixel AUROC, foreground
    figures for the one with the better foreground pixel AUROC; the image AUROC of the frames'
    brightness, `frame_brightness`, over every sample with RGB, in its better polarity), plus
    "per_category": {category: the same} when asked.
    """
    if pixel_stride < 1:
        raise ValueError("pixel_stride must be >= 1")
    s = slice(None, None, pixel_stride)
    samples = list(samples)  # read twice: pixel figures, then the frames' brightness
    by_cat: Dict[str, List[tuple]] = {}
    for sample in samples:
        rgb = sample.frame.rgb
        if sample.gt_mask is None or rgb is None:
            continue
        gt = np.asarray(sample.gt_mask, dtype=bool)
        if np.shape(rgb)[:2] != gt.shape:
            raise ValueError(f"sample {sample.sample_id!r}: rgb {np.shape(rgb)} does not match "
                             f"gt_mask {gt.shape}")
        maps = {p: content_free_map(rgb, sigma, p)[s, s] for p in POLARITIES}
        by_cat.setdefault(sample.category, []).append(
            (gt[s, s], maps, part_foreground(rgb)[s, s]))
    frames = _levels(samples, "rgb")
    out = {**_metrics_of([x for items in by_cat.values() for x in items]),
           **_image_metrics([x for items in frames.values() for x in items])}
    if per_category:
        out["per_category"] = {c: {**_metrics_of(by_cat.get(c, [])),
                                   **_image_metrics(frames[c])} for c in sorted(frames)}
    return out


def describe(metrics: Dict[str, object]) -> str:
    """One line, e.g. "px AUROC 0.995 (bright), AUPRO 0.974; inside the part 0.700 (dark),
    AUPRO 0.400; frame brightness image AUROC 0.839 (bright)"."""
    def f(v) -> str:
        v = float(v)
        return "n/a" if np.isnan(v) else f"{v:.3f}"
    return (f"px AUROC {f(metrics['pixel_auroc'])} ({metrics['polarity']}), AUPRO "
            f"{f(metrics['aupro'])}; inside the part {f(metrics['pixel_auroc_fg'])} "
            f"({metrics['polarity_fg']}), AUPRO {f(metrics['aupro_fg'])}; frame brightness "
            f"image AUROC {f(metrics['image_auroc'])} ({metrics['image_polarity']})")
