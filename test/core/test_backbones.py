"""Backbone loading: tiny random transformers checkpoints saved to disk and reloaded offline
through the same path as real ones; device selection; safe weight loading errors."""
import numpy as np
import pytest
import torch

from zsg_iad_ros.core.backbones import (BuiltinBackbone, ModelLoadError, TransformersBackbone,
                                        checkpoint_source, chromaticity, load_backbone,
                                        rgb_image, select_device, sensor_image)


def _tiny_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["a photo of a flawless object", "a damaged broken object with a crack",
              "perfect unblemished industrial close-up cropped photo of the object defect",
              "without flaw damage scratch"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=16)
    fast.save_pretrained(path)
    return fast


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from transformers import (CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model, SiglipConfig,
                              SiglipModel)

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    vis = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
               image_size=64, patch_size=16)
    txt = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               vocab_size=120, max_position_embeddings=16)
    out = {}
    d = root / "clip"
    tok = _tiny_tokenizer(d)
    CLIPModel(CLIPConfig(vision_config=vis, text_config=dict(
        txt, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id), projection_dim=16)).save_pretrained(d)
    out["clip"] = d
    d = root / "siglip"
    tok = _tiny_tokenizer(d)
    SiglipModel(SiglipConfig(vision_config=vis, text_config=dict(
        txt, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))).save_pretrained(d)
    out["siglip"] = d
    d = root / "dinov2"
    Dinov2Model(Dinov2Config(**vis)).save_pretrained(d)
    out["dinov2"] = d
    return out


@pytest.mark.parametrize("name,has_text", [("clip", True), ("siglip", True), ("dinov2", False)])
def test_tiny_checkpoint_reloads_offline(tiny_models, monkeypatch, name, has_text):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = load_backbone(str(tiny_models[name]), torch.device("cpu"))
    assert isinstance(bb, TransformersBackbone) and bb.has_text == has_text
    x = torch.rand(2, 3, 96, 96)
    f = bb.features(x)
    assert f.shape == (2, 3 * 32, 4, 4) and torch.isfinite(f).all()
    # reload gives identical features (weights really come from disk, not a fresh init)
    f2 = load_backbone(str(tiny_models[name]), torch.device("cpu")).features(x)
    torch.testing.assert_close(f, f2)
    if has_text:
        t = bb.encode_text(["a photo of a flawless object", "a damaged object"])
        assert t.shape[0] == 2 and torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
        e = bb.patch_embeddings(x)
        assert e.shape[-2:] == (4, 4) and e.shape[1] == t.shape[1]


def test_detector_runs_on_tiny_clip_with_language_scores(tiny_models, detector_factory):
    from zsg_iad_ros.data.synthetic import generate_sample

    det = detector_factory(backbone=str(tiny_models["clip"]), grounding=False)
    assert det.model_id == str(tiny_models["clip"]) and det._language is not None
    s = generate_sample("wood", "good", 1, size=64)
    r = det.detect(s.frame)
    assert r.anomaly_map.shape == (64, 64) and 0 <= r.pred_score <= 1
    assert set(r.modality_scores) == {"rgb", "sensor", "geometry"}


def test_device_selection():
    assert select_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            select_device("cuda")
        with pytest.raises(ModelLoadError, match="cuda:1"):
            select_device("cuda:1")
    with pytest.raises(ModelLoadError, match="unknown device"):
        select_device("tpu")


def test_checkpoint_errors_name_the_path_or_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert checkpoint_source(str(tmp_path)) == "local"
    assert checkpoint_source("openai/clip-vit-base-patch16") == "hub"
    for path in ("/nonexistent/zsg_model_dir", "./models/x", "~/models/x", "a/b/c"):
        with pytest.raises(ModelLoadError, match=f"backbone: local path {path}.* does not exist"):
            load_backbone(path, torch.device("cpu"))
    with pytest.raises(ModelLoadError, match="neither an existing local path nor a hub id"):
        checkpoint_source("not a model!")
    with pytest.raises(ModelLoadError, match="hub id 'nobody/no-such-model'"):
        load_backbone("nobody/no-such-model", torch.device("cpu"))  # offline: not cached


def test_bad_paths_raise_model_load_error(tmp_path, detector_factory):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ModelLoadError, match="nope.safetensors"):
        BuiltinBackbone(torch.device("cpu"), missing)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        detector_factory(backbone=str(junk))
    with pytest.raises(ModelLoadError, match="missing_grounding"):
        detector_factory(grounding_weights=str(tmp_path / "missing_grounding.safetensors"))
    with pytest.raises(ModelLoadError, match="no_such_model_dir"):
        detector_factory(backbone=str(tmp_path / "no_such_model_dir"))
    # a pickled checkpoint is refused, never unpickled
    pkl = tmp_path / "ckpt.safetensors"
    torch.save({"w": torch.zeros(1)}, pkl)
    with pytest.raises(ModelLoadError, match="ckpt.safetensors"):
        detector_factory(grounding_weights=str(pkl))


def test_sensor_image_bands_highlight_a_blob():
    v, u = np.mgrid[0:64, 0:64].astype(np.float32)
    th = 300 + 0.05 * v + np.random.default_rng(0).normal(0, 0.05, (64, 64))  # NETD 50 mK
    th_spot = th + 1.0 * np.exp(-((u - 40) ** 2 + (v - 20) ** 2) / 18)
    a, b = sensor_image(th, "thermal"), sensor_image(th_spot, "thermal")
    assert a.shape == (64, 64, 3) and a.min() >= 0 and a.max() <= 1
    for band in (1, 2):  # the blob raises both band-pass channels locally, not elsewhere
        assert b[20, 40, band] > a[20, 40, band] + 0.25
        assert np.abs(b[40:, :, band] - a[40:, :, band]).mean() < 0.05
    xr = sensor_image(np.exp(-th_spot / 300), "xray")
    assert np.isfinite(xr).all()
    with pytest.raises(ValueError):
        sensor_image(np.zeros((4, 4, 3)), "thermal")


@pytest.mark.parametrize("shape", [(256, 256), (120, 200), (1100, 1900)])
@pytest.mark.parametrize("sigma", [4.0, 16.0])
def test_the_wide_blurs_are_scipys_gaussian(shape, sigma):
    """The band images' and hue specks' wider blurs (matrix products where the image is
    small, scipy's convolution where it is large) give scipy's Gaussian, edges included."""
    from scipy import ndimage

    from zsg_iad_ros.core.backbones import gaussian_blur

    x = np.random.default_rng(1).random(shape).astype(np.float32)
    x[: shape[0] // 3, : shape[1] // 4] += 2.0  # a bright corner: the edges' reflection counts
    got = gaussian_blur(x, sigma)
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ndimage.gaussian_filter(x, sigma), rtol=0, atol=2e-6)


def test_chromaticity_ignores_shading_and_white_balance_but_sees_hue():
    """A lamp's shading and colour scale the channels (alike, or per channel over the whole
    image): the hue channels do not move. A patch of another hue at the same luminance, which
    the luminance bands cannot see, stands out in them."""
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:64, 0:64].astype(np.float32)
    img = np.full((64, 64, 3), 0.45, np.float32) + rng.normal(0, 0.005, (64, 64, 3))
    img[16:48, 16:48] = (0.7, 0.45, 0.2)  # an orange part on a grey table
    t = torch.from_numpy(img).permute(2, 0, 1)
    base = chromaticity(t)
    assert base.shape == (2, 64, 64)
    shading = torch.from_numpy(0.6 + 0.4 * u / 63)[None]       # light falling off across it
    balance = torch.tensor([1.15, 1.0, 0.85])[:, None, None]   # a warmer lamp
    assert (chromaticity(t * shading) - base).abs().max() < 1e-4
    # the balance is taken from the table (the median share), so it cancels up to noise
    assert (chromaticity(t * balance) - base).abs().max() < 0.005
    d = np.array([0.15, -0.05, 0.0], np.float32)
    d[2] = -(0.299 * d[0] + 0.587 * d[1]) / 0.114                # same luminance
    tinted = img.copy()
    tinted[26:38, 26:38] += d
    lum_change = (rgb_image(tinted, 64) - rgb_image(img, 64)).abs().max()
    hue_change = (chromaticity(torch.from_numpy(tinted).permute(2, 0, 1)) - base).abs()
    assert lum_change < 0.02 and hue_change[:, 28:36, 28:36].min() > 0.02
    assert hue_change[:, :20].max() < 1e-4  # nothing changes away from the patch
