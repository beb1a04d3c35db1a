"""Language-guided two-hop grounding.

Hop one (coarse support): evidence slots are distilled from the fused multimodal evidence by
slot attention; anomaly-describing sentences (encoded by a pretrained sentence encoder and
projected into slot space) compete with normal-surface sentences for each slot, and the
attention maps of the slots that the defect sentences select form the coarse support.
Hop two (fine mask): the selected slots modulate the evidence features through a channel gate
(from the selected slot vector) and a spatial gate (from the coarse support); a light decoder
turns the gated features into the fine mask.

The input is category-agnostic by design: per-modality calibrated mutual-scoring maps (the
residual evidence), which modalities are present, and the low-resolution modality images. The
module therefore learns to denoise and delineate evidence, not what a category looks like.

Shapes: evidence (B, IN_CH, h, w) float32 on the patch grid; sentences (S, E) normalised.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn as nn
import torch.nn.functional as F

from .frame import MODALITIES

#: evidence channels: 3 squashed calibrated maps, their max, 3 presence flags, 3 x 3 image channels
IN_CH = 3 + 1 + 3 + 9

NORMAL_SENTENCES = ["a flawless surface with no defect", "a normal region of the part",
                    "the background around the part", "an intact undamaged area"]


def build_evidence(calibrated: dict, images: dict, grid: tuple) -> torch.Tensor:
    """Assemble the (IN_CH, h, w) evidence tensor.

    calibrated: modality -> (h, w) squashed calibrated map in [0, 1] (absent modalities omitted);
    images: modality -> (3, S, S) modality image in [0, 1]."""
    h, w = grid
    dev = next(iter(calibrated.values())).device if calibrated else torch.device("cpu")
    maps, pres, imgs = [], [], []
    for m in MODALITIES:
        if m in calibrated:
            maps.append(calibrated[m].float())
            pres.append(torch.ones((h, w), device=dev))
        else:
            maps.append(torch.zeros((h, w), device=dev))
            pres.append(torch.zeros((h, w), device=dev))
        if m in images:
            imgs.append(F.adaptive_avg_pool2d(images[m][None].float().to(dev), (h, w))[0])
        else:
            imgs.append(torch.zeros((3, h, w), device=dev))
    mx = torch.stack(maps).max(0).values
    return torch.cat([torch.stack(maps), mx[None], torch.stack(pres), torch.cat(imgs)], 0)


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al. 2020): slots compete for input tokens (softmax over
    slots), then update by a GRU. torch has no built-in; this follows the paper's algorithm."""

    def __init__(self, num_slots: int, dim: int, iters: int = 3):
        super().__init__()
        self.num_slots, self.iters, self.scale = num_slots, iters, dim ** -0.5
        self.slots_init = nn.Parameter(torch.randn(1, num_slots, dim) * 0.5)
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))
        self.norm_in, self.norm_slots, self.norm_mlp = (nn.LayerNorm(dim) for _ in range(3))

    def forward(self, tokens: torch.Tensor):
        """tokens (B, N, D) -> slots (B, K, D), attention (B, K, N) (sums to 1 over K)."""
        B, N, D = tokens.shape
        x = self.norm_in(tokens)
        k, v = self.to_k(x), self.to_v(x)
        slots = self.slots_init.expand(B, -1, -1)
        for _ in range(self.iters):
            prev = slots
            q = self.to_q(self.norm_slots(slots))
            attn = torch.einsum("bkd,bnd->bkn", q, k).mul(self.scale).softmax(dim=1)
            w = attn / attn.sum(-1, keepdim=True).clamp_min(1e-8)
            updates = torch.einsum("bkn,bnd->bkd", w, v)
            slots = self.gru(updates.reshape(-1, D), prev.reshape(-1, D)).view(B, -1, D)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn


@dataclass
class GroundingOutput:
    """coarse (B, h, w) and fine (B, h', w') probabilities; slots (B, K, D);
    attention (B, K, h, w);
    slot_anomaly (B, K) probability that each slot is selected by a defect sentence."""

    coarse: torch.Tensor
    fine: torch.Tensor
    fine_logits: torch.Tensor
    slots: torch.Tensor
    attention: torch.Tensor
    slot_anomaly: torch.Tensor


class GroundingNet(nn.Module):
    """Two-hop grounding head (about 0.2 M parameters)."""

    def __init__(self, text_dim: int = 384, dim: int = 64, num_slots: int = 6):
        super().__init__()
        self.text_dim, self.dim, self.num_slots = text_dim, dim, num_slots
        self.stem = nn.Sequential(nn.Conv2d(IN_CH, dim, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(dim, dim, 3, padding=1), nn.GELU())
        self.pos = nn.Conv2d(2, dim, 1)  # coordinate embedding so slots can separate places
        self.slot_attn = SlotAttention(num_slots, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        self.slot_proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))
        self.channel_gate = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.spatial_gate = nn.Conv2d(dim + 1, 1, 3, padding=1)
        self.decoder = nn.Sequential(nn.Conv2d(dim + 2, 32, 3, padding=1), nn.GELU(),
                                     nn.Upsample(scale_factor=2, mode="bilinear",
                                                 align_corners=False),
                                     nn.Conv2d(32, 16, 3, padding=1), nn.GELU(),
                                     nn.Conv2d(16, 1, 1))

    def sentence_keys(self, sentences: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(sentences.float()), dim=-1)

    def slot_keys(self, slots: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.slot_proj(slots), dim=-1)

    def forward(self, evidence: torch.Tensor, defect_text: torch.Tensor,
                normal_text: torch.Tensor) -> GroundingOutput:
        B, _, h, w = evidence.shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=evidence.device),
                                torch.linspace(-1, 1, w, device=evidence.device), indexing="ij")
        feat = self.stem(evidence) + self.pos(torch.stack([yy, xx])[None])
        tokens = feat.flatten(2).transpose(1, 2)
        slots, attn = self.slot_attn(tokens)  # (B, K, D), (B, K, N)
        # Hop one: defect sentences vs normal sentences compete for each slot.
        keys = self.slot_keys(slots)
        text = torch.cat([self.sentence_keys(defect_text), self.sentence_keys(normal_text)])
        sim = torch.einsum("bkd,sd->bks", keys, text) * self.logit_scale.exp()
        p = sim.softmax(-1)
        slot_anomaly = p[..., :defect_text.shape[0]].sum(-1)  # (B, K)
        attn_map = attn.view(B, -1, h, w)
        coarse = torch.einsum("bk,bkhw->bhw", slot_anomaly, attn_map).clamp(0, 1)
        # Hop two: the selected slots gate the features by channel and by place.
        sel = slot_anomaly / slot_anomaly.sum(1, keepdim=True).clamp_min(1e-6)
        g = torch.einsum("bk,bkd->bd", sel, slots)
        ch = torch.sigmoid(self.channel_gate(g))[:, :, None, None]
        sp = torch.sigmoid(self.spatial_gate(torch.cat([feat, coarse[:, None]], 1)))
        gated = feat * ch * sp + feat
        logits = self.decoder(torch.cat([gated, coarse[:, None], evidence[:, 3:4]], 1))[:, 0]
        return GroundingOutput(coarse=coarse, fine=torch.sigmoid(logits), fine_logits=logits,
                               slots=slots, attention=attn_map, slot_anomaly=slot_anomaly)

    def region_sentence_scores(self, out: GroundingOutput, region: torch.Tensor,
                               defect_text: torch.Tensor, b: int = 0) -> torch.Tensor:
        """Cosine similarity (S,) of each defect sentence with the slot mixture under a region.

        region: (h, w) bool/float mask on the slot grid."""
        r = region.float()
        weights = (out.attention[b] * r[None]).sum((1, 2)) / r.sum().clamp_min(1e-6)  # (K,)
        vec = F.normalize(torch.einsum("k,kd->d", weights, self.slot_keys(out.slots[b])), dim=0)
        return self.sentence_keys(defect_text) @ vec


def load_grounding(path, device) -> tuple:
    """(GroundingNet, metadata dict) from a safetensors file; ModelLoadError names the path."""
    import json
    from safetensors import safe_open

    from .backbones import ModelLoadError, load_safetensors

    state = load_safetensors(path, device="cpu")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception:
        meta = {}
    cfg = json.loads(meta.get("config", "{}"))
    net = GroundingNet(text_dim=int(cfg.get("text_dim", 384)), dim=int(cfg.get("dim", 64)),
                       num_slots=int(cfg.get("num_slots", 6)))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"grounding weights {path} do not fit the grounding network: {exc}")
    return net.eval().to(device), meta
