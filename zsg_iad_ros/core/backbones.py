"""Feature extractors: the built-in network (weights shipped with the package) and transformers
checkpoints (CLIP / SigLIP vision towers, DINOv2) by hub id or local path, offline.

Every backbone maps a batch of 3-channel images in [0, 1] to a patch feature map:
``features(images (B, 3, S, S) float32) -> (B, C, h, w) float32`` with L2-normalised channel
groups, so distances between patches are comparable across parts. Sensor and geometry maps are
fed as 3-channel images (see ``to_three_channels``).
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .medians import median

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUILTIN_WEIGHTS = WEIGHTS_DIR / "builtin_backbone.safetensors"


class ModelLoadError(RuntimeError):
    """A model, its weights or the requested device could not be loaded; the message names the
    path, hub id or device that failed."""


def select_device(spec: str = "auto") -> torch.device:
    """'auto' -> first CUDA device when present, else CPU; 'cpu'; 'cuda' / 'cuda:N' (clear error
    when CUDA or that index is missing)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {spec!r} requested but CUDA is not available on this "
                                 "machine (use device='auto' or 'cpu')")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {spec!r} requested but only "
                                 f"{torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    raise ModelLoadError(f"unknown device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def load_safetensors(path, device="cpu") -> dict:
    """Load a weights file the safe way (never pickle); ModelLoadError names the path."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # corrupt header, not a safetensors file, ...
        raise ModelLoadError(f"cannot read weights file {path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Built-in network
# --------------------------------------------------------------------------------------------
class BuiltinNet(nn.Module):
    """Small 3-stage CNN (about 0.1 M parameters). Stages at strides 2, 4, 8.

    Trained self-supervised (masked denoising reconstruction) on the auxiliary synthetic split by
    ``zsg_iad_ros.training.train_grounding --stage backbone``; the decoder is only used there."""

    widths = (32, 64, 96)

    def __init__(self):
        super().__init__()
        c1, c2, c3 = self.widths

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o),
                                 nn.GELU(), nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o),
                                 nn.GELU())

        self.stage1 = block(3, c1)
        self.stage2 = block(c1, c2)
        self.stage3 = block(c2, c3)
        # Reconstruction head for the self-supervised objective (not used at inference).
        self.decoder = nn.Sequential(nn.Conv2d(c1 + c2 + c3, 64, 3, padding=1), nn.GELU(),
                                     nn.Conv2d(64, 3 * 64, 1), nn.PixelShuffle(8))

    def stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        s1 = self.stage1(x)
        s2 = self.stage2(s1)
        s3 = self.stage3(s2)
        return [s1, s2, s3]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stages(x)
        h, w = s[2].shape[-2:]
        f = torch.cat([F.adaptive_avg_pool2d(t, (h, w)) for t in s], 1)
        return torch.sigmoid(self.decoder(f))


def _normalise_groups(groups: List[torch.Tensor]) -> torch.Tensor:
    """L2-normalise each channel group per patch and concatenate with equal weight."""
    n = len(groups)
    return torch.cat([F.normalize(g.float(), dim=1) / np.sqrt(n) for g in groups], 1)


class BuiltinBackbone:
    """The shipped network: features = [input colour, stage1, stage2, stage3] pooled to stride 8.

    Groups are NOT L2-normalised per patch (that would discard how strongly a filter responds,
    which is what a faint hot spot or stain changes); each learned group is divided by the square
    root of its width so every group weighs about the same. The raw colour group lets plain
    colour / intensity changes count even where the learned filters are insensitive to them."""

    has_text = False
    stride = 8
    #: weight of the learned groups relative to the colour group (chosen on auxiliary
    #: categories: 0.3 beat 0 and 1 on object categories, tied on surfaces)
    learned_weight = 0.3

    def __init__(self, device: torch.device, weights: Optional[Path] = None):
        self.device = device
        path = Path(weights) if weights else BUILTIN_WEIGHTS
        self.net = BuiltinNet()
        state = load_safetensors(path)
        try:
            self.net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"weights file {path} does not fit the built-in network: {exc}")
        self.net.eval().to(device)
        self.model_id = f"builtin:{path.name}"

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        s = self.net.stages(x)
        h, w = s[2].shape[-2:]
        colour = F.adaptive_avg_pool2d(x, (h, w))
        groups = [F.adaptive_avg_pool2d(t, (h, w)) for t in s[:2]] + [s[2]]
        wl = self.learned_weight
        return torch.cat([colour] + [wl * g / np.sqrt(g.shape[1]) for g in groups], 1)


class PatchStatsBackbone:
    """Hand-made features, no learning: per 8 x 8 patch and input channel the mean, the standard
    deviation and the mean gradient magnitude (9 values for a 3-channel image).

    The baseline every learned backbone is measured against, and a candidate in its own right
    for smooth fields (thermal, X-ray, geometry maps) whose defects change the local level or
    contrast rather than a texture. Written here: a few lines of torch."""

    has_text = False
    stride = 8
    model_id = "patchstats"

    def __init__(self, device: torch.device):
        self.device = device

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        s = self.stride
        mean = F.avg_pool2d(x, s)
        std = (F.avg_pool2d(x * x, s) - mean * mean).clamp_min(0).sqrt()
        gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (1, 0))
        gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 1, 0))
        grad = F.avg_pool2d((gx * gx + gy * gy).sqrt(), s)
        return torch.cat([mean, std, grad], 1)


# --------------------------------------------------------------------------------------------
# transformers checkpoints
# --------------------------------------------------------------------------------------------
_MEANS = {"clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
          "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
          "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def checkpoint_source(spec: str, what: str = "backbone") -> str:
    """'local' for an existing path, 'hub' for a hub id ('name' or 'namespace/name').
    ModelLoadError, naming it, for a path that does not exist or a string that is neither."""
    path = Path(spec).expanduser()
    if path.exists():
        return "local"
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1 \
            or os.sep in spec.replace("/", ""):
        shown = spec if str(path) == spec else f"{spec} ({path.absolute()})"
        raise ModelLoadError(f"{what}: local path {shown} does not exist")
    if not _HUB_ID.match(spec):
        raise ModelLoadError(f"{what}: {spec!r} is neither an existing local path nor a hub id "
                             "('name' or 'namespace/name')")
    return "hub"


def _offline_kwargs(name: str) -> dict:
    local = Path(name).expanduser().exists()
    return {"local_files_only": local or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")}


class TransformersBackbone:
    """CLIP / SigLIP (vision tower, plus the text tower for language scores) or DINOv2.

    Patch tokens of two intermediate layers and the last one (special tokens dropped) are
    reshaped to the patch grid; each layer is an L2-normalised group, as in MuSc/WinCLIP."""

    def __init__(self, name: str, device: torch.device):
        import transformers
        from transformers import AutoConfig

        self.device = device
        self.name = name
        source = checkpoint_source(name)
        kw = _offline_kwargs(name)
        try:
            config = AutoConfig.from_pretrained(name, **kw)
        except Exception as exc:
            where = f"local directory {Path(name).expanduser()}" if source == "local" else \
                f"hub id {name!r}" + (" (not in the local Hugging Face cache, and downloads "
                                      "are off)" if kw["local_files_only"] else "")
            raise ModelLoadError(
                f"cannot load a transformers config from {where}: {exc}") from exc
        mt = config.model_type
        classes = {"clip": "CLIPModel", "siglip": "SiglipModel", "siglip2": "Siglip2Model",
                   "dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel",
                   "clip_vision_model": "CLIPVisionModel",
                   "siglip_vision_model": "SiglipVisionModel"}
        if mt not in classes:
            raise ModelLoadError(f"{name!r}: unsupported model_type {mt!r} (supported: "
                                 f"{', '.join(sorted(classes))})")
        self.family = "clip" if mt.startswith("clip") else "siglip" if mt.startswith("siglip") \
            else "dinov2"
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        try:
            cls = getattr(transformers, classes[mt])
            self.model = cls.from_pretrained(name, dtype=dtype, **kw).eval().to(device)
        except Exception as exc:
            raise ModelLoadError(f"cannot load weights of {name!r}: {exc}") from exc
        self.dtype = dtype
        vcfg = getattr(config, "vision_config", config)
        self.patch = int(vcfg.patch_size)
        self.input_size = int(vcfg.image_size)
        self.n_layers = int(vcfg.num_hidden_layers)
        self.n_special = 0 if self.family == "siglip" else 1 + int(
            getattr(vcfg, "num_register_tokens", 0) or 0)
        mean, std = _MEANS[self.family]
        try:  # the checkpoint's own normalisation when it ships a processor config
            from transformers import AutoImageProcessor
            proc = AutoImageProcessor.from_pretrained(name, **kw)
            mean, std = tuple(proc.image_mean), tuple(proc.image_std)
        except Exception:
            pass
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.stride = self.patch
        self.tokenizer = None
        self.has_text = False
        if self.family in ("clip", "siglip") and hasattr(self.model, "get_text_features"):
            try:
                from transformers import AutoTokenizer
                self.tokenizer = AutoTokenizer.from_pretrained(name, **kw)
                self.has_text = True
            except Exception:
                self.tokenizer = None  # no tokenizer shipped: language scores stay off
        self.model_id = name

    @property
    def vision(self):
        return getattr(self.model, "vision_model", self.model)

    def _tokens(self, images: torch.Tensor):
        x = F.interpolate(images.to(self.device, torch.float32), size=(self.input_size,) * 2,
                          mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std).to(self.dtype)
        out = self.vision(pixel_values=x, output_hidden_states=True)
        return out

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        g = self.input_size // self.patch
        t = tokens[:, self.n_special:self.n_special + g * g]
        return t.transpose(1, 2).reshape(t.shape[0], -1, g, g).float()

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        hs = self._tokens(images).hidden_states  # (n_layers + 1) x (B, T, D)
        L = self.n_layers
        picks = sorted({max(1, L // 2), max(1, (3 * L) // 4), L})
        return _normalise_groups([self._grid(hs[i]) for i in picks])

    @torch.inference_mode()
    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) patch tokens in the joint image-text space (CLIP: post-layernorm +
        visual projection; SigLIP: post-layernorm), L2-normalised."""
        out = self._tokens(images)
        t = out.last_hidden_state
        v = self.vision
        if hasattr(v, "post_layernorm"):
            t = v.post_layernorm(t)
        if self.family == "clip" and hasattr(self.model, "visual_projection"):
            t = self.model.visual_projection(t)
        return F.normalize(self._grid(t), dim=1)

    @torch.inference_mode()
    def encode_text(self, sentences: List[str]) -> torch.Tensor:
        if not self.has_text:
            raise ModelLoadError(f"{self.name!r} has no text tower / tokenizer")
        pad = "max_length" if self.family == "siglip" else True
        tok = self.tokenizer(list(sentences), padding=pad, truncation=True, return_tensors="pt",
                             max_length=min(64, getattr(self.tokenizer, "model_max_length", 64)))
        tok = {k: v.to(self.device) for k, v in tok.items()
               if k in ("input_ids", "attention_mask")}
        emb = self.model.get_text_features(**tok)
        if not torch.is_tensor(emb):  # some versions return a model output
            emb = emb.pooler_output
        return F.normalize(emb.float(), dim=-1)


def load_backbone(spec: str, device: torch.device):
    """'builtin' (shipped weights), 'patchstats' (hand-made), 'mobilenetv2' /
    'efficientnet_lite0' / 'dinov2_s_onnx' (ImageNet weights from pip packages, see
    pretrained.py), a path to a built-in safetensors
    file, or a transformers hub id / local checkpoint directory."""
    if spec == "builtin":
        return BuiltinBackbone(device)
    if spec == "patchstats":
        return PatchStatsBackbone(device)
    from .pretrained import PACKAGE_BACKBONES
    if spec in PACKAGE_BACKBONES:
        return PACKAGE_BACKBONES[spec](device)
    p = Path(spec).expanduser()
    if p.suffix == ".safetensors":
        return BuiltinBackbone(device, p)
    return TransformersBackbone(spec, device)


def to_three_channels(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) or (H, W, 3) float in [0, 1] (or uint8) -> (3, size, size) float32 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(image))
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if t.ndim == 2:
        t = t[None].expand(3, -1, -1)
    elif t.ndim == 3 and t.shape[-1] == 3:
        t = t.permute(2, 0, 1)
    else:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {tuple(image.shape)}")
    return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def rgb_image(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 (or float in [0, 1]) -> (3, size, size) float32 in [0, 1]:
    [luminance, fine band-pass, coarse band-pass] of the luminance, built like `sensor_image`.

    Luminance, robustly normalised per image, makes the map independent of exposure, white
    balance and of the hue of the part (parts of one type come in several colours), while
    stains, specks, scratches and holes still change it; the band-pass channels carry texture
    and small marks. A change of hue at constant luminance is therefore not seen."""
    a = np.asarray(rgb)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else np.asarray(a, np.float32)
    lum = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return to_three_channels(_bands(robust_normalise(lum, "thermal")), size)


def chromaticity(colour: torch.Tensor) -> torch.Tensor:
    """(3, H, W) colour image in [0, 1] -> (2, H, W): each pixel's red and green share of its
    intensity (blue is the rest), white-balanced per image. Shading, highlights and shadows
    scale the three channels alike and cancel out; a change of hue at constant luminance (a
    cap of the other colour, a brown speck), which `rgb_image` cannot see, stays. The white
    balance divides each channel by its median share over the image (mostly the table's):
    shares, unlike the channels' own medians, do not move with the shading."""
    share = colour / colour.sum(0, keepdim=True).clamp_min(1e-3)
    c = colour / median(share.flatten(1), 1).clamp_min(1e-3)[:, None, None]
    # near-black pixels have no reliable hue: their share shrinks towards 0
    return c[:2] / c.sum(0, keepdim=True).clamp_min(0.15)


def robust_normalise(sensor: np.ndarray, sensor_type: str = "thermal") -> np.ndarray:
    """Per-image robust normalisation of a thermal / X-ray image to [0, 1] (float32).

    Thermal: (x - p1) / (p99 - p1) so the part's own temperature range fills the scale whatever
    the absolute level. X-ray: the same on -log(intensity) (attenuation), so thickness and
    inclusions read additively. NaN/inf become the median."""
    x = np.asarray(sensor, dtype=np.float32)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"sensor image must be (H, W), got {x.shape}")
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros_like(x)
    if sensor_type == "xray":
        pos = finite & (x > 0)
        floor = np.min(x[pos]) if pos.any() else 1.0
        x = -np.log(np.clip(np.where(finite, x, floor), floor * 0.5 if floor > 0 else 1e-6, None))
    med = float(np.median(x[finite]))
    x = np.where(finite, x, med)
    lo, hi = np.percentile(x, [1, 99])
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def sensor_image(sensor: np.ndarray, sensor_type: str = "thermal") -> np.ndarray:
    """(H, W) raw thermal / X-ray image -> (H, W, 3) float32 in [0, 1] for a backbone:
    [robustly normalised intensity, fine band-pass (sigma 1-4 px), coarse band-pass (4-16 px)].

    Thermal and X-ray images are smooth fields whose defects are local blobs; the band-pass
    channels make a blob of a few tenths of a kelvin stand out whatever the part's overall
    temperature gradient. Each band is scaled by its bulk (4 x median |band|) and compressed by
    tanh around 0.5, so a small defect does not change the scale of the rest."""
    return _bands(robust_normalise(sensor, sensor_type))


@lru_cache(maxsize=8)
def _gaussian_operator(n: int, sigma: float) -> torch.Tensor:
    """(n, n) float32 G with G @ x = scipy.ndimage.gaussian_filter1d(x, sigma, axis=0), edges
    and truncation included (the filter applied to the identity's columns)."""
    from scipy import ndimage

    return torch.from_numpy(ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0).astype(np.float32))


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(x, sigma) of an (H, W) image, in float32 (to 1e-6), as two
    matrix products where the image is small for the kernel. The products take H + W
    multiply-adds per pixel and the convolution twice its taps, but the convolution's are
    about 15 times slower (256 px: 0.7-0.8 ms at sigma 4, 6 and 16 against 1.5, 2.3 and 6.4
    ms): the products are taken while H + W is at most 8 times the convolution's
    multiply-adds. torch, not numpy: its thread count is the one the detector sets while a
    second thread works."""
    from scipy import ndimage

    h, w = x.shape
    taps = 2 * int(4.0 * sigma + 0.5) + 1  # scipy's default truncation, 4 sigma
    if h + w > 8 * 2 * taps:
        return ndimage.gaussian_filter(np.asarray(x, np.float32), sigma)
    gv, gu = _gaussian_operator(h, float(sigma)), _gaussian_operator(w, float(sigma))
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    return (gv @ t @ gu.T).numpy()


def _bands(x: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3): [x, fine band-pass, coarse band-pass], bands scaled by
    their bulk (4 x median |band|) and tanh-compressed around 0.5."""
    from scipy import ndimage

    g1 = ndimage.gaussian_filter(x, 1.0)
    g4, g16 = gaussian_blur(x, 4.0), gaussian_blur(x, 16.0)
    bands = []
    for b in (g1 - g4, g4 - g16):
        s = max(4.0 * float(np.median(np.abs(b))), 1e-3)
        bands.append(0.5 + 0.5 * np.tanh(b / s))
    return np.stack([x] + bands, -1).astype(np.float32)
