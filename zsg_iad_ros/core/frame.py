"""Data types shared by the whole core: what goes into the detector and what comes out.

No ROS here. The ROS adapter converts messages into a `Frame` and a `Detection` back into
messages; the data generator, the real-sample loaders and the bag reader produce `Sample`s
(a `Frame` plus ground truth).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

#: Modality names, used as keys everywhere (scores, maps, masks, messages, reports).
RGB = "rgb"
SENSOR = "sensor"
GEOMETRY = "geometry"
MODALITIES = (RGB, SENSOR, GEOMETRY)

#: Second-sensor kinds. A real cell has one or the other.
THERMAL = "thermal"
XRAY = "xray"
SENSOR_TYPES = (THERMAL, XRAY)

#: `Frame.extra_maps` key of a scanner's own surface curvature (see `Frame.extra_maps`).
SCAN_CURVATURE = "pc_curvature"


@dataclass
class CameraIntrinsics:
    """Pinhole model of the RGB camera; the depth cloud is expressed in its optical frame."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def as_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass
class Frame:
    """One part as seen by the cell at one instant.

    rgb:      (H, W, 3) uint8, RGB order.
    sensor:   (H, W) float32 raw sensor values (thermal: temperature-like, X-ray: transmitted
              intensity); `None` when the modality is missing.
    points:   organized (H, W, 3) float32 in the cloud frame (metres, NaN where invalid), or
              unorganized (N, 3); `None` when missing.
    intrinsics: camera model used to project an unorganized cloud onto the RGB grid.
    registered: True when the three modalities are pixel-aligned with the RGB image. When
              False (e.g. MulSen-AD), maps are only compared within their own modality and only
              the RGB map is reported at pixel level.
    stream:   key of the production stream (part type / line); memory and calibration are kept
              per stream.
    """

    rgb: Optional[np.ndarray]
    sensor: Optional[np.ndarray] = None
    sensor_type: str = THERMAL
    points: Optional[np.ndarray] = None
    intrinsics: Optional[CameraIntrinsics] = None
    stamp_ns: int = 0
    frame_id: str = "camera_optical_frame"
    cloud_frame_id: str = "camera_optical_frame"
    registered: bool = True
    stream: str = "default"
    #: Further per-pixel maps from the source, by name (e.g. MulSen-AD 'pc_curvature' and
    #: 'pc_normal_deviation', float32 on the scan grid); empty for most sources. Under
    #: SCAN_CURVATURE, curvature in [0, 1] as the scanner computed it on its full-resolution
    #: mesh: the geometry modality then reads it instead of the maps it derives from `points`
    #: (a projected scan loses the curvature of faces seen edge-on; docs/DETECTOR.md).
    extra_maps: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def present(self) -> Dict[str, bool]:
        return {RGB: self.rgb is not None, SENSOR: self.sensor is not None,
                GEOMETRY: self.points is not None}

    @property
    def shape(self) -> tuple:
        """(H, W) of the RGB grid (or of the first present modality)."""
        if self.rgb is not None:
            return tuple(self.rgb.shape[:2])
        if self.sensor is not None:
            return tuple(self.sensor.shape[:2])
        if self.points is not None and self.points.ndim == 3:
            return tuple(self.points.shape[:2])
        if self.intrinsics is not None:
            return (self.intrinsics.height, self.intrinsics.width)
        raise ValueError("frame has no modality with a known image size")


@dataclass
class Sample:
    """A `Frame` with ground truth, from the generator, a real-data loader or a bag.

    gt_mask:  (H, W) bool in the RGB frame: union of the defect over all modalities (all False
              for a good part). `None` where the dataset has no pixel ground truth.
    gt_masks: per-modality masks where known ({'rgb': ..., 'sensor': ..., 'geometry': ...}).
    """

    frame: Frame
    label: int  # 0 good, 1 defective
    category: str
    defect_type: str = "good"
    description: str = ""
    gt_mask: Optional[np.ndarray] = None
    gt_masks: Dict[str, np.ndarray] = field(default_factory=dict)
    sample_id: str = ""


@dataclass
class DefectRegion:
    """One connected defect region of the predicted mask."""

    defect_type: str
    confidence: float  # [0, 1]
    bbox_xywh: tuple  # (x, y, w, h) in RGB pixels
    area_px: int
    centroid_px: tuple  # (u, v) in RGB pixels
    centroid_3d: Optional[tuple] = None  # (x, y, z) metres in the cloud frame, None without depth
    modalities: List[str] = field(default_factory=list)  # modalities whose evidence supports it
    severity: str = "minor"  # minor | major | critical


@dataclass
class Hypothesis:
    """A describing sentence and how well the evidence matches it (grounding hop one)."""

    sentence: str
    defect_type: str
    similarity: float
    slot: int


@dataclass
class Detection:
    """Everything the detector says about one frame.

    anomaly_map: (H, W) float32 in [0, 1] on the RGB grid.
    pred_mask:   (H, W) bool, anomaly_map thresholded and cleaned.
    pred_score:  image-level score in [0, 1]; anomalous when pred_score >= threshold.
    """

    anomaly_map: np.ndarray
    pred_mask: np.ndarray
    pred_score: float
    threshold: float
    modality_scores: Dict[str, float]
    modalities_present: Dict[str, bool]
    regions: List[DefectRegion] = field(default_factory=list)
    hypotheses: List[Hypothesis] = field(default_factory=list)
    modality_maps: Dict[str, np.ndarray] = field(default_factory=dict)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    model_id: str = ""
    report: Optional[dict] = None
    rule_results: List[dict] = field(default_factory=list)
    #: False when the detector lacks the evidence to decide (no usable modality, or a cold start
    #: with neither references nor stream memory); the report's status is then "unknown".
    confident: bool = True
    #: True when this detection revises the not-confident one made earlier of the same frame:
    #: the part was held through its stream's warm-up and scored again once the stream's
    #: history calibrated it (`Detector.revise_held`).
    revision: bool = False

    @property
    def is_anomalous(self) -> bool:
        return self.pred_score >= self.threshold

    @property
    def missing_modalities(self) -> List[str]:
        return [m for m in MODALITIES if not self.modalities_present.get(m, False)]
