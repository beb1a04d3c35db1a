"""Parameters of the inspection node: one table, declared once with descriptors.

Defaults here match `config/inspect.yaml`; docs/ROS.md lists the same table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


class ParamError(ValueError):
    """A parameter value the node refuses; the message says which and why."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = False
    range: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None
    dynamic_typing: bool = False  # any type reaches the node's own validation (ints for floats)

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description,
                                read_only=self.read_only, dynamic_typing=self.dynamic_typing)
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.range is not None:
            lo, hi = self.range
            if isinstance(self.default, int) and not isinstance(self.default, bool):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                             to_value=float(hi), step=0.0)]
        return d


INSPECTION_PARAMS = (
    # inputs
    ParamSpec("rgb_topic", "rgb/image_raw", "RGB image topic (rgb8 or bgr8)", True),
    ParamSpec("sensor_topic", "sensor/image_raw",
              "thermal or X-ray image topic (mono8, mono16, 16UC1, 32FC1, ...)", True),
    ParamSpec("depth_topic", "depth/points", "depth PointCloud2 topic (organized or not)", True),
    ParamSpec("camera_info_topic", "rgb/camera_info",
              "CameraInfo of the RGB camera, used to project unorganized clouds", True),
    ParamSpec("input_qos_reliability", "best_effort",
              "reliability of the input subscriptions; best_effort = sensor-data QoS", True,
              choices=("best_effort", "reliable")),
    ParamSpec("input_qos_depth", 5, "history depth of the input subscriptions [messages]", True,
              range=(1, 1000)),
    # synchronization
    ParamSpec("sync_backend", "auto",
              "approximate-time synchronizer: message_filters where installed (auto), or the "
              "package's builtin one", True, choices=("auto", "message_filters", "builtin")),
    ParamSpec("sync_slop_s", 0.05,
              "a set forms when its stamps spread strictly less than this [s]", True,
              range=(0.001, 10.0)),
    ParamSpec("sync_queue_size", 10, "messages kept per input while waiting for partners", True,
              range=(1, 1000)),
    ParamSpec("sync_drop_stale", False,
              "drop queued messages older than a set just formed instead of letting them wait "
              "for a late partner (off: message_filters' behaviour)", True),
    ParamSpec("queue_size", 2,
              "frames waiting for the worker; the oldest is dropped when full [frames]", True,
              range=(1, 100)),
    ParamSpec("allow_missing_modalities", True,
              "inspect a part without the thermal/X-ray image or cloud it still lacks "
              "missing_timeout_s after its RGB image, and report them missing for that part"),
    ParamSpec("missing_timeout_s", 2.0,
              "how long a part's RGB image waits for its other modalities [s]; time between "
              "parts does not count", range=(0.05, 3600.0)),
    ParamSpec("max_stamp_skew_s", 0.0,
              "drop inputs whose stamp is further than this from the node clock [s]; 0 = off "
              "(keep off when replaying recorded stamps)", range=(0.0, 1e6)),
    ParamSpec("registered", True,
              "inputs are pixel-aligned with the RGB image; then modalities of another "
              "resolution are refused", True),
    ParamSpec("default_frame_id", "camera_optical_frame",
              "frame id used when an input arrives with an empty one", True),
    # model
    ParamSpec("sensor_type", "thermal", "second sensor kind", True, choices=("thermal", "xray")),
    ParamSpec("device", "auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:N", True),
    ParamSpec("backbone", "auto",
              "feature backbone: auto (per modality: mobilenetv2 on RGB, patch statistics "
              "on sensor and geometry), mobilenetv2, efficientnet_lite0, "
              "dinov2_s_onnx, builtin, patchstats, or a transformers checkpoint id / local "
              "path; several joined by + are feature views of one image, each a fusion term",
              True),
    ParamSpec("grounding_weights", "",
              "grounding module weights (.safetensors); empty = the shipped default", True),
    ParamSpec("narrator_model", "",
              "vision-language narrator checkpoint (id or path); empty = off. Accepted "
              "narrations follow on inspection/report_narrated", True),
    ParamSpec("reference_path", "",
              "bag of known-good parts to teach before inspecting (up to 8 per stream, by "
              "ground-truth category) and, for target_miss_rate, known-defective parts (limit "
              "samples, up to 16 per stream); empty = none", True),
    ParamSpec("stream", "default",
              "production stream key (part type / line) at start; a std_msgs/String on "
              "inspection/stream switches it at runtime", True),
    ParamSpec("threshold", -1.0,
              "decision threshold on pred_score in [0, 1] (integer or float), or -1 = "
              "calibrated automatically for target_false_alarm_rate; settable at runtime, "
              "-1 returns to automatic", dynamic_typing=True),
    ParamSpec("target_false_alarm_rate", 0.05,
              "false alarm rate the automatic threshold aims at [fraction]", True,
              range=(0.0001, 0.4999)),
    ParamSpec("target_miss_rate", 0.0,
              "with limit samples in reference_path: lower each stream's threshold until at "
              "most this share of its known-defective parts would pass (never raised; the "
              "node logs the false-alarm rate that costs) [fraction]; 0 = off", True,
              range=(0.0, 0.99)),
    ParamSpec("fusion", "stouffer",
              "how modality scores combine: stouffer (sum / sqrt(n): noise of one modality "
              "averages out), max (a defect seen by one modality keeps its full score) or "
              "omnibus (the more significant of the two; with variation: true it also keeps "
              "the feature memory's and the variation model's scores apart)", True,
              choices=("stouffer", "max", "omnibus")),
    ParamSpec("revise_warm_up", True,
              "without references, a stream's first parts (its warm-up) are reported unknown "
              "before its history calibrates it; also score them again once it does and "
              "publish a revised report for each (same header, revision: true)", True),
    ParamSpec("memory_size", 16,
              "memory entries per stream: streamed normal parts plus taught references, each "
              "reference once per orientation [entries]", True, range=(1, 100000)),
    ParamSpec("min_region_area_px", 16, "smallest reported defect region [px]", True,
              range=(0, 10_000_000)),
    ParamSpec("score_margin", 0.0625,
              "image border left out of the part's score, per side [fraction of the image side];"
              " 0 where defects may lie at the very frame edge", True, range=(0.0, 0.49)),
    ParamSpec("variation", False,
              "compare each part in register with the taught references (variation model): for "
              "a stream of one product in any pose, with 2+ references; sees missing or shifted"
              " material that patch memory cannot; about 0.1-0.2 s more per part on 2 CPU cores",
              True),
    ParamSpec("variation_grid", 0,
              "side of the variation model's grid [px], or 0 (auto): 256 for parts in the pose "
              "all references lie in (a fixture: a board's small components show), else 128 "
              "(parts in any pose); 256 costs about 0.15 s more per part and 1.7x the teach "
              "time; set 128 to trade the small components for time (0 or 32..1024)",
              True, range=(0, 1024)),
    ParamSpec("intra_image", "auto",
              "also score each part against its own surface (each patch against the part's "
              "other patches), calibrated apart and fused with the memory's score: auto "
              "(untaught streams of surfaces, judged from their first parts), on, off",
              True, choices=("auto", "on", "off")),
    ParamSpec("symmetry", "auto",
              "also compare each part with itself turned by its own rotational symmetry (a "
              "gear by one tooth pitch) or, with a depth image, mirrored across its own axis "
              "(a capsule), calibrated apart and fused with each modality's score; needs no "
              "reference of the part's design: auto (pixel-registered streams whose parts are "
              "symmetric, judged from the references or the first parts), off; about "
              "0.03-0.1 s more per symmetric part on 2 CPU cores",
              True, choices=("auto", "off")),
    # outputs
    ParamSpec("publish_overlay", True, "publish inspection/overlay (rgb8)"),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics [s]", True,
              range=(0.05, 60.0)),
    ParamSpec("log_throttle_s", 5.0, "minimum interval between repeated warnings [s]",
              range=(0.0, 3600.0)),
)


def parse_threshold(value) -> Optional[float]:
    """The `threshold` parameter as a fixed threshold in [0, 1], or None for -1 (calibrated
    automatically). Integers are accepted (`ros2 param set ... threshold 1`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and value == -1:
        return None
    if ok and 0.0 <= value <= 1.0:
        return float(value)
    raise ParamError(f"threshold must be a number in [0, 1] or -1 (automatic), got {value!r}")


def detector_config_dict(p: dict) -> dict:
    """The `DetectorConfig` fields the node derives from its parameters (`p`: name -> value).
    One mapping for the node and for evaluations that must reproduce it offline."""
    return {
        "device": p["device"], "backbone": p["backbone"],
        "threshold": parse_threshold(p["threshold"]),
        "target_false_alarm_rate": p["target_false_alarm_rate"],
        "target_miss_rate": p["target_miss_rate"] or None,
        "fusion": p["fusion"],
        "memory_size": p["memory_size"],
        "revise_warm_up": p["revise_warm_up"],
        "min_region_area_px": p["min_region_area_px"],
        "score_margin": p["score_margin"],
        "variation": p["variation"],
        "variation_grid": p["variation_grid"],
        "intra_image": p["intra_image"],
        "symmetry": p["symmetry"],
        "grounding_weights": p["grounding_weights"] or None,
    }
