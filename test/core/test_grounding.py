"""Two-hop grounding module: shapes, slot competition, sentence selection, safe loading."""
import json

import pytest
import torch
import torch.nn.functional as F

from zsg_iad_ros.core.backbones import ModelLoadError
from zsg_iad_ros.core.grounding import (IN_CH, GroundingNet, SlotAttention, build_evidence,
                                        load_grounding)
from zsg_iad_ros.core.detector import GROUNDING_WEIGHTS


def test_slot_attention_partitions_tokens():
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=4, dim=16)
    slots, attn = sa(torch.randn(2, 50, 16))
    assert slots.shape == (2, 4, 16) and attn.shape == (2, 4, 50)
    torch.testing.assert_close(attn.sum(1), torch.ones(2, 50))  # slots compete per token


def test_grounding_forward_shapes_and_ranges():
    torch.manual_seed(0)
    net = GroundingNet(text_dim=12, dim=16, num_slots=3).eval()
    ev = torch.rand(2, IN_CH, 8, 8)
    out = net(ev, F.normalize(torch.randn(5, 12), dim=1), F.normalize(torch.randn(2, 12), dim=1))
    assert out.coarse.shape == (2, 8, 8) and out.fine.shape == (2, 16, 16)
    assert out.attention.shape == (2, 3, 8, 8) and out.slot_anomaly.shape == (2, 3)
    assert ((out.fine >= 0) & (out.fine <= 1)).all()
    assert ((out.coarse >= 0) & (out.coarse <= 1)).all()
    region = torch.zeros(8, 8)
    region[2:4, 2:4] = 1
    sims = net.region_sentence_scores(out, region, F.normalize(torch.randn(5, 12), dim=1))
    assert sims.shape == (5,) and (sims.abs() <= 1 + 1e-5).all()


def test_build_evidence_marks_missing_modalities():
    maps = {"rgb": torch.full((4, 4), 0.2), "geometry": torch.full((4, 4), 0.9)}
    imgs = {"rgb": torch.rand(3, 32, 32)}
    ev = build_evidence(maps, imgs, (4, 4))
    assert ev.shape == (IN_CH, 4, 4)
    assert torch.all(ev[1] == 0) and torch.all(ev[5] == 0)      # sensor map and flag
    assert torch.all(ev[4] == 1) and torch.all(ev[6] == 1)      # rgb, geometry present
    assert torch.allclose(ev[3], torch.full((4, 4), 0.9))       # max over modalities


def test_shipped_weights_load_and_record_exists():
    net, meta = load_grounding(GROUNDING_WEIGHTS, "cpu")
    cfg = json.loads(meta["config"])
    assert cfg["text_dim"] == 384 and 0.0 <= cfg["grounding_weight"] <= 1.0
    assert meta.get("split") == "aux"
    record = json.loads((GROUNDING_WEIGHTS.parent / "training_record.json").read_text())
    assert record["grounding"]["val_category"] not in ("cast_metal", "woven_fabric", "pcb",
                                                       "gear", "capsule")
    assert "command" in record["grounding"] and "final_loss" in record["backbone"]
    size = sum(p.stat().st_size for p in GROUNDING_WEIGHTS.parent.glob("*.safetensors"))
    assert size < 5 * 2 ** 20


def test_wrong_shape_weights_rejected(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "g.safetensors"
    save_file({"stem.0.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(ModelLoadError, match="g.safetensors"):
        load_grounding(bad, "cpu")
