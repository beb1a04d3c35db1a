"""Detector: Frame -> Detection.

Stages (each timed): preprocess (modality images) -> geometry (cloud -> maps) -> features
(backbone) -> scoring (mutual scores against the stream's memory, calibration, fusion) ->
grounding (two-hop: slots selected by defect sentences, gated decoder) -> postprocess (mask,
regions, hypotheses, memory update) -> report (structured report + executable rules).
See docs/DETECTOR.md for the method.
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from . import brightness_specks, hue_specks
from . import scoring as sc
from .backbones import (BuiltinBackbone, ModelLoadError, chromaticity, load_backbone, rgb_image,
                        select_device, sensor_image, to_three_channels, WEIGHTS_DIR)
from .frame import (GEOMETRY, MODALITIES, RGB, SCAN_CURVATURE, SENSOR, SENSOR_TYPES,
                    DefectRegion, Detection, Frame, Hypothesis)
from .geometry import (centroid_3d, geometry_maps, has_valid_point, height_above_plane,
                       scan_curvature_image, surface_depth)
from .prompts import UNKNOWN_TYPE, sentence_bank, state_prompts, type_fits_evidence
from .registration import TEXTURE_THRESHOLD, as_hwc, texture_score

__all__ = ["ModelLoadError", "DetectorConfig", "Detector"]

GROUNDING_WEIGHTS = WEIGHTS_DIR / "grounding.safetensors"

#: Feature extractor per modality for backbone='auto', chosen by measurement on the development
#: data (table in docs/DETECTOR.md, "Features per modality"). A spec may join extractors by
#: VIEW (e.g. "mobilenetv2+patchstats"): feature views of one image, each with its own memory
#: and calibration and each a vote in the fusion, discounted by how much the views agree
#: (`_combine_views`); the first gives the modality's maps, the others only add their image
#: score. No default joins views: what RGB's patch-statistics view gained on the development
#: data came from the frames' brightness, a capture artefact (docs/DETECTOR.md).
MODALITY_BACKBONES = {RGB: "mobilenetv2", SENSOR: "patchstats", GEOMETRY: "patchstats"}
#: joins the extractors of a modality's feature views in a backbone spec; a further view's key
#: in the stream state is "<modality>+<extractor>"
VIEW = "+"
#: key of the height map (`GeometryMaps.height`) among a frame's modality images: not a
#: modality of its own, the geometry as the aligned comparison sees it
HEIGHT = "geometry:height"
#: suffix of a modality's own-image score in the stream state (`intra_image`)
INTRA = ":intra"
INTRA_MODES = ("auto", "on", "off")
#: suffix of a modality's self-comparison score in the stream state (`symmetry`)
SYM = ":sym"
SYMMETRY_MODES = ("auto", "off")
#: false-alarm rate whose calibrated level a mask pixel must reach (see _mask_threshold)
MASK_FALSE_ALARM_RATE = 0.01
#: region types said by the aligned comparison (the sentence bank's where it has one):
#: material the references have and the part lacks, at its outline (a piece broken off) or
#: enclosed by the part's material (a hole through it), and material the part has where they
#: have none
MISSING_TYPE, HOLE_TYPE, EXTRA_TYPE = "missing", "hole", "extra_part"
#: share of a region, and least number of its pixels, that missing (or extra) material must
#: cover for the region to be typed so. A region is drawn from the feature grid's coarser map:
#: a missing tooth of a 256-px gear covered 7-16 % of its region, one of the demo's 160-px
#: gear 11 of its 66 px; no pixel of a crack's or a bump's region (docs/DETECTOR.md, "Aligned
#: comparison")
MATERIAL_SHARE, MATERIAL_MIN_PX = 0.05, 4
#: type of a region that the height map compared in register finds higher than the
#: references' surface (a sunk region is no bump; a crack, a dent or a missing piece lie lower)
RAISED_TYPE = "bump"
#: type of a region that a part's hue specks (core/hue_specks.py) flag and that the height map
#: leaves level: matter on the surface, the sentence bank's contamination type
TINTED_TYPE = "stain"
#: parts of one stream held through its warm-up at most (`revise_warm_up`); an older one is
#: then let go unrevised (counted in `Detector.unrevised`): its earlier report stands
MAX_HELD_PARTS = 16


@dataclass
class DetectorConfig:
    #: feature extractor of every modality: 'auto' (per modality, MODALITY_BACKBONES) |
    #: 'mobilenetv2' | 'efficientnet_lite0' | 'dinov2_s_onnx' (ImageNet weights from packages) |
    #: 'builtin' | 'patchstats' | transformers hub id | local checkpoint dir; several joined by
    #: '+' (e.g. 'mobilenetv2+patchstats') are feature views of one image, each a fusion term
    backbone: str = "auto"
    #: per-modality overrides of `backbone`, e.g. {"sensor": "patchstats"}
    modality_backbones: Optional[Dict[str, str]] = None
    device: str = "auto"            # 'auto' | 'cpu' | 'cuda' | 'cuda:N'; fp16 on CUDA
    image_size: int = 256
    #: memory entries per stream and modality: streamed normal parts plus the taught references,
    #: each reference counted once per orientation (scoring time grows with this number)
    memory_size: int = 16
    threshold: Optional[float] = None  # fixed decision threshold on pred_score; None -> calibrated
    #: per part; 0.05 by default: a cell re-checks a flagged good part rather than ship a defect
    target_false_alarm_rate: float = 0.05
    #: the alternative operating point: with known-defective parts of a stream taught
    #: (`teach_defects`, the limit samples a cell keeps), its threshold is lowered until at
    #: most this share of such parts would pass (never raised). None: off
    target_miss_rate: Optional[float] = None
    min_region_area_px: int = 16
    modalities: tuple = ("rgb", "sensor", "geometry")
    #: fusion of the modalities' calibrated scores: 'stouffer' (sum / sqrt(n)) | 'max' |
    #: 'omnibus' (the more significant of the two, `scoring.fuse`; with the aligned comparison
    #: it sees the feature memory's and the variation model's scores of each modality apart)
    fusion: str = "stouffer"
    grounding: bool = True
    grounding_weights: Optional[str] = None  # None -> shipped file
    text_encoder: str = "minilm"    # 'minilm' | 'backbone' | local sentence-transformers dir
    #: parts of stream history before the stream's own statistics calibrate scores (until
    #: then an untaught stream's first memory parts do, scored against each other)
    min_history: int = 5
    #: hold the parts of an untaught stream's warm-up (scored not confident, before its history
    #: calibrates it) and score each again once the stream is calibrated, against the memory
    #: without its own entry: `revise_held` gives the revised detections (docs/DETECTOR.md,
    #: "Zero-shot scoring")
    revise_warm_up: bool = True
    #: fraction of memory parts averaged in mutual scoring (lowest per-part distances)
    mutual_fraction: float = 0.2
    #: rotated copies of each taught reference kept in memory (1 = none); parts that lie in any
    #: orientation then find their patches in the references; capped so that references x
    #: rotations <= max(memory_size, references)
    reference_rotations: int = 4
    #: weight of the grounding fine mask in the anomaly map (0 = scoring map only); None -> the
    #: weight chosen on the auxiliary validation category, recorded in the grounding weights,
    #: when every modality uses the built-in network it was chosen with, else 0
    grounding_weight: Optional[float] = None
    #: patches kept per memory part, chosen by greedy k-center (0 = all): scoring cost falls in
    #: proportion while rare normal patches stay represented
    memory_patches: int = 256
    #: border of the image (fraction of its side, each side) left out of the image-level score;
    #: pixel maps and masks still cover it. 0 where defects may lie at the very frame edge.
    score_margin: float = 0.0625
    #: a part enters the stream memory only while its fused calibrated score c (normal parts
    #: ~N(0, 1) per modality) stays below this: no more unusual than most normal parts
    memory_admit_below: float = 1.0
    #: also compare each part in register with the taught references (core/aligned.py): for a
    #: stream of one product in any pose (pixel-registered frames, 2+ references, not a
    #: texture); sees missing or shifted material that patch memory cannot. Off by default:
    #: on parts that differ in design from their references it adds noise (docs/DETECTOR.md)
    variation: bool = False
    #: side of the aligned comparison's model grid [px] (images are block-averaged to it), or 0:
    #: 256 for the parts that lie in the pose all references lie in (a fixture: small components
    #: of boards show at 256 px), else 128, which tolerates the interpolation of turned parts
    #: (256 made parts in any pose worse; docs/DETECTOR.md, "Model grid")
    variation_grid: int = 0
    #: also score each patch against the other patches of its own image (a defect stands out
    #: of its own surface, whatever the stream's other parts look like), calibrated apart and
    #: fused with the patch memory's score: 'auto' (untaught streams of surfaces: the median
    #: `texture_score` of the first `min_history` parts reaches TEXTURE_THRESHOLD; on
    #: structured parts it adds noise) | 'on' | 'off' (docs/DETECTOR.md, "Own-image score")
    intra_image: str = "auto"
    #: also compare each part with itself turned by its own rotational symmetry (a gear turned
    #: by one tooth pitch) or, given a height map, mirrored across its own axis (a capsule;
    #: core/symmetry.py), calibrated apart and fused with its modality's score like the
    #: own-image score: needs no reference of the part's design. 'auto': streams of
    #: pixel-registered frames whose parts are symmetric (most of the taught references, else
    #: of the first `min_history` parts) | 'off' (docs/DETECTOR.md, "Self-comparison")
    symmetry: str = "auto"

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        """Build from a dict (e.g. ROS parameters): None values are ignored (defaults kept),
        unknown keys are refused with a clear error."""
        if d is None:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown detector config key(s) {unknown}; known: {sorted(names)}")
        kw = {k: v for k, v in d.items() if v is not None}
        if "modalities" in kw:
            kw["modalities"] = tuple(kw["modalities"])
        if "modality_backbones" in kw:
            kw["modality_backbones"] = dict(kw["modality_backbones"])
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got "
                             f"{self.modalities}")
        bad = sorted(set(self.modality_backbones or {}) - set(MODALITIES))
        if bad:
            raise ValueError(f"modality_backbones keys must be in {MODALITIES}, got {bad}")
        if not 32 <= int(self.image_size) <= 1024:
            raise ValueError(f"image_size must be in [32, 1024], got {self.image_size}")
        if self.intra_image not in INTRA_MODES:
            raise ValueError(f"intra_image must be one of {INTRA_MODES}, got "
                             f"{self.intra_image!r}")
        if self.symmetry not in SYMMETRY_MODES:
            raise ValueError(f"symmetry must be one of {SYMMETRY_MODES}, got {self.symmetry!r}")
        if self.fusion not in sc.FUSIONS:
            raise ValueError(f"fusion must be one of {sc.FUSIONS}, got {self.fusion!r}")
        if int(self.reference_rotations) < 1:
            raise ValueError("reference_rotations must be >= 1")
        if int(self.memory_size) < 1:
            raise ValueError(f"memory_size must be >= 1, got {self.memory_size}")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1] or None, got {self.threshold}")
        if not 0.0 < float(self.target_false_alarm_rate) < 0.5:
            raise ValueError("target_false_alarm_rate must be in (0, 0.5)")
        if self.target_miss_rate is not None and not 0.0 < float(self.target_miss_rate) < 1.0:
            raise ValueError(f"target_miss_rate must be in (0, 1) or None, got "
                             f"{self.target_miss_rate}")
        if self.grounding_weight is not None and not 0.0 <= float(self.grounding_weight) <= 1.0:
            raise ValueError("grounding_weight must be in [0, 1]")
        if int(self.memory_patches) < 0:
            raise ValueError(f"memory_patches must be >= 0, got {self.memory_patches}")
        if int(self.variation_grid) != 0 and not 32 <= int(self.variation_grid) <= 1024:
            raise ValueError(f"variation_grid must be 0 (auto) or in [32, 1024], got "
                             f"{self.variation_grid}")
        if not 0.0 <= float(self.score_margin) < 0.5:
            raise ValueError(f"score_margin must be in [0, 0.5), got {self.score_margin}")


_TEXT_CACHE: Dict[tuple, object] = {}


def _sentence_encoder(spec: str, device, backbone):
    from .text import SentenceEncoder

    if spec == "backbone":
        return SentenceEncoder("backbone", device, backbone)
    key = (spec, str(device))
    if key not in _TEXT_CACHE:  # the encoder is read-only: one per process is enough
        _TEXT_CACHE[key] = SentenceEncoder(spec, device)
    return _TEXT_CACHE[key]


class Detector:
    """Zero-shot grounded multimodal anomaly detector. Keeps, per stream, a rolling memory of
    recent normal parts per modality, the history of their scores and the taught references."""

    def __init__(self, config: Optional[DetectorConfig] = None):
        self.config = config or DetectorConfig()
        self.config.validate()
        self.device = select_device(self.config.device)
        self.backbones = self._load_backbones()
        #: modality -> the keys of its further feature views (VIEW in its backbone spec)
        self.views: Dict[str, List[str]] = {}
        for key in self.backbones:
            if key not in MODALITIES:
                self.views.setdefault(_modality(key), []).append(key)
        # the RGB modality's extractor (language scores and text tower come from it)
        self.backbone = self.backbones.get(RGB) or next(iter(self.backbones.values()))
        ids = {m: b.model_id for m, b in self.backbones.items()}
        self.model_id = (next(iter(ids.values())) if len(set(ids.values())) == 1
                         else ",".join(f"{m}:{i}" for m, i in ids.items()))
        self._threshold_override: Optional[float] = None
        self._force_calibrated = False
        self._streams: Dict[str, Dict[str, sc.ModalityState]] = {}
        self._aligned: Dict[str, object] = {}  # stream -> aligned.AlignedStream
        self._comparison_thread: Optional[ThreadPoolExecutor] = None  # `_comparison_worker`
        #: stream -> pred_scores of its taught known-defective parts (`teach_defects`)
        self._limit_scores: Dict[str, List[float]] = {}
        #: per stream, 'auto' own-image scoring: the texture scores seen so far, then the
        #: decision (whether the stream is a surface)
        self._surface: Dict[str, object] = {}
        #: per stream, 'auto' self-comparison: whether each part seen so far is symmetric
        #: (turned or mirrored), then the decision (whether the stream's parts are)
        self._symmetric: Dict[str, object] = {}
        #: per taught stream with `variation` on: "on", or why the aligned comparison is off
        self.variation_status: Dict[str, str] = {}
        #: per stream, the parts of its warm-up awaiting revision: (frame, memory entries they
        #: added, key -> entry), oldest first (`revise_warm_up`)
        self._held: Dict[str, List[tuple]] = {}
        #: per stream, held parts let go without a revision (hold full, stream reset, or their
        #: second scoring failed)
        self.unrevised: Dict[str, int] = {}
        self._language = None
        if self.backbone.has_text and RGB in self.backbones:
            normal, anomalous = state_prompts("object")
            self._language = (self.backbone.encode_text(normal),
                              self.backbone.encode_text(anomalous))
        self.grounding = None
        if self.config.grounding:
            from .grounding import NORMAL_SENTENCES, load_grounding

            path = Path(self.config.grounding_weights or GROUNDING_WEIGHTS).expanduser()
            self.grounding, self.grounding_meta = load_grounding(path, self.device)
            self.text = _sentence_encoder(self.config.text_encoder, self.device, self.backbone)
            if self.text.dim != self.grounding.text_dim:
                raise ModelLoadError(
                    f"grounding weights {path} expect {self.grounding.text_dim}-d sentences but "
                    f"text encoder {self.config.text_encoder!r} gives {self.text.dim}-d")
            self.sentences, self.sentence_types = sentence_bank()
            self._defect_text = self.text.encode(self.sentences)
            self._normal_text = self.text.encode(NORMAL_SENTENCES)
            self.model_id += f"+grounding:{path.name}"
            self._grounding_weight = self.config.grounding_weight
            if self._grounding_weight is None:
                self._grounding_weight = self._default_grounding_weight()

    def _default_grounding_weight(self) -> float:
        """The blend weight recorded with the grounding weights, chosen on a held-out auxiliary
        category with the built-in network's maps, where every modality uses that network;
        0 (the calibrated score map alone) otherwise: on the real data sets the fine mask,
        blended into maps of other features, lowered pixel AUROC (docs/DETECTOR.md,
        "Two-hop grounding")."""
        if not all(isinstance(b, BuiltinBackbone) for b in self.backbones.values()):
            return 0.0
        import json
        cfg = json.loads(self.grounding_meta.get("config", "{}"))
        return float(cfg.get("grounding_weight", 0.5))

    def _load_backbones(self) -> dict:
        """{modality: backbone} for the configured modalities, and {"<modality>+<spec>":
        backbone} for each further feature view; one instance per distinct spec."""
        specs = {}
        for m in self.config.modalities:
            spec = (self.config.modality_backbones or {}).get(m, self.config.backbone)
            spec = MODALITY_BACKBONES[m] if spec == "auto" else spec
            # a local checkpoint whose path holds a '+' is one extractor
            parts = [spec] if Path(spec).expanduser().exists() else spec.split(VIEW)
            if not all(parts) or len(set(parts)) != len(parts):
                raise ValueError(f"backbone of {m!r}: {spec!r} joins empty or repeated "
                                 f"extractors with {VIEW!r}")
            specs[m] = parts[0]
            for extra in parts[1:]:
                specs[m + VIEW + extra] = extra
        loaded: dict = {}
        for spec in dict.fromkeys(specs.values()):
            loaded[spec] = load_backbone(spec, self.device)
        return {m: loaded[spec] for m, spec in specs.items()}

    # ---------------------------------------------------------------------------------------
    # public API
    # ---------------------------------------------------------------------------------------
    def set_threshold(self, value: Optional[float], *, calibrated: bool = False) -> None:
        """Fix the decision threshold on pred_score (in [0, 1]); None -> back to config /
        calibrated, or always to the calibrated one with `calibrated=True`."""
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1] or None, got {value}")
        self._threshold_override = None if value is None else float(value)
        self._force_calibrated = value is None and calibrated

    def reset(self, stream: Optional[str] = None) -> None:
        """Forget memory, history and taught references of one stream (or of all)."""
        for name in (list(self._held) if stream is None else [stream]):
            dropped = len(self._held.pop(name, []))
            if dropped:
                self.unrevised[name] = self.unrevised.get(name, 0) + dropped
        if stream is None:
            self._streams.clear()
            self._aligned.clear()
            self.variation_status.clear()
            self._limit_scores.clear()
            self._surface.clear()
            self._symmetric.clear()
        else:
            self._streams.pop(stream, None)
            self._aligned.pop(stream, None)
            self.variation_status.pop(stream, None)
            self._limit_scores.pop(stream, None)
            self._surface.pop(stream, None)
            self._symmetric.pop(stream, None)

    def threshold_for(self, stream: str = "default") -> float:
        """Decision threshold on pred_score: fixed (set_threshold / config), else calibrated
        for target_false_alarm_rate, lowered for target_miss_rate where the stream has taught
        limit samples (`operating_point`)."""
        if self._threshold_override is not None:
            return self._threshold_override
        if self.config.threshold is not None and not self._force_calibrated:
            return float(self.config.threshold)
        return self.operating_point(stream)["threshold"]

    def operating_point(self, stream: str = "default") -> dict:
        """How the calibrated threshold of a stream is set: threshold (on pred_score),
        false_alarm_threshold (the one for target_false_alarm_rate), limit_samples (taught
        known-defective parts), miss_threshold and miss_rate_bound (with target_miss_rate and
        limit samples: the threshold that lets at most that share of such parts pass, and the
        miss rate it can promise for a new defect like them, 1 / (n + 1) at best with n
        samples) and false_alarm_rate (the nominal false-alarm rate at the threshold: the
        target, or more where the threshold was lowered). A fixed threshold, when one is set,
        is not reflected here."""
        # the fusion's terms: every modality's feature views (one where parts are also scored
        # against their own surface, see _score)
        modalities = self.config.modalities
        n_mod = len(modalities if self.own_image_scored(stream) else self._keys(modalities))
        fusion = self.config.fusion
        far = sc.squash(sc.calibrated_threshold(self.config.target_false_alarm_rate, n_mod,
                                                fusion))
        limits = self._limit_scores.get(stream, [])
        out = {"threshold": far, "false_alarm_threshold": far, "limit_samples": len(limits),
               "miss_threshold": None, "miss_rate_bound": None,
               "false_alarm_rate": float(self.config.target_false_alarm_rate)}
        rate = self.config.target_miss_rate
        if rate is not None and limits:
            t, bound = sc.miss_rate_threshold(limits, rate)
            out.update(miss_threshold=t, miss_rate_bound=bound)
            if t < far:
                out.update(threshold=t, false_alarm_rate=sc.false_alarm_rate_at(
                    sc.unsquash(t), n_mod, fusion))
        return out

    def _quantile(self) -> float:
        """Per-modality quantile of normal scores at which the small-sample factor widens each
        modality's scale: the Bonferroni share of the false-alarm rate, since the pixel maps and
        masks fuse by max whatever the image-level fusion (Stouffer's threshold, a lower
        quantile, is then met with room to spare)."""
        return sc.modality_quantile(self.config.target_false_alarm_rate,
                                    len(self.config.modalities), "max")

    @torch.inference_mode()
    def teach(self, frames: List[Frame]) -> None:
        """Seed memory and calibrate from 1..8 known-good parts (of one stream).

        Each reference, in each orientation, is scored against the others (leave-one-out);
        the median / MAD of those scores calibrate each modality, the scale widened for the
        number of references (small-sample factor). The references stay in memory (never
        rotated out)."""
        if not 1 <= len(frames) <= 8:
            raise ValueError(f"teach needs 1..8 known-good frames, got {len(frames)}")
        streams = {f.stream for f in frames}
        if len(streams) != 1:
            raise ValueError(f"teach frames must belong to one stream, got {sorted(streams)}")
        stream = frames[0].stream
        self._symmetric.pop(stream, None)  # decided again from the references
        n_rot = max(1, min(int(self.config.reference_rotations),
                           int(self.config.memory_size) // len(frames)))
        # feats[i][r][m]: features of reference i rotated by r * 360 / n_rot degrees
        rendered = [self._rotated_features(self._validate(f), n_rot) for f in frames]
        feats = [r for _, r in rendered]
        self.reset(stream)
        state = self._stream(stream)
        for m in self._keys(self.config.modalities):
            have = [[fr[m] for fr in fi] for fi in feats if m in fi[0]]
            if not have:
                continue
            st = state[m]
            kept = [[self._memory_entry(f) for f in fi] for fi in have]
            st.pinned = [e for ki in kept for e in ki]
            st.taught = self._leave_one_out_stats(have, kept)
            st.raw_scores.clear()
            if self.config.intra_image == "on" and m in MODALITIES:  # each reference alone
                own = [sc.inner(sc.intra_image_score(fi[0]), self.config.score_margin)
                       for fi in have]
                state[m + INTRA] = sc.ModalityState(memory=deque(),
                                                    taught=self._stats_of_normal_maps(own))
        if self.config.intra_image == "auto":
            # 'auto' leaves taught streams alone: their calibration is widened for the few
            # references, and folding a second score into such shrunken ones lowered the
            # score of a defect that only one modality sees (docs/DETECTOR.md)
            self._surface[stream] = False
        if self.config.symmetry == "auto" or self.config.variation:
            compared = [self._comparison_images(f, images) for f, (images, _) in
                        zip(frames, rendered)]
        if self.config.symmetry == "auto":
            self._teach_symmetry(state, frames, [images for images, _ in rendered], compared)
        if self.config.variation:
            self.variation_status[stream] = self._teach_aligned(stream, frames, compared)

    def _leave_one_out_stats(self, feats: List[List[torch.Tensor]],
                             entries: List[List[torch.Tensor]]) -> sc.ScoreStats:
        """Calibration from known- or presumed-good parts: every orientation of every part
        (feats[i][k], (C, h, w)) scored against the other parts' memory entries (with one part:
        against its other orientations, or itself shifted by one patch); median / MAD of
        those scores, widened for the number of parts (small-sample factor)."""
        maps = []
        for i, fi in enumerate(feats):
            rest = [e for j, kj in enumerate(entries) if j != i for e in kj]
            rest_memory = torch.stack(rest) if rest else None
            for k, f in enumerate(fi):
                others = rest_memory
                if others is None:
                    others = torch.stack([e for j, e in enumerate(entries[i]) if j != k] or [
                        self._memory_entry(torch.roll(f, shifts=(1, 1), dims=(1, 2)))])
                r = sc.mutual_score(f.flatten(1).T, others, self.config.mutual_fraction)
                maps.append(sc.inner(r.reshape(f.shape[1:]), self.config.score_margin))
        return self._stats_of_normal_maps(maps, n_independent=len(feats))

    def _stats_of_normal_maps(self, maps: List[torch.Tensor],
                              n_independent: Optional[int] = None) -> sc.ScoreStats:
        """Calibration from the raw maps (border left out) of known- or presumed-good parts:
        median / MAD of their image scores, the typical within-part spread as a floor."""
        return sc.ScoreStats.of_scores([float(sc.topk_mean(r)) for r in maps],
                                       spread=float(np.median([sc.spread(r) for r in maps])),
                                       quantile=self._quantile(), n_independent=n_independent)

    def _remember_early(self, st: sc.ModalityState, feat: torch.Tensor,
                        entry: torch.Tensor) -> None:
        """An untaught stream's part entering memory before the stream's history can
        calibrate it: kept whole, and the first parts so kept calibrate the stream by
        leave-one-out, as references would (scores of parts 3 to min_history + 2 then share
        one scale instead of each part's own). Dropped once the history takes over.
        The per-pair patch minima are kept, so a new part adds only its own pairs."""
        if st.calibrated(self.config.min_history):
            st.early.clear()
            st.early_minima.clear()
            st.provisional = None
            return
        row = []
        if st.early:
            # the new part against every earlier entry, every earlier part against the new entry
            row = list(sc.part_minima(feat.flatten(1).T,
                                      torch.stack([e for _, e in st.early])).unbind(0))
            queries = [f.flatten(1).T for f, _ in st.early]
            back = sc.part_minima(torch.cat(queries), entry[None])[0]
            for i, d in enumerate(back.split([len(q) for q in queries])):
                st.early_minima[i].append(d)
        st.early_minima.append(row + [None])  # a part is never scored against itself
        st.early.append((feat, entry))
        if len(st.early) < 2:
            return
        maps = []
        for i, (f, _) in enumerate(st.early):
            mins = torch.stack([d for j, d in enumerate(st.early_minima[i]) if j != i])
            r = sc.mean_of_lowest(mins, self.config.mutual_fraction)
            maps.append(sc.inner(r.reshape(f.shape[1:]), self.config.score_margin))
        st.provisional = self._stats_of_normal_maps(maps, n_independent=len(st.early))

    def teach_defects(self, frames: List[Frame]) -> List[float]:
        """Score known-defective parts of one taught stream (the limit samples a cell keeps
        to prove that inspection catches its defects) against its taught state, which they do
        not change; with `target_miss_rate` set, the stream's threshold is then lowered until
        at most that share of such parts would pass (`operating_point`). Returns their
        pred_scores. Teaching the stream's good parts again forgets them."""
        if not frames:
            raise ValueError("teach_defects needs at least one known-defective frame")
        streams = {f.stream for f in frames}
        if len(streams) != 1:
            raise ValueError(f"limit samples must belong to one stream, got {sorted(streams)}")
        stream = frames[0].stream
        state = self._streams.get(stream, {})
        if not any(st.taught is not None for st in state.values()):
            raise ValueError(f"stream {stream!r} has no taught references: teach its known-good "
                             f"parts first (limit samples are scored against them)")
        scores = [float(self.detect(f, update_memory=False).pred_score) for f in frames]
        self._limit_scores[stream] = sorted(scores)
        return scores

    def _teach_aligned(self, stream: str, frames: List[Frame], compared: List[tuple]) -> str:
        """Variation models of a stream's references (`compared`: their comparison images,
        `_comparison_images`); returns "on" or why not."""
        from . import aligned
        from .variation import VariationConfig

        if RGB not in self.config.modalities or any(f.rgb is None for f in frames):
            return "off: needs the RGB image of every reference to register on"
        if not all(f.registered for f in frames):
            return "off: the modalities are not pixel-registered"
        if len(frames) < 2:
            return "off: needs 2 or more references"
        inputs = [self._aligned_inputs(c) for c in compared]
        grid = int(self.config.variation_grid)
        found = aligned.teach([i for i, _ in inputs], [fg for _, fg in inputs], self._quantile(),
                              VariationConfig(grid=grid) if grid else VariationConfig(),
                              fixture_grid=None if grid else aligned.FIXTURE_GRID)
        if found is None:
            return "off: a texture (the references are self-similar), no pose to align"
        if not found.colour or found.view is None:  # not a coloured part in pieces
            # the hue specks' score is a peak of hue differences of about 0.01 (a grey part) to
            # 0.05 (a coloured one), far below the memory's distances: its own absolute floor,
            # and for a coloured part a wider relative one
            wider = {"min_rel_scale": hue_specks.COLOURED_REL_SCALE} if found.colour else {}
            found.hue, found.hue_pixels = self._speck_stats(
                compared, _hue_map(found.colour), min_abs_scale=hue_specks.SCALE_FLOOR, **wider)
        if not found.colour:
            found.bright, found.bright_pixels = self._speck_stats(
                compared, brightness_specks.speck_map, min_abs_scale=brightness_specks.SCALE_FLOOR,
                min_rel_scale=brightness_specks.REL_SCALE)
        self._aligned[stream] = found
        return "on"

    def _speck_stats(self, compared: List[tuple], find, **floors
                     ) -> Tuple[Optional[sc.ScoreStats], Optional[float]]:
        """Calibration of a speck map (`find`: core/hue_specks.py, core/brightness_specks.py)
        from the references' comparison images: their peaks' median / MAD, widened for their
        number, with the scale's `floors` (`ScoreStats.of_scores`), and their maps'
        `hue_specks.pixel_level`; (None, None) where a reference has no colour rendering or
        its height map shows no part."""
        specks = [_speck_map(images, find) for images in compared]
        if any(s is None for s in specks):
            return None, None
        return (sc.ScoreStats.of_scores([hue_specks.image_score(s) for s in specks],
                                        quantile=self._quantile(), **floors),
                hue_specks.pixel_level(specks))

    def registered_on(self, stream: str = "default") -> Optional[str]:
        """The modality whose image the stream's parts are registered on for the aligned
        comparison ('rgb' or 'sensor': whichever made its references agree best), None when
        the stream has no aligned comparison."""
        found = self._aligned.get(stream)
        return None if found is None else found.on

    def aligned_grid(self, stream: str = "default") -> Optional[int]:
        """Side [px] of the stream's finest variation model grid (`variation_grid`; parts
        not in the references' pose use 128 px), None when the stream has no aligned
        comparison."""
        found = self._aligned.get(stream)
        return None if found is None else found.grid

    def _memory_entry(self, feat: torch.Tensor) -> torch.Tensor:
        """(C, h, w) features of a part -> the (patches, C) rows kept for it in memory."""
        return sc.coreset(feat.flatten(1).T.contiguous(), int(self.config.memory_patches))

    def _memory_entry_job(self, feat: torch.Tensor) -> torch.Tensor:
        """`_memory_entry` on `_comparison_worker` (inference mode is per thread)."""
        with torch.inference_mode():
            return self._memory_entry(feat)

    def _rotated_features(self, frame: Frame, n_rot: int) -> tuple:
        """(the frame's modality images, [their features rotated by k * 360 / n_rot
        degrees])."""
        images = self._images(frame, {})
        out = []
        for k in range(n_rot):
            if k == 0:
                rot = images
            else:
                a = 2 * np.pi * k / n_rot
                rot = {m: _rotate(img, a) for m, img in images.items() if m in self.backbones}
            out.append(self._extract(rot))
        return images, out

    def _extract(self, images: Dict[str, torch.Tensor], views: bool = True
                 ) -> Dict[str, torch.Tensor]:
        """{modality or view key: (C, h, w) features} of modality images (further views only
        with `views`), one batch per backbone, each patch averaged with its 3 x 3 neighbours."""
        groups: Dict[int, list] = {}
        for key, backbone in self.backbones.items():
            if _modality(key) in images and (views or key in MODALITIES):
                groups.setdefault(id(backbone), []).append(key)
        feats = {}
        for names in groups.values():
            batch = torch.stack([images[_modality(k)].to(self.device) for k in names])
            f = sc.local_aggregate(self.backbones[names[0]].features(batch).float(), 3)
            feats.update({m: f[i] for i, m in enumerate(names)})
        return feats

    def detect(self, frame: Frame, update_memory: bool = True) -> Detection:
        # The comparison thread works beside this one for most of a part (`_score`, and the
        # memory entries while the part is grounded): torch's threads here are one fewer
        # throughout, and that thread has one. Torch threads waiting for a core the other
        # thread held slowed the network and the memory's products more than one thread fewer
        # does, and on 2 cores one thread ran torch's small ops faster than two even alone
        # (docs/DETECTOR.md, "Aligned comparison", cost).
        with torch.inference_mode(), _torch_threads_but_one():
            return self._detect(frame, update_memory)

    # ---------------------------------------------------------------------------------------
    # internals
    # ---------------------------------------------------------------------------------------
    def _stream(self, stream: str) -> Dict[str, sc.ModalityState]:
        if stream not in self._streams:
            self._streams[stream] = {k: sc.ModalityState(memory=deque(
                maxlen=self.config.memory_size)) for k in self._keys(MODALITIES)}
        return self._streams[stream]

    def _keys(self, modalities) -> List[str]:
        """The modalities and, after each, the keys of its further feature views."""
        return [k for m in modalities for k in [m] + self.views.get(m, [])]

    @staticmethod
    def _validate(frame: Frame) -> Frame:
        if not isinstance(frame, Frame):
            raise TypeError(f"detect expects a Frame, got {type(frame).__name__}")
        if frame.rgb is not None:
            a = np.asarray(frame.rgb)
            if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 8 or a.shape[1] < 8:
                raise ValueError(f"frame.rgb must be (H, W, 3), got {a.shape}")
        if frame.sensor is not None:
            a = np.asarray(frame.sensor)
            if a.ndim == 3 and a.shape[2] == 1:
                a = a[..., 0]
            if a.ndim != 2 or min(a.shape) < 8:
                raise ValueError(f"frame.sensor must be (H, W), got {a.shape}")
            if frame.sensor_type not in SENSOR_TYPES:
                raise ValueError(f"frame.sensor_type must be one of {SENSOR_TYPES}, got "
                                 f"{frame.sensor_type!r}")
        if frame.points is not None:
            a = np.asarray(frame.points)
            if not ((a.ndim == 3 and a.shape[2] == 3) or (a.ndim == 2 and a.shape[1] == 3)):
                raise ValueError(f"frame.points must be (H, W, 3) or (N, 3), got {a.shape}")
            if a.ndim == 2 and frame.intrinsics is None:
                raise ValueError("an unorganized cloud (N, 3) needs frame.intrinsics")
            curv = frame.extra_maps.get(SCAN_CURVATURE)
            if curv is not None and (np.ndim(curv) != 2 or min(np.shape(curv)) < 8):
                raise ValueError(f"frame.extra_maps[{SCAN_CURVATURE!r}] must be (H, W), got "
                                 f"{np.shape(curv)}")
        return frame

    def _images(self, frame: Frame, timings: dict) -> Dict[str, torch.Tensor]:
        """Modality images (3, S, S) in [0, 1] for the modalities in use and present."""
        images = self._flat_images(frame, timings)
        images.update(self._geometry_images(frame, timings))
        return images

    def _geometry_in_use(self, frame: Frame) -> bool:
        return GEOMETRY in self.config.modalities and bool(frame.present[GEOMETRY])

    def _flat_images(self, frame: Frame, timings: dict) -> Dict[str, torch.Tensor]:
        """`_images` of the colour image and the second sensor."""
        S = int(self.config.image_size)
        use = [m for m in self.config.modalities if frame.present[m]]
        t0 = time.perf_counter()
        images = {}
        if RGB in use:
            rgb = _rgb_array(frame)
            # The built-in network was trained on luminance bands; the others see the colours
            # (ImageNet networks were trained on photos; patch statistics count colour changes).
            if isinstance(self.backbones[RGB], BuiltinBackbone):
                images[RGB] = rgb_image(rgb, S)
            else:
                images[RGB] = to_three_channels(rgb, S)
        if SENSOR in use:
            images[SENSOR] = to_three_channels(sensor_image(frame.sensor, frame.sensor_type), S)
        timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        return images

    def _geometry_images(self, frame: Frame, timings: dict, feature: bool = True,
                         height: bool = True) -> Dict[str, torch.Tensor]:
        """`_images` of the geometry ({} when it is not in use): its image for the features
        (`feature`) and, where a pixel comparison reads it, its height map (`height`); both
        from one set of maps, the height map alone without the normals and curvature that
        cost most of them. Adds its duration to timings["geometry"]."""
        S = int(self.config.image_size)
        t0 = time.perf_counter()
        images = {}
        if self._geometry_in_use(frame):
            no_point = "frame.points has no valid point (all NaN / non-positive depth)"
            # A scanner's own curvature is computed on its full mesh: the maps derived from
            # the points are a fall-back (docs/DETECTOR.md, "Features per modality"), computed
            # only where something reads them.
            scan_curvature = frame.extra_maps.get(SCAN_CURVATURE)
            if feature and scan_curvature is not None:
                if not has_valid_point(frame.points):
                    raise ValueError(no_point)
                images[GEOMETRY] = scan_curvature_image(scan_curvature, (S, S), self.device)
            # what the aligned comparison and the self-comparison see of the geometry
            height = height and (self.config.variation or self._symmetry_wanted(frame))
            if feature and scan_curvature is None:
                geo = geometry_maps(frame.points, frame.intrinsics, (S, S), device=self.device)
                if not bool(geo.valid.any()):
                    raise ValueError(no_point)
                images[GEOMETRY] = geo.as_image()
                if height:
                    images[HEIGHT] = geo.height()
            elif height:
                depth, valid = surface_depth(frame.points, frame.intrinsics, (S, S))
                if not valid.any():
                    raise ValueError(no_point)
                images[HEIGHT] = height_above_plane(depth, valid)
        timings["geometry"] = timings.get("geometry", 0.0) + (time.perf_counter() - t0) * 1e3
        return images

    def _features(self, frame: Frame, images: Dict[str, torch.Tensor], timings: dict) -> dict:
        t0 = time.perf_counter()
        # a stream scored against its own surfaces does not use further views (see _score)
        views = not self.own_image_scored(frame.stream)
        feats = self._extract(images, views) if images else {}
        if self._language is not None and RGB in images:
            emb = self.backbone.patch_embeddings(images[RGB][None].to(self.device))[0]
            feats["rgb:language"] = sc.language_map(emb, *self._language)
        timings["features"] = (time.perf_counter() - t0) * 1e3
        return feats

    def _score(self, frame: Frame, timings: dict) -> dict:
        """Features and calibrated per-modality maps of a frame (memory is not touched).

        Returns a dict: used (modalities), feats, images, cmaps (modality -> (h, w) calibrated
        map c), cscores (modality -> c of its first view), views (further feature view key ->
        c), by_modality and weights (modality -> c of all its views and its weight in
        Stouffer's sum, `_combine_views`), sources (every
        calibrated score apart: each modality's feature memory's, its further views' and, where
        they run, its own-image score's, its self-comparison's and its variation model's),
        raw (modality -> (raw image score, spread)), confident (bool), symmetric (whether the
        part is symmetric; None where the self-comparison did not look), aligned (modality ->
        `aligned.Comparison` where the part was compared in register), tinted (the hue specks'
        calibrated map, `_score_aligned`, or None), grounding_rgb (`_grounding_rgb`, made where
        there is a grounding module, or None)."""
        worker = self._comparison_worker()
        # The pixel comparisons run on a thread of their own beside the feature memory, from
        # one rendering of the part, and their results are waited for where they are fused.
        # They need the part's images and the geometry's height map, made first on that thread
        # while this one renders the other images. The geometry's image for the features (the
        # point cloud's normals and curvature, the costliest input) is made on that thread too
        # where only the self-comparison follows there, and in this one where the aligned
        # comparison does: both comparisons then keep that thread busy while this one runs
        # torch's network and memory products, which release the GIL; numpy code beside numpy
        # code on two threads waits for the GIL (the self-comparison took 31 ms alone, 54 ms
        # beside the aligned comparison, 37 ms beside the geometry's maps). Where this one would
        # then wait for the aligned comparison, it makes the part's speck maps, mostly scipy's
        # filters, which release the GIL (`_score_beside`). Torch leaves that thread a core
        # (`detect`).
        present = [m for m in self.config.modalities if frame.present[m]]
        in_register = frame.stream in self._aligned and frame.registered and RGB in present
        geo_timings: dict = {}
        geometry = worker.submit(self._geometry_job, frame, geo_timings, not in_register)
        flat = self._flat_images(frame, timings)
        used = [m for m in self.config.modalities
                if m in flat or (m == GEOMETRY and self._geometry_in_use(frame))]
        by_symmetry = self._symmetry_wanted(frame)
        compared = (worker.submit(self._comparison_job, frame, flat, geometry)
                    if by_symmetry or in_register else None)
        in_symmetry = (worker.submit(self._timed_symmetry_maps, frame, flat, geometry, compared)
                       if by_symmetry else None)
        in_aligned = (worker.submit(self._inspect_aligned, self._aligned[frame.stream], compared)
                      if in_register else None)
        feats = self._features(frame, flat, timings)
        geo_images = dict(geometry.result())
        if in_register:
            geo_images.update(self._geometry_images(frame, geo_timings, height=False))
        images = {**flat, **geo_images}
        timings.update(geo_timings)
        if geo_images:
            took = timings["features"]
            feats.update(self._features(frame, geo_images, timings))
            timings["features"] += took
        return self._score_beside(frame, images, feats, used, in_symmetry, in_aligned,
                                  timings, compared)

    def _score_beside(self, frame: Frame, images: Dict[str, torch.Tensor], feats: dict,
                      used: List[str], in_symmetry, in_aligned, timings: dict,
                      compared=None) -> dict:
        """`_score` from the features on, while the pixel comparisons run on their thread:
        `in_symmetry` and `in_aligned` are their futures (None where they do not run),
        `compared` the future of the part's comparison images where the aligned comparison
        runs (its speck maps are made here while that thread compares)."""
        t0 = time.perf_counter()
        state = self._stream(frame.stream)
        cmaps: Dict[str, torch.Tensor] = {}
        cscores: Dict[str, float] = {}
        raw_scores: Dict[str, tuple] = {}
        confident = True
        cold = set()  # modalities with no memory yet
        calibration: Dict[str, tuple] = {}  # key -> the normal scores calibrating its score
        own = self.own_image_scored(frame.stream)
        # Further feature views are left out where the parts are also scored against their own
        # surface: on a texture that fills the view the patch statistics' view drowned the
        # network's (magnetic tiles, docs/DETECTOR.md "Features per modality").
        keys = used if own else self._keys(used)
        for m in keys:
            f = feats[m]
            C, h, w = f.shape
            st = state[m]
            mem = st.memory_tensor()
            if mem is None:
                raw = sc.intra_image_score(f)
                confident = False
                cold.add(m)  # the modality's score is the own-image one already
            else:
                raw = sc.mutual_score(f.flatten(1).T, mem, self.config.mutual_fraction)
                raw = raw.reshape(h, w)
            stats = map_stats = st.score_stats(self.config.min_history, self._quantile())
            if stats is None:
                stats = map_stats = sc.cold_start_stats(raw)
                confident = False
            elif stats is st.provisional:
                # A few presumed-good parts calibrate the part's score; its map keeps the
                # part's own statistics, whose scale is not widened for the few parts
                # (widened, the early parts' maps fell below the later parts' normal pixels).
                map_stats = sc.cold_start_stats(raw)
                confident = False
            # Scores against fewer than 2 memory parts are inflated: kept out of the history.
            n_mem = 0 if mem is None else mem.shape[0]
            margin = self.config.score_margin
            raw_in = sc.inner(raw, margin)
            raw_scores[m] = (float(sc.topk_mean(raw_in)), sc.spread(raw_in), n_mem >= 2)
            cmap = (raw - map_stats.loc) / map_stats.scale
            if m == RGB and "rgb:language" in feats:
                cmap = torch.maximum(cmap, self._language_cmap(feats["rgb:language"],
                                                               frame.stream))
            cmaps[m] = cmap
            if map_stats is stats:
                cscores[m] = float(sc.topk_mean(sc.inner(cmap, margin)))
            else:
                cscores[m] = (raw_scores[m][0] - stats.loc) / stats.scale
            calibration[m] = stats.scores
        # a further view adds its image score only; the modality's maps are its first view's
        views = {k: cscores.pop(k) for k in keys if k not in MODALITIES}
        for k in views:
            cmaps.pop(k)
        sources = list(cscores.values()) + list(views.values())
        if own is not False:  # undecided: scored for the history only
            found = self._score_intra(state, feats, [m for m in used if m not in cold],
                                      raw_scores)
            if own:
                sources += list(found.values())
                for m, c in found.items():  # a defect one of the two sees keeps its score
                    cscores[m] = sc.max_of_normals([cscores[m], c])
        timings["scoring"] = (time.perf_counter() - t0) * 1e3
        symmetric = None
        if in_symmetry is not None:
            symmetric, found = self._score_symmetry(state, frame, in_symmetry.result(), cmaps,
                                                    raw_scores, timings)
            sources += list(found.values())
            for m, c in found.items():  # a defect one of the two sees keeps its score
                cscores[m] = sc.max_of_normals([cscores[m], c])
        # this thread would wait for the aligned comparison: it makes the grounding's image
        # and the speck maps meanwhile
        shown = None if self.grounding is None else self._grounding_rgb(frame, images)
        in_pose, tinted = {}, None
        if in_aligned is not None:
            specks = self._speck_maps(self._aligned[frame.stream], compared.result(), timings)
            found, in_pose, tinted = self._score_aligned(in_aligned.result(), specks, cmaps,
                                                         cscores, timings)
            sources += found
        combined = {m: self._combine_views(m, cscores, views, calibration) for m in cscores}
        by_modality = {m: c for m, (c, _) in combined.items()}
        weights = {m: w for m, (_, w) in combined.items()}
        return dict(used=used, keys=keys, feats=feats, images=images, cmaps=cmaps,
                    cscores=cscores, views=views, by_modality=by_modality, weights=weights,
                    sources=sources, raw=raw_scores, confident=confident, symmetric=symmetric,
                    aligned=in_pose, tinted=tinted, grounding_rgb=shown)

    @property
    def region_types(self) -> List[str]:
        """Every type a region can carry: the grounding sentences' (with grounding), those the
        comparison in register says (with `variation`), and UNKNOWN_TYPE."""
        types = set(getattr(self, "sentence_types", ())) | {UNKNOWN_TYPE}
        if self.config.variation:
            types |= {MISSING_TYPE, HOLE_TYPE, EXTRA_TYPE, RAISED_TYPE, TINTED_TYPE}
        return sorted(types)

    def own_image_scored(self, stream: str = "default") -> Optional[bool]:
        """Whether the stream's parts are also scored against their own surface
        (`intra_image`); None while 'auto' has not seen enough parts to decide."""
        mode = self.config.intra_image
        if mode != "auto":
            return mode == "on"
        found = self._surface.get(stream)
        return found if isinstance(found, bool) else None

    def symmetry_compared(self, stream: str = "default") -> Optional[bool]:
        """Whether the stream's parts are also compared with themselves turned or mirrored by
        their own symmetry (`symmetry`); None while 'auto' has not seen enough parts."""
        if self.config.symmetry == "off":
            return False
        found = self._symmetric.get(stream)
        return found if isinstance(found, bool) else None

    def _decide_surface(self, frame: Frame) -> None:
        """'auto': note the part's texture score until `min_history` parts decide the stream."""
        if self.config.intra_image != "auto" or isinstance(self._surface.get(frame.stream), bool):
            return
        image = _surface_image(frame)
        if image is None:  # nothing to judge the surface on
            self._surface[frame.stream] = False
            return
        seen = self._surface.setdefault(frame.stream, [])
        seen.append(texture_score(image))
        if len(seen) >= int(self.config.min_history):
            self._surface[frame.stream] = float(np.median(seen)) >= TEXTURE_THRESHOLD

    def _score_intra(self, state, feats, used, raw_scores) -> Dict[str, float]:
        """Own-image scores of the modalities `used`: {modality: calibrated score}, for those
        already calibrated (the taught references, or the stream's history, under
        "<modality>:intra"); the raw scores go to `raw_scores` for the history."""
        out = {}
        margin = self.config.score_margin
        for m in used:
            raw_in = sc.inner(sc.intra_image_score(feats[m]), margin)
            s = float(sc.topk_mean(raw_in))
            raw_scores[m + INTRA] = (s, sc.spread(raw_in), True)
            st = state.setdefault(m + INTRA, sc.ModalityState(memory=deque()))
            stats = st.score_stats(self.config.min_history, self._quantile())
            if stats is not None:
                out[m] = (s - stats.loc) / stats.scale
        return out

    def _comparison_images(self, frame: Frame, images: Dict[str, torch.Tensor]) -> tuple:
        """(modality images compared pixel by pixel, the (3, S, S) colour rendering of RGB or
        None): RGB as luminance bands (robustly normalised, so global lighting changes between
        parts cancel out), the other modalities as the feature extractors see them, the
        geometry as its height map (where computed)."""
        S = int(self.config.image_size)
        out = {m: v for m, v in images.items() if m not in (RGB, HEIGHT)}
        if HEIGHT in images:
            out[GEOMETRY] = images[HEIGHT]
        colour = None
        if RGB in images:
            rgb = _rgb_array(frame)
            # one of the two renderings is the feature extractor's own (`_images`)
            if isinstance(self.backbones[RGB], BuiltinBackbone):
                colour, out[RGB] = to_three_channels(rgb, S), images[RGB]
            else:
                colour, out[RGB] = images[RGB], rgb_image(rgb, S)
        return out, colour

    @staticmethod
    def _aligned_inputs(compared: tuple) -> tuple:
        """(modality images for the variation models, (S, S) foreground) from a part's
        comparison images (`_comparison_images`): RGB with its chromaticity beside the
        luminance bands (hue, blind to the lamp's shading; parts are registered on the bands
        only: `aligned.REGISTRATION_CHANNELS`); the foreground from the colour image, whose
        outline is sharpest."""
        from .registration import frame_foreground

        out, colour = compared
        # one design, one colour scheme: a shifted cap or a coloured speck changes the hue
        bands = out[RGB]
        out = {**out, RGB: torch.cat([bands, chromaticity(colour).to(bands.device)])}
        return out, frame_foreground(rgb=colour)

    def _symmetry_wanted(self, frame: Frame) -> bool:
        """Whether the part is compared with itself turned or mirrored (`symmetry`):
        pixel-registered frames of a stream not found to be of asymmetric parts."""
        return (self.config.symmetry == "auto" and frame.registered
                and self._symmetric.get(frame.stream) is not False)

    def _symmetry_maps(self, frame: Frame, images: Dict[str, torch.Tensor],
                       compared: tuple) -> tuple:
        """(whether the part is symmetric, {modality: deviation map}, foreground) of the
        self-comparison (core/symmetry.py), maps and foreground on its working grid. The
        foreground comes from the height map where there is one (a cast shadow is not
        symmetric), else from the colour image; mirrors are looked for only with a height map
        (the outline alone cannot tell a capsule from a board). No maps when the part shows no
        symmetry at all; a part of a stream of symmetric parts is compared whatever its own
        mismatch (a broken part matches itself worse). `compared`: the part's comparison
        images (`_comparison_images`)."""
        from .registration import foreground_mask, frame_foreground, to_work_grid
        from . import symmetry as sy

        out, colour = compared
        height = images.get(HEIGHT)
        if height is not None:
            fg = foreground_mask(height)
        elif colour is not None:
            fg = frame_foreground(rgb=colour)
        else:
            return False, {}, None
        fg = to_work_grid(fg.astype(np.float32), sy.GRID) > 0.5  # on its working grid
        found = sy.find_symmetry(fg, max_mismatch=1.0, height=height, max_content=np.inf)
        if found is None or not found.comparable:
            return False, {}, fg
        symmetric = found.symmetric
        if not symmetric and self._symmetric.get(frame.stream) is not True:
            return False, {}, fg
        if not found.rotational:
            # a lamp to one side shades a round part unlike its mirror image: the colour
            # image is not compared under mirrors. Of the others, the intensity alone: the
            # band-pass channels beside it, scaled per image by their bulk, are mostly noise
            # on a part that matches its mirror image
            out = {m: _intensity(v) for m, v in out.items() if m != RGB}
        # a grey modality rendered as three equal channels is compared once
        out = {m: v[:1] if _grey_tensor(v) else v for m, v in out.items()}
        return symmetric, {m: sy.deviation(v, found, fg) for m, v in out.items()}, fg

    def _geometry_job(self, frame: Frame, timings: dict, feature: bool
                      ) -> Dict[str, torch.Tensor]:
        """`_geometry_images` on `_comparison_worker` (inference mode is per thread): the
        height map, and the image for the features where `feature`."""
        with torch.inference_mode():
            return self._geometry_images(frame, timings, feature=feature)

    def _comparison_job(self, frame: Frame, flat: Dict[str, torch.Tensor], geometry) -> tuple:
        """`_comparison_images` on `_comparison_worker`, of the part's other images and the
        future of its geometry's (done: that thread runs its jobs in order)."""
        return self._comparison_images(frame, {**flat, **geometry.result()})

    def _timed_symmetry_maps(self, frame: Frame, flat: Dict[str, torch.Tensor], geometry,
                             compared) -> tuple:
        """`_symmetry_maps` and its duration [ms], of the part's other images and the futures of
        its geometry's images and its comparison images (`_score`)."""
        t0 = time.perf_counter()
        images = {**flat, **geometry.result()}
        return self._symmetry_maps(frame, images, compared.result()) + (
            (time.perf_counter() - t0) * 1e3,)

    def _score_symmetry(self, state, frame, found: tuple, cmaps, raw_scores, timings) -> tuple:
        """Self-comparison of a part from `_timed_symmetry_maps`'s result: (whether it is
        symmetric, {modality: calibrated score}) for the modalities already calibrated (the
        taught references, or the stream's history, under "<modality>:sym") of a stream of
        symmetric parts; their maps join `cmaps` (in place, each cell's peak); the raw scores
        go to `raw_scores` for the history."""
        from . import symmetry as sy

        symmetric, maps, fg, timings["symmetry"] = found
        out = {}
        for m, dev in maps.items():
            if m not in cmaps:
                continue
            s, spread = sy.image_score(dev, fg), _part_spread(dev, fg)
            raw_scores[m + SYM] = (s, spread, True)
            st = state.setdefault(m + SYM, sc.ModalityState(memory=deque()))
            stats = st.score_stats(self.config.min_history, self._quantile())
            if stats is None or self._symmetric.get(frame.stream) is not True:
                continue
            out[m] = (s - stats.loc) / stats.scale
            _fold_map(cmaps, m, dev, stats.loc, stats.scale)
        return symmetric, out

    def _decide_symmetry(self, frame: Frame, symmetric: Optional[bool]) -> None:
        """'auto': note whether the part is symmetric until `min_history` parts decide the
        stream (most of them: its parts are)."""
        if self.config.symmetry != "auto" or isinstance(self._symmetric.get(frame.stream), bool):
            return
        if symmetric is None:  # not looked at: frames not pixel-registered
            self._symmetric[frame.stream] = False
            return
        seen = self._symmetric.setdefault(frame.stream, [])
        seen.append(bool(symmetric))
        if len(seen) >= int(self.config.min_history):
            self._symmetric[frame.stream] = 2 * sum(seen) > len(seen)

    def _teach_symmetry(self, state, frames: List[Frame], images: List[Dict[str, torch.Tensor]],
                        compared: List[tuple]) -> None:
        """The self-comparison of a taught stream: on when most references are symmetric
        (turned or mirrored), calibrated by their own scores (widened for their number).
        `images`, `compared`: the references' modality and comparison images."""
        from .symmetry import image_score

        stream = frames[0].stream
        if not all(f.registered for f in frames):
            self._symmetric[stream] = False
            return
        found = [self._symmetry_maps(f, im, c) for f, im, c in zip(frames, images, compared)]
        if 2 * sum(s for s, _, _ in found) <= len(found):
            self._symmetric[stream] = False
            return
        self._symmetric[stream] = True
        for m in self.config.modalities:
            have = [(dev, fg) for _, maps, fg in found for mm, dev in maps.items() if mm == m]
            if not have:
                continue
            scores = [image_score(dev, fg) for dev, fg in have]
            spread = float(np.median([_part_spread(dev, fg) for dev, fg in have]))
            state[m + SYM] = sc.ModalityState(memory=deque(), taught=sc.ScoreStats.of_scores(
                scores, spread=spread, quantile=self._quantile(), n_independent=len(have)))

    def _comparison_worker(self) -> ThreadPoolExecutor:
        """The second thread of `_score`: a part's geometry images and its pixel comparisons
        are made there, and its memory entries while the calling thread grounds it. Started at
        its first use, with one torch thread: the calling thread's torch ops take the other
        cores (`_torch_threads_but_one`)."""
        if self._comparison_thread is None:
            self._comparison_thread = ThreadPoolExecutor(
                1, thread_name_prefix="comparison", initializer=torch.set_num_threads,
                initargs=(1,))
        return self._comparison_thread

    def _inspect_aligned(self, stream, compared) -> tuple:
        """The aligned comparison of one part from its comparison images, given as the future
        of `_comparison_images` (`_score`): (the stream's models it was compared with,
        `aligned.inspect`'s maps, its duration [ms])."""
        from . import aligned

        t0 = time.perf_counter()
        images, fg = self._aligned_inputs(compared.result())
        stream, reg = aligned.for_part(stream, images, fg)
        maps = aligned.inspect(stream.models, images, fg, stream.on, stream.templates,
                               stream.view, reg, stream.weights)
        return stream, maps, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def _speck_maps(stream, compared: tuple, timings: dict) -> tuple:
        """A part's speck maps from its comparison images (`_comparison_images`), for a stream
        compared in register (the taught `AlignedStream`, which holds their calibrations):
        ((hue-speck map, its calibration, its pixel level) or None, the same of the brightness
        specks or None); their duration goes to `timings` ("specks", ms)."""
        t0 = time.perf_counter()
        speck = None if stream.hue is None else _speck_map(compared, _hue_map(stream.colour))
        hue = None if speck is None else (speck, stream.hue, stream.hue_pixels)
        speck = (None if stream.bright is None
                 else _speck_map(compared, brightness_specks.speck_map))
        bright = None if speck is None else (speck, stream.bright, stream.bright_pixels)
        timings["specks"] = (time.perf_counter() - t0) * 1e3
        return hue, bright

    def _score_aligned(self, found: tuple, specks: tuple, cmaps, cscores, timings) -> tuple:
        """Fold the aligned comparison (`_inspect_aligned`'s result) and the part's speck maps
        (`_speck_maps`'s) into the modality scores (in place): per modality the image score is
        Stouffer's sum of the feature memory's and the variation model's calibrated scores
        (both ~N(0, 1) on normal parts) and the map the larger of the two; the part's hue
        specks are folded into RGB, its brightness specks into RGB's map alone. Returns (the
        variation models' and the hue specks' calibrated scores, {modality:
        `aligned.Comparison`} of the modalities folded in, the hue specks' calibrated map on
        the part's pixels or None)."""
        stream, maps, timings["aligned"] = found
        hue, bright = specks
        out, kept, tinted = [], {}, None
        for m, compared in maps.items():
            if m not in cmaps:
                continue
            st = stream.stats[m]
            c_var = (compared.score - st.loc) / st.scale
            out.append(float(c_var))
            # Stouffer's sum, not the max of the two: the max let the feature memory's pose
            # sensitivity through (turned good capsules flagged; docs/DETECTOR.md)
            cscores[m] = (cscores[m] + c_var) / np.sqrt(2.0)
            _fold_map(cmaps, m, compared.map, st.loc, st.scale)
            kept[m] = compared
        if hue is not None and RGB in kept:
            speck, st, pixels = hue
            c_hue = (hue_specks.image_score(speck) - st.loc) / st.scale
            out.append(float(c_hue))
            # specks the other two cannot see keep their score (the max, as the own-image
            # score is folded in): they hardly move the luminance the comparison and the
            # memory see
            cscores[RGB] = sc.max_of_normals([cscores[RGB], c_hue])
            # the map from the references' pixels up (`hue_specks.pixel_level`): a speck
            # fainter than their peaks is still one where it lies
            _fold_map(cmaps, RGB, speck, pixels, st.scale)
            tinted = (speck - st.loc) / st.scale
        if bright is not None and RGB in kept:
            # the map only: as a score of its own it diluted what only the colour model sees
            speck, st, pixels = bright
            _fold_map(cmaps, RGB, speck, pixels, st.scale)
        return out, kept, tinted

    def _evidence(self, scored: dict, frame: Frame) -> torch.Tensor:
        """(IN_CH, h, w) grounding evidence from the scored frame."""
        from .grounding import build_evidence

        cmaps = scored["cmaps"]
        grid = next(iter(cmaps.values())).shape
        squashed = {m: sc.squash(v) for m, v in cmaps.items()}
        if not frame.registered:  # unaligned maps cannot be fused per pixel
            keep = RGB if RGB in squashed else scored["used"][0]
            squashed = {keep: squashed[keep]}
        images = dict(scored["images"])
        shown = scored.get("grounding_rgb")  # made while the aligned comparison ran, or now
        if shown is None:
            shown = self._grounding_rgb(frame, images)
        if shown is not None:
            images[RGB] = shown
        return build_evidence(squashed, images, grid)

    def _grounding_rgb(self, frame: Frame, images: Dict[str, torch.Tensor]
                       ) -> Optional[torch.Tensor]:
        """The RGB image the grounding module sees (`_evidence`) where it is not the feature
        extractor's own rendering (`images[RGB]`, the built-in backbone's), else None."""
        if RGB not in images or isinstance(self.backbones[RGB], BuiltinBackbone):
            return None
        # The grounding module was trained on the luminance-band rendering of RGB; it sees it
        # pooled to the patch grid, so a half-resolution rendering is enough (and 4x cheaper).
        S = int(self.config.image_size)
        half = to_three_channels(np.asarray(frame.rgb), S // 2)
        half = (half.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        return rgb_image(half, S)

    @torch.inference_mode()
    def grounding_evidence(self, frame: Frame) -> torch.Tensor:
        """Evidence tensor (IN_CH, h, w) for a frame, as the grounding module sees it (used by
        the training script); memory and history are not changed."""
        with _torch_threads_but_one():
            scored = self._score(self._validate(frame), {})
        if not scored["used"]:
            raise ValueError("frame has none of the configured modalities")
        return self._evidence(scored, frame)

    def _detect(self, frame: Frame, update_memory: bool) -> Detection:
        t_start = time.perf_counter()
        timings: Dict[str, float] = {}
        frame = self._validate(frame)
        H, W = frame.shape
        present = {m: bool(frame.present[m]) for m in MODALITIES}
        threshold = self.threshold_for(frame.stream)
        scored = self._score(frame, timings)
        used, feats = scored["used"], scored["feats"]
        if not used:
            det = Detection(anomaly_map=np.zeros((H, W), np.float32),
                            pred_mask=np.zeros((H, W), bool), pred_score=0.0,
                            threshold=threshold, modality_scores={},
                            modalities_present=present, timings_ms=timings,
                            model_id=self.model_id, confident=False)
            return self._finish(det, frame, timings, t_start)
        t0 = time.perf_counter()
        state = self._stream(frame.stream)
        cmaps, raw_scores = scored["cmaps"], scored["raw"]
        confident = scored["confident"]
        by_modality = scored["by_modality"]
        if self.config.fusion == "omnibus":
            c = sc.fuse(scored["sources"], "omnibus")
        elif self.config.fusion == "stouffer":
            c = sc.fuse([by_modality[m] for m in by_modality], "stouffer",
                        weights=[scored["weights"][m] for m in by_modality])
        else:
            c = sc.fuse(by_modality.values(), self.config.fusion)
        pred_score = sc.squash(c)
        is_anom = pred_score >= threshold
        # Admit typical-looking parts only: a defective part would teach the memory that its
        # defect is normal, and a defect that stays under the threshold is still a defect. Before
        # calibration exists only the decision can judge; the first parts bootstrap an empty
        # memory while it holds fewer than 2, their scores being uncalibrated.
        admit = not is_anom and (not confident or c < self.config.memory_admit_below)
        # the part's memory entries are made on the comparison thread while this one grounds it
        worker = self._comparison_worker()
        pending = {m: worker.submit(self._memory_entry_job, feats[m]) for m in scored["keys"]
                   if update_memory and (admit or (not state[m].pinned
                                                   and len(state[m].memory) < 2))}
        # Maps on the RGB grid, smoothed by a Gaussian of about half a patch.
        full = self._upsample(cmaps, (H, W))
        # Pixel maps fuse by max whatever the image-level fusion: a defect seen by one
        # modality must not be diluted where it lies, and Stouffer's sum over pixels would
        # add the other modalities' noise to the location.
        if frame.registered:
            fused = sc.fuse(full.values(), "max")
        else:  # modalities not aligned: only the RGB map means something at pixel level
            fused = full[RGB] if RGB in full else full[used[0]]
        score_map = sc.squash(fused)
        modality_maps = {m: sc.squash(v).cpu().numpy().astype(np.float32)
                         for m, v in full.items()}
        timings["scoring"] += (time.perf_counter() - t0) * 1e3

        # ---- grounding ------------------------------------------------------------------
        t0 = time.perf_counter()
        ground = None
        anomaly_map = score_map
        if self.grounding is not None:
            ev = self._evidence(scored, frame)
            ground = self.grounding(ev[None], self._defect_text, self._normal_text)
            a = self._grounding_weight
            if a > 0:
                fine = F.interpolate(ground.fine[:, None], size=(H, W), mode="bilinear",
                                     align_corners=False)[0, 0]
                # Geometric blend: the fine mask reshapes the evidence but cannot create a
                # peak where the calibrated scores saw nothing; rescaled to the score map's
                # peak so it cannot erase a detection either (the decoder was trained on one
                # feature type, and its fine mask runs low on others).
                blend = score_map.clamp_min(1e-6) ** (1 - a) * fine.clamp_min(1e-6) ** a
                anomaly_map = blend * (score_map.max() / blend.max().clamp_min(1e-12))
        timings["grounding"] = (time.perf_counter() - t0) * 1e3

        # ---- postprocess ----------------------------------------------------------------
        t0 = time.perf_counter()
        amap = anomaly_map.float().cpu().numpy().astype(np.float32)
        mask = (amap >= self._mask_threshold(threshold, float(amap.max()))) if is_anom else \
            np.zeros((H, W), bool)
        mask = self._clean(mask)
        regions, hyps = self._regions(mask, amap, modality_maps, threshold, frame, ground,
                                      used, scored["aligned"], scored["tinted"])
        entries: Dict[str, torch.Tensor] = {}  # key -> this part's memory entry
        if update_memory:
            self._decide_surface(frame)
            self._decide_symmetry(frame, scored["symmetric"])
            for m in scored["keys"]:
                st = state[m]
                for key in (m, m + INTRA, m + SYM):
                    if key in raw_scores and raw_scores[key][2]:
                        state[key].raw_scores.append(raw_scores[key][0])
                        state[key].raw_spreads.append(raw_scores[key][1])
                if m in pending:
                    # pinned orientations count against memory_size (at least one streamed part
                    # is kept), so teaching does not make scoring slower than streaming
                    cap = max(1, self.config.memory_size - len(st.pinned))
                    if st.memory.maxlen != cap:
                        st.memory = deque(st.memory, maxlen=cap)
                    entry = pending[m].result()
                    st.memory.append(entry)
                    self._remember_early(st, feats[m], entry)
                    entries[m] = entry
            if not confident and self.config.revise_warm_up:
                self._hold(frame, entries)
        timings["postprocess"] = (time.perf_counter() - t0) * 1e3
        det = Detection(anomaly_map=np.clip(amap, 0, 1), pred_mask=mask,
                        pred_score=float(pred_score), threshold=float(threshold),
                        modality_scores={m: float(sc.squash(v)) for m, v in by_modality.items()},
                        modalities_present=present, regions=regions, hypotheses=hyps,
                        modality_maps=modality_maps, timings_ms=timings,
                        model_id=self.model_id, confident=confident)
        return self._finish(det, frame, timings, t_start)

    # ---- a stream's warm-up: held, then revised ------------------------------------------
    def _hold(self, frame: Frame, entries: Dict[str, torch.Tensor]) -> None:
        held = self._held.setdefault(frame.stream, [])
        held.append((frame, entries))
        if len(held) > MAX_HELD_PARTS:
            held.pop(0)
            self.unrevised[frame.stream] = self.unrevised.get(frame.stream, 0) + 1

    def held_parts(self, stream: Optional[str] = None) -> int:
        """Parts of `stream` (or of every stream) held through its warm-up, awaiting
        revision."""
        if stream is not None:
            return len(self._held.get(stream, []))
        return sum(len(v) for v in list(self._held.values()))

    def _calibrated(self, frame: Frame) -> bool:
        """Whether every feature memory that would score `frame` now has a memory and the
        stream's own calibration (history or references), as `_score` would find them."""
        state = self._streams.get(frame.stream)
        if state is None:
            return False
        used = [m for m in self.config.modalities if frame.present[m]]
        keys = used if self.own_image_scored(frame.stream) else self._keys(used)
        return bool(keys) and all(
            (state[k].pinned or state[k].memory) and state[k].calibrated(self.config.min_history)
            for k in keys)

    @torch.inference_mode()
    def revise_held(self, stream: Optional[str] = None) -> List[Tuple[Frame, Detection]]:
        """Score again the held parts of `stream` (or of every stream) that the stream can now
        calibrate, and let them go: [(frame as given to `detect`, revised Detection)], oldest
        first, each marked `revision=True`.

        A part of an untaught stream's warm-up is scored before the stream's history exists
        (on its own statistics, then against the few parts seen so far) and published as not
        confident; a cell holds such a part (report status unknown). Once the history calibrates
        the stream, the part is scored like any later part: against the memory without its own
        entry (a part must not match itself), memory and history left unchanged. Call after
        each `detect` (which leaves it to the caller, so that the part just scored is reported
        first); it costs one scoring per revised part, all of them at the end of the warm-up.
        A part whose second scoring fails keeps its first report (counted in `unrevised`)."""
        out = []
        for name in ([stream] if stream is not None else list(self._held)):
            ready, waiting = [], []
            for item in self._held.get(name, []):
                (ready if self._calibrated(item[0]) else waiting).append(item)
            if not ready:
                continue
            self._held[name] = waiting
            state = self._streams.get(name, {})
            for frame, entries in ready:
                kept = {k: list(state[k].memory) for k in entries}
                for k, entry in entries.items():  # the part's own entries, where still kept
                    st = state[k]
                    st.memory = deque((e for e in st.memory if e is not entry),
                                      maxlen=st.memory.maxlen)
                try:
                    with _torch_threads_but_one():
                        det = self._detect(frame, update_memory=False)
                except Exception:  # it scored once, so this is no input error: its first
                    self.unrevised[name] = self.unrevised.get(name, 0) + 1  # report stands
                    continue
                finally:
                    for k, memory in kept.items():
                        state[k].memory = deque(memory, maxlen=state[k].memory.maxlen)
                det.revision = True
                out.append((frame, det))
        return out

    def _combine_views(self, m: str, cscores: Dict[str, float], views: Dict[str, float],
                       calibration: Dict[str, tuple]) -> tuple:
        """(c, weight) of modality m from its feature views' scores: under `fusion: max` their
        maximum (weight 1); else their sum over its standard deviation on normal parts, from
        the views' correlation on the normal scores that calibrate them
        (`scoring.correlated_weight`), with that deviation as its weight in the part's Stouffer
        sum. So every view is a vote, as in Stouffer's combination of dependent tests: two
        views that agree on normal parts count about once, two that err apart about twice."""
        keys = [k for k in self.views.get(m, []) if k in views]
        terms = [cscores[m]] + [views[k] for k in keys]
        if self.config.fusion == "max":
            return max(terms), 1.0
        w = sc.correlated_weight([calibration.get(k, ()) for k in [m] + keys], len(terms))
        return sum(terms) / w, w

    def _mask_threshold(self, threshold: float, peak: float) -> float:
        """Pixel threshold of the mask of a flagged part. A lenient part-level operating point
        (a high target false-alarm rate) must not smear the mask over normal texture: pixels
        need the strict (1 %) calibrated level of the max over modalities (the pixel fusion),
        or, for a part flagged below that level, the midway between the threshold and the part's
        peak. A part flagged on evidence spread over modalities, none of whose pixels reaches
        the threshold, gets no region: the map cannot say where."""
        n = len(self.config.modalities)
        strict = sc.squash(sc.calibrated_threshold(min(self.config.target_false_alarm_rate,
                                                       MASK_FALSE_ALARM_RATE), n, "max"))
        return max(threshold, min(strict, 0.5 * (peak + threshold)))

    def _language_cmap(self, lmap: torch.Tensor, stream: str) -> torch.Tensor:
        """Calibrate the WinCLIP-style language map like a modality map (own stats, stored
        under a private key of the stream state)."""
        st = self._streams[stream].setdefault("rgb:language", sc.ModalityState(memory=deque()))
        stats = (st.score_stats(self.config.min_history, self._quantile())
                 or sc.cold_start_stats(lmap))
        inner = sc.inner(lmap, self.config.score_margin)
        st.raw_scores.append(float(sc.topk_mean(inner)))
        st.raw_spreads.append(sc.spread(inner))
        return (lmap - stats.loc) / stats.scale

    @staticmethod
    def _upsample(maps: Dict[str, torch.Tensor], size: tuple) -> Dict[str, torch.Tensor]:
        """Each (h, w) map brought to `size` (bilinear), smoothed by a Gaussian of about half a
        patch. The maps of one grid go through in one batch: the values of one by one, in
        two thirds of the time (three maps)."""
        out = {}
        for grid in {tuple(v.shape) for v in maps.values()}:
            keys = [m for m, v in maps.items() if tuple(v.shape) == grid]
            up = F.interpolate(torch.stack([maps[m] for m in keys])[:, None].float(), size=size,
                               mode="bilinear", align_corners=False)
            sigma = max(1.0, 0.5 * size[0] / grid[0])
            k = int(2 * round(2 * sigma) + 1)
            x = torch.arange(k, device=up.device, dtype=torch.float32) - k // 2
            g = torch.exp(-x ** 2 / (2 * sigma ** 2))
            g = g / g.sum()
            up = F.conv2d(F.pad(up, (k // 2, k // 2, 0, 0), mode="replicate"), g.view(1, 1, 1, k))
            up = F.conv2d(F.pad(up, (0, 0, k // 2, k // 2), mode="replicate"), g.view(1, 1, k, 1))
            out.update(zip(keys, up[:, 0]))
        return {m: out[m] for m in maps}

    def _clean(self, mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return mask
        lab, n = ndimage.label(mask)
        if n == 0:
            return mask
        areas = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
        keep = np.zeros(n + 1, bool)
        keep[1:] = areas >= self.config.min_region_area_px
        return keep[lab]

    def _regions(self, mask, amap, modality_maps, threshold, frame, ground, used,
                 aligned=None, tinted=None):
        """The flagged part's regions and their grounding hypotheses. A region is typed by the
        most similar defect sentence its evidence allows, or by what the aligned comparison
        (`aligned`: {modality: `aligned.Comparison`}) finds in it: material missing or extra
        (`_material_type`), else a surface higher than the references' (`_relief_sign`), else
        specks that tint it (`tinted`: the hue specks' calibrated map) where the height map
        says neither higher nor lower and no modality but RGB sees the region."""
        regions: List[DefectRegion] = []
        hyps: List[Hypothesis] = []
        if not mask.any():
            return regions, hyps
        lab, n = ndimage.label(mask)
        H, W = mask.shape
        material = _material(aligned, (H, W)) if aligned else None  # None: not known
        relief = _relief(aligned, (H, W)) if aligned else None
        tint = None if tinted is None else sc.squash(torch.from_numpy(
            _nearest(tinted, (H, W)))).numpy()
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            reg = lab == i
            ys, xs = np.nonzero(reg)
            conf = float(amap[reg].max())
            mods = [m for m in used if m in modality_maps and
                    float(modality_maps[m][reg].max()) >= threshold]
            if not frame.registered:  # only the RGB map is on this grid
                mods = [m for m in mods if m == RGB] or [max(
                    modality_maps, key=lambda k: float(modality_maps[k].max()))]
            dtype, hyp = UNKNOWN_TYPE, None
            # what the comparison in register says of the region, if anything: the material
            # missing or extra in it, else whether it lies higher than the references' surface
            # (lower: sign < 0)
            sign = _relief_sign(reg, *relief) if relief is not None else 0
            said = (_material_type(reg, *material, mods, frame.sensor_type)
                    if material is not None else None)
            if said is None and sign > 0 and type_fits_evidence(RAISED_TYPE, mods,
                                                                frame.sensor_type):
                said = RAISED_TYPE
            # matter on the surface shows in the colour image alone: a crack that tints a
            # coloured part also shows in the second sensor's image or the geometry's
            if (said is None and sign == 0 and relief is not None and tint is not None
                    and float(tint[reg].max()) >= threshold and mods == [RGB]):
                said = TINTED_TYPE
            if ground is not None:
                gh, gw = ground.attention.shape[-2:]
                small = F.interpolate(torch.from_numpy(reg.astype(np.float32))[None, None],
                                      size=(gh, gw), mode="area")[0, 0].to(self.device)
                if small.sum() > 0:
                    sims = self.grounding.region_sentence_scores(ground, small, self._defect_text)
                    # the most similar sentence among the types the region's evidence allows (a
                    # region only the X-ray sees is no dent; no piece is missing where the
                    # comparison in register found the part's material whole, and a region it
                    # found sunk is no bump); all of them when none fits
                    fits = torch.tensor([type_fits_evidence(t, mods, frame.sensor_type)
                                         and not (t == MISSING_TYPE and material is not None
                                                  and said != MISSING_TYPE)
                                         and not (t == RAISED_TYPE and sign < 0)
                                         for t in self.sentence_types], device=sims.device)
                    if bool(fits.any()):
                        sims = sims.masked_fill(~fits, float("-inf"))
                    j = int(sims.argmax())
                    dtype = self.sentence_types[j]
                    hyp = Hypothesis(sentence=self.sentences[j], defect_type=dtype,
                                     similarity=float(sims[j]),
                                     slot=int((ground.attention[0] * small[None]).sum((1, 2))
                                              .argmax()))
                    hyps.append(hyp)
            dtype = said or dtype
            frac = len(ys) / float(H * W)
            severity = ("critical" if conf >= 0.95 and frac >= 0.02 else
                        "major" if conf >= 0.8 or frac >= 0.01 else "minor")
            c3d = centroid_3d(frame.points, reg, frame.intrinsics) \
                if frame.points is not None and frame.registered else None
            regions.append(DefectRegion(
                defect_type=dtype, confidence=conf,
                bbox_xywh=(int(sl[1].start), int(sl[0].start), int(sl[1].stop - sl[1].start),
                           int(sl[0].stop - sl[0].start)),
                area_px=int(len(ys)), centroid_px=(float(xs.mean()), float(ys.mean())),
                centroid_3d=c3d, modalities=mods, severity=severity))
        return regions, hyps

    def _finish(self, det: Detection, frame: Frame, timings: dict, t_start: float) -> Detection:
        t0 = time.perf_counter()
        from .report import finalize_report

        det.report, det.rule_results = finalize_report(
            det, frame, min_region_area_px=self.config.min_region_area_px)
        timings["report"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return det


def _modality(key: str) -> str:
    """The modality of a feature view's key ("rgb+patchstats" -> "rgb")."""
    return key.split(VIEW, 1)[0]


@contextmanager
def _torch_threads_but_one():
    """torch's intra-op threads in the calling thread one fewer (at least one) inside the block,
    where the detector's comparison thread works beside it (with one torch thread of its own:
    `Detector._comparison_worker`); the count is restored after it."""
    n = torch.get_num_threads()
    if n < 2:
        yield
        return
    torch.set_num_threads(n - 1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _fold_map(cmaps: Dict[str, torch.Tensor], m: str, dev: np.ndarray, loc: float,
              scale: float) -> None:
    """Fold a pixel comparison's deviation map into modality m's calibrated map (in place):
    on the feature grid, keeping each cell's peak (the image score is a peak too), calibrated
    as (dev - loc) / scale (mostly the loc / scale of the comparison's normal image scores).
    Only cells where the comparison found a difference count: where it found none (a part
    that matches its mirror image within the tolerance, the background) its calibrated value
    would lift the map's floor and flatten its ranking of the part against the rest."""
    d = torch.from_numpy(np.ascontiguousarray(dev, np.float32)).to(cmaps[m].device)
    small = F.adaptive_max_pool2d(d[None, None], cmaps[m].shape)[0, 0]
    z = (small - loc) / scale
    cmaps[m] = torch.where(small > 0, torch.maximum(cmaps[m], z), cmaps[m])


def _hue_map(coloured: bool):
    """The hue-speck map of a part that carries colour (`hue_specks.coloured_speck_map`) or
    of a grey one (`hue_specks.speck_map`)."""
    return hue_specks.coloured_speck_map if coloured else hue_specks.speck_map


def _speck_map(compared: tuple, find) -> Optional[np.ndarray]:
    """A part's speck map `find` (`_hue_map`'s, `brightness_specks.speck_map`) from its
    comparison images (`Detector._comparison_images`); None without a colour rendering or a
    height map, or where the height map shows no part."""
    out, colour = compared
    if colour is None or GEOMETRY not in out:
        return None
    return find(colour, out[GEOMETRY])


def _material(aligned: dict, shape) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(missing, extra, hole) material of a part compared in register (`Comparison.material`)
    as (H, W) bool masks of `shape`, from its height map where the height says where there is
    material (a part on a table: `VariationModel.level`); None otherwise. A foreground says it
    less surely (the cast shadow fills a missing tooth's gap), and a board that fills the view
    stands on no table: there a crack and a bump came out as extra and missing material."""
    compared = aligned.get(GEOMETRY)
    if compared is None or compared.model.level is None:
        return None
    return tuple(_nearest(m, shape) for m in compared.material())


def _nearest(x: np.ndarray, shape) -> np.ndarray:
    """(h, w) map -> `shape`, nearest pixel."""
    h, w = x.shape
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h // shape[0], h - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w // shape[1], w - 1).astype(int)
    return x[np.ix_(rows, cols)]


def _material_type(region: np.ndarray, missing: np.ndarray, extra: np.ndarray,
                   hole: np.ndarray, modalities, sensor_type: str) -> Optional[str]:
    """MISSING_TYPE (HOLE_TYPE where most of it is enclosed by the part) or EXTRA_TYPE where
    that material covers at least MATERIAL_MIN_PX pixels and MATERIAL_SHARE of the region
    (the larger of the two where both do) and the region's evidence allows the type; None
    otherwise."""
    px = {MISSING_TYPE: int((region & missing).sum()), EXTRA_TYPE: int((region & extra).sum())}
    kind = max(px, key=px.get)
    if px[kind] < max(MATERIAL_MIN_PX, MATERIAL_SHARE * region.sum()):
        return None
    if kind == MISSING_TYPE and 2 * int((region & hole).sum()) > px[kind]:
        kind = HOLE_TYPE
    return kind if type_fits_evidence(kind, modalities, sensor_type) else None


def _relief(aligned: dict, shape) -> Optional[Tuple[np.ndarray, float]]:
    """(the height map's `Comparison.relief` as an (H, W) map of `shape` (nearest pixel), the
    deviation [spread units] beyond which it counts: its model's `material_band`), or None
    where the part's height map was not compared in register."""
    compared = aligned.get(GEOMETRY)
    if compared is None:
        return None
    return _nearest(compared.relief(), shape), compared.model.config.material_band


def _relief_sign(region: np.ndarray, relief: np.ndarray, band: float) -> int:
    """1 where the region lies higher than the references' surface, -1 where lower, 0 where
    the height map does not say (fewer than MATERIAL_MIN_PX of its pixels beyond `band`, or
    neither side twice the other's)."""
    raised = int((relief[region] > band).sum())
    sunk = int((relief[region] < -band).sum())
    if max(raised, sunk) < MATERIAL_MIN_PX:
        return 0
    return 1 if raised > 2 * sunk else -1 if sunk > 2 * raised else 0


def _part_spread(dev: np.ndarray, fg: np.ndarray) -> float:
    """95th percentile - median of a deviation map on the part: its within-part spread."""
    v = np.asarray(dev, np.float32)[np.asarray(fg, bool)]
    return float(np.percentile(v, 95) - np.median(v)) if v.size else 0.0


def _rgb_array(frame: Frame) -> np.ndarray:
    """The frame's RGB image as uint8, or float clipped to [0, 1] (NaN -> 0)."""
    rgb = np.asarray(frame.rgb)
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.nan_to_num(rgb.astype(np.float32)), 0, 1)
    return rgb


def _intensity(image):
    """The first channel of a comparison image, as a one-channel image of the same layout:
    (C, H, W) tensors, (H, W) or (H, W, C) arrays (the height map is an (H, W) array)."""
    if isinstance(image, torch.Tensor):
        return image[:1]
    return as_hwc(image)[..., :1]


def _grey_tensor(image) -> bool:
    """Whether a comparison image is a (3, H, W) tensor of three equal channels."""
    return (isinstance(image, torch.Tensor) and image.shape[0] == 3
            and bool((image[1:] == image[:1]).all()))


def _surface_image(frame: Frame) -> Optional[np.ndarray]:
    """The image a stream's texture test looks at: RGB, else the second sensor's."""
    if frame.rgb is not None:
        return _rgb_array(frame)
    return None if frame.sensor is None else np.asarray(frame.sensor)


def _rotate(img: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate a (C, H, W) image about its centre; borders are extended (not zero-filled) so the
    rotation adds no artificial edges."""
    c, s_ = float(np.cos(angle)), float(np.sin(angle))
    theta = torch.tensor([[c, -s_, 0.0], [s_, c, 0.0]], dtype=img.dtype, device=img.device)
    grid = F.affine_grid(theta[None], (1,) + tuple(img.shape), align_corners=False)
    return F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0]
