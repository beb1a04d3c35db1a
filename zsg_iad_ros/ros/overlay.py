"""Overlay image for viewers (RViz, Foxglove): anomaly map as red tint, mask outline in yellow."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def render_overlay(rgb: np.ndarray, anomaly_map: np.ndarray, pred_mask: np.ndarray,
                   alpha: float = 0.6) -> np.ndarray:
    """Blend an anomaly map and the outline of a mask onto an image.

    rgb: (H, W, 3) uint8; anomaly_map: (H, W) float in [0, 1]; pred_mask: (H, W) bool.
    Returns (H, W, 3) uint8.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    heat = np.clip(np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32)), 0.0, 1.0)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"anomaly map {heat.shape} does not match image {rgb.shape[:2]}")
    weight = (alpha * heat)[..., None]
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    out = rgb * (1.0 - weight) + red * weight
    mask = np.asarray(pred_mask, dtype=bool)
    outline = mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=0)
    out[outline] = (255.0, 255.0, 0.0)
    return np.clip(out, 0, 255).astype(np.uint8)
