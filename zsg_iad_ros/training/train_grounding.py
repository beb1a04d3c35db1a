"""Train the built-in backbone and the two-hop grounding module on the AUXILIARY split only.

    python -m zsg_iad_ros.training.train_grounding --stage all --out zsg_iad_ros/weights

Stage 'backbone': the built-in CNN learns, self-supervised, to reconstruct modality images
(RGB, thermal / X-ray bands, geometry maps of auxiliary parts) from copies with random blocks
masked out; no labels are used. Stage 'grounding': every auxiliary category is taught with a few
good parts, each auxiliary sample is scored by the detector (built-in backbone, no grounding) and
the grounding module learns to turn that category-agnostic evidence into the defect mask (fine:
BCE + Dice, coarse slot support: BCE) and to place the sample's describing sentence nearest to
the slots under the defect (InfoNCE). One auxiliary category is held out for validation; the
blend weight of the fine mask in the anomaly map is chosen on it. Test categories, held-out
defect types and real data are never read. Everything is seeded; sentence embeddings are
computed once. Writes safetensors weights and a JSON record (split, seed, command, losses,
validation figures).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.backbones import BuiltinNet, rgb_image, sensor_image, to_three_channels
from ..core.geometry import geometry_maps
from ..data.splits import AUX_CATEGORIES, iter_split

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _modality_images(frame, size: int = 256) -> list:
    out = [rgb_image(frame.rgb, size)]
    if frame.sensor is not None:
        out.append(to_three_channels(sensor_image(frame.sensor, frame.sensor_type), size))
    if frame.points is not None:
        out.append(geometry_maps(frame.points, frame.intrinsics, (size, size)).as_image())
    return out


def train_backbone(args, log) -> dict:
    """Masked-block denoising reconstruction on auxiliary modality images."""
    _seed_all(args.seed)
    images = []
    for s in iter_split("aux", args.bb_good, args.bb_defective, seed=args.seed):
        images.extend(_modality_images(s.frame))
    data = torch.stack(images)  # (N, 3, 256, 256)
    log(f"backbone: {len(data)} modality images from the aux split")
    net = BuiltinNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.bb_steps)
    g = torch.Generator().manual_seed(args.seed)
    crop, losses = 128, []
    net.train()
    for step in range(args.bb_steps):
        idx = torch.randint(0, len(data), (args.batch,), generator=g)
        y0 = int(torch.randint(0, 256 - crop + 1, (1,), generator=g))
        x0 = int(torch.randint(0, 256 - crop + 1, (1,), generator=g))
        target = data[idx, :, y0:y0 + crop, x0:x0 + crop]
        block = (torch.rand(args.batch, 1, crop // 8, crop // 8, generator=g) < 0.3).float()
        block = F.interpolate(block, scale_factor=8, mode="nearest")
        noisy = target * (1 - block) + block * torch.rand(args.batch, 3, 1, 1, generator=g)
        noisy = noisy + 0.02 * torch.randn(noisy.shape, generator=g)
        loss = F.l1_loss(net.reconstruct(noisy), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
        if step % 100 == 0 or step == args.bb_steps - 1:
            log(f"backbone step {step} loss {np.mean(losses[-50:]):.4f}")
    net.eval()
    from safetensors.torch import save_file

    path = Path(args.out) / "builtin_backbone.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"stage": "backbone", "seed": str(args.seed), "split": "aux"})
    return {"images": len(data), "steps": args.bb_steps,
            "final_loss": float(np.mean(losses[-50:])), "weights": path.name}


def _gather(det, category, specs_iter, n_ref, text):
    """Evidence, masks and sentence embeddings for one category (first n_ref goods teach)."""
    samples = list(specs_iter)
    goods = [s for s in samples if s.label == 0]
    det.reset()
    det.teach([s.frame for s in goods[:n_ref]])
    rows = []
    for s in samples:
        if s.label == 0 and any(s is g for g in goods[:n_ref]):
            continue
        ev = det.grounding_evidence(s.frame).cpu().clone()  # leave inference mode
        rows.append((ev, torch.from_numpy(s.gt_mask.astype(np.float32)), s.description,
                     s.defect_type))
    return rows


def _dice(prob, target):
    inter = (prob * target).sum((1, 2))
    return 1 - (2 * inter + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)


def train_grounding(args, log) -> dict:
    from ..core.detector import Detector, DetectorConfig
    from ..core.grounding import NORMAL_SENTENCES, GroundingNet
    from ..core.text import SentenceEncoder

    _seed_all(args.seed)
    det = Detector(DetectorConfig(grounding=False, device="cpu",
                                  backbone=str(Path(args.out) / "builtin_backbone.safetensors")))
    text = SentenceEncoder("minilm", "cpu")
    per_cat = {}
    t0 = time.time()
    for cat in AUX_CATEGORIES:
        it = (s for s in iter_split("aux", args.n_good + args.n_ref, args.n_defective,
                                    seed=args.seed + 1) if s.category == cat)
        per_cat[cat] = _gather(det, cat, it, args.n_ref, text)
        log(f"evidence {cat}: {len(per_cat[cat])} samples ({time.time() - t0:.0f} s)")
    val_cat = args.val_category
    train = [r for c, rows in per_cat.items() if c != val_cat for r in rows]
    val = per_cat[val_cat]
    descs = sorted({r[2] for r in train + val if r[2]})
    emb = {d: e.clone() for d, e in zip(descs, text.encode(descs))}
    normal_text = text.encode(NORMAL_SENTENCES).clone()
    from ..core.prompts import sentence_bank
    bank, _ = sentence_bank()
    bank_text = text.encode(bank).clone()

    net = GroundingNet(text_dim=text.dim)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * max(1, len(train) // args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(args.seed)
    hist = []
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(train), (args.batch,), generator=g).tolist()
        rows = [train[i] for i in idx]
        ev = torch.stack([r[0] for r in rows])
        if torch.rand(1, generator=g) < 0.5:  # flips: defects have no preferred side
            ev = ev.flip(-1)
            masks = torch.stack([r[1] for r in rows]).flip(-1)
        else:
            masks = torch.stack([r[1] for r in rows])
        # Drop modalities at random so the module copes with missing ones.
        drop = torch.rand(len(rows), 3, generator=g) < 0.15
        for b in range(len(rows)):
            for m in range(3):
                if drop[b, m] and drop[b].sum() < 3:
                    ev[b, m] = 0
                    ev[b, 4 + m] = 0
                    ev[b, 7 + 3 * m:10 + 3 * m] = 0
            ev[b, 3] = ev[b, :3].max(0).values
        h, w = ev.shape[-2:]
        out = net(ev, bank_text, normal_text)
        fine_t = F.adaptive_avg_pool2d(masks[:, None], out.fine.shape[-2:])[:, 0]
        coarse_t = F.adaptive_avg_pool2d(masks[:, None], (h, w))[:, 0]
        pos = fine_t.mean().clamp_min(1e-3)
        l_fine = F.binary_cross_entropy_with_logits(
            out.fine_logits, fine_t, pos_weight=((1 - pos) / pos).clamp(1, 20)) \
            + _dice(out.fine, fine_t).mean()
        l_coarse = F.binary_cross_entropy(out.coarse.clamp(1e-5, 1 - 1e-5), coarse_t)
        # InfoNCE: the slot mixture under the defect should match its own description.
        l_text = torch.zeros(())
        dd = [(b, r[2]) for b, r in enumerate(rows) if r[2] and coarse_t[b].sum() > 0]
        if len(dd) >= 2:
            uniq = sorted({d for _, d in dd})
            keys = net.sentence_keys(torch.stack([emb[d] for d in uniq]))
            vecs = []
            for b, _ in dd:
                wts = (out.attention[b] * coarse_t[b][None]).sum((1, 2))
                wts = wts / wts.sum().clamp_min(1e-6)
                vecs.append(F.normalize(torch.einsum("k,kd->d", wts,
                                                     net.slot_keys(out.slots[b])), dim=0))
            logits = torch.stack(vecs) @ keys.T * 10
            tgt = torch.tensor([uniq.index(d) for _, d in dd])
            l_text = F.cross_entropy(logits, tgt)
        loss = l_fine + 0.5 * l_coarse + 0.2 * l_text
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        hist.append([float(loss), float(l_fine), float(l_coarse), float(l_text)])
        if step % 100 == 0 or step == steps - 1:
            m = np.mean(hist[-50:], 0)
            log(f"grounding step {step}/{steps} loss {m[0]:.3f} fine {m[1]:.3f} "
                f"coarse {m[2]:.3f} text {m[3]:.3f}")
    net.eval()
    val_metrics = _validate(net, val, bank_text, normal_text)
    log(f"validation on held-out aux category {val_cat}: {val_metrics}")
    from safetensors.torch import save_file

    path = Path(args.out) / "grounding.safetensors"
    cfg = {"text_dim": text.dim, "dim": net.dim, "num_slots": net.num_slots,
           "text_encoder": "minilm", "grounding_weight": val_metrics["best_weight"]}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"config": json.dumps(cfg), "seed": str(args.seed), "split": "aux"})
    m = np.mean(hist[-50:], 0)
    return {"train_samples": len(train), "val_category": val_cat, "val_samples": len(val),
            "steps": steps, "final_loss": float(m[0]), "final_fine_loss": float(m[1]),
            "final_coarse_loss": float(m[2]), "final_text_loss": float(m[3]),
            "validation": val_metrics, "weights": path.name, "config": cfg}


@torch.no_grad()
def _validate(net, rows, bank_text, normal_text) -> dict:
    """Pixel AUROC on the held-out aux category of: the scoring map alone, the fine mask, and
    their geometric blends; picks the blend weight."""
    from sklearn.metrics import roc_auc_score

    ys, score, fine = [], [], []
    for ev, mask, _, _ in rows:
        out = net(ev[None], bank_text, normal_text)
        H, W = mask.shape

        def up(t):
            return F.interpolate(t[None, None], size=(H, W), mode="bilinear",
                                 align_corners=False)[0, 0]
        ys.append(mask[::4, ::4].flatten().numpy() > 0.5)
        score.append(up(ev[3])[::4, ::4].flatten().numpy())
        fine.append(up(out.fine[0])[::4, ::4].flatten().numpy())
    y = np.concatenate(ys)
    s, f = np.concatenate(score), np.concatenate(fine)
    res = {}
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        blend = np.clip(s, 1e-6, None) ** (1 - a) * np.clip(f, 1e-6, None) ** a
        res[f"pixel_auroc_w{a}"] = float(roc_auc_score(y, blend)) if y.any() else float("nan")
    best = max((0.0, 0.25, 0.5, 0.75), key=lambda a: res[f"pixel_auroc_w{a}"])
    res["best_weight"] = best
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=("backbone", "grounding", "all"), default="all")
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bb-good", type=int, default=6, help="good parts per aux category")
    ap.add_argument("--bb-defective", type=int, default=6)
    ap.add_argument("--bb-steps", type=int, default=400)
    ap.add_argument("--n-ref", type=int, default=4, help="good parts taught per category")
    ap.add_argument("--n-good", type=int, default=8)
    ap.add_argument("--n-defective", type=int, default=28)
    ap.add_argument("--val-category", default="bracket", choices=AUX_CATEGORIES)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.1f} s] {msg}", flush=True)

    record_path = Path(args.out) / "training_record.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.update({"data_split": "aux (zsg_iad_ros.data.splits.iter_split)",
                   "aux_categories": list(AUX_CATEGORIES), "seed": args.seed,
                   "torch": torch.__version__, "threads": args.threads})
    if args.stage in ("backbone", "all"):
        record["backbone"] = train_backbone(args, log)
        record["backbone"]["command"] = "python -m zsg_iad_ros.training.train_grounding " + \
            " ".join(sys.argv[1:] if argv is None else argv)
    if args.stage in ("grounding", "all"):
        record["grounding"] = train_grounding(args, log)
        record["grounding"]["command"] = "python -m zsg_iad_ros.training.train_grounding " + \
            " ".join(sys.argv[1:] if argv is None else argv)
    record["seconds"] = round(time.time() - t0, 1)
    record_path.write_text(json.dumps(record, indent=2))
    log(f"wrote {record_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
