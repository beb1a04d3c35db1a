#!/usr/bin/env python3
"""Which features for which modality: every (modality rendering, feature extractor) pair scored
alone, with the same simple memory scoring, on the development data. The table this prints is
the one in docs/DETECTOR.md ("Features per modality") that set `detector.MODALITY_BACKBONES`.

  python benchmarks/feature_selection.py --data mulsen --references 4 --draws 3
  python benchmarks/feature_selection.py --data magnetic_tile --references 0
  python benchmarks/feature_selection.py --data synthetic --renders rgb_colour

Scoring (PatchCore-style, no detector state): features on the stride-8 grid, each patch averaged
with its 3 x 3 neighbours; with K references per category, the memory holds every reference in
4 orientations (0/90/180/270 degrees), 256 patches each (greedy k-center), and a part scores the
mean of its 3 highest nearest-patch distances inside a 2-patch border; image AUROC per category,
mean over reference draws. With 0 references each part is scored against 16 random other parts
of its category (MuSc-style mutual scoring: mean of the lowest 30 % of per-part minima), like a
stream's memory. Real data is used for evaluation only.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from zsg_iad_ros.core import scoring as sc
from zsg_iad_ros.core.backbones import (load_backbone, rgb_image, sensor_image,
                                        to_three_channels)
from zsg_iad_ros.core.geometry import geometry_maps

S = 256
RENDERS = ("rgb_colour", "rgb_bands", "sensor_bands", "geometry")


def render(frame, name: str):
    """(3, S, S) modality image of a frame, or None when the frame lacks the modality."""
    if name.startswith("rgb") and frame.rgb is not None:
        rgb = np.asarray(frame.rgb)
        return to_three_channels(rgb, S) if name == "rgb_colour" else rgb_image(rgb, S)
    if name == "sensor_bands" and frame.sensor is not None:
        return to_three_channels(sensor_image(frame.sensor, frame.sensor_type), S)
    if name == "geometry" and frame.points is not None:
        return geometry_maps(frame.points, frame.intrinsics, (S, S)).as_image().cpu()
    return None


def load(data: str):
    if data == "mulsen":
        from zsg_iad_ros.data.real import load_mulsen
        return load_mulsen()
    if data == "magnetic_tile":
        from zsg_iad_ros.data.real import load_magnetic_tile
        return load_magnetic_tile()
    from zsg_iad_ros.data.splits import iter_split
    split = "aux" if data == "synthetic_aux" else "test"
    return list(iter_split(split, 12, 14, seed=0, size=S))


@torch.inference_mode()
def features(backbone, images, rot: int) -> torch.Tensor:
    out = []
    for i in range(0, len(images), 8):
        x = torch.stack(images[i:i + 8])
        if rot:
            x = torch.rot90(x, rot, dims=(2, 3))
        out.append(sc.local_aggregate(backbone.features(x).float(), 3).cpu())
    return torch.cat(out)


def image_score(dist_map: torch.Tensor) -> float:
    return float(sc.topk_mean(dist_map[2:-2, 2:-2], frac=3 / dist_map[2:-2, 2:-2].numel()))


def nearest(q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    C, h, w = q.shape
    return torch.cdist(q.flatten(1).T[None], memory[None])[0].min(1).values.reshape(h, w)


def score_with_references(feats, labels, cats, k: int, draws: int, seed: int) -> dict:
    rows = [[sc.coreset(f[i].flatten(1).T.contiguous(), 256) for i in range(len(labels))]
            for f in feats]
    rng = np.random.default_rng(seed)
    aucs = {}
    from sklearn.metrics import roc_auc_score
    for cat in sorted(set(cats)):
        idx = np.nonzero(cats == cat)[0]
        good = idx[labels[idx] == 0]
        for _ in range(draws):
            refs = rng.choice(good, size=k, replace=False)
            memory = torch.cat([rows[r][i] for i in refs for r in range(len(feats))])
            test = np.setdiff1d(idx, refs)
            s = [image_score(nearest(feats[0][i], memory)) for i in test]
            y = labels[test]
            if 0 < y.sum() < len(y):
                aucs.setdefault(cat, []).append(roc_auc_score(y, s))
    return {c: float(np.mean(v)) for c, v in aucs.items()}


def score_without_references(feat, labels, cats, n_memory: int = 16, frac: float = 0.3) -> dict:
    from sklearn.metrics import roc_auc_score
    rows = [sc.coreset(feat[i].flatten(1).T.contiguous(), 256) for i in range(len(labels))]
    out = {}
    for cat in sorted(set(cats)):
        idx = np.nonzero(cats == cat)[0]
        rng = np.random.default_rng(0)
        s = []
        for i in idx:
            others = rng.choice([j for j in idx if j != i], size=min(n_memory, len(idx) - 1),
                                replace=False)
            mins = torch.stack([nearest(feat[i], rows[j]) for j in others])
            kk = max(1, math.ceil(frac * len(others)))
            s.append(image_score(mins.topk(kk, dim=0, largest=False).values.mean(0)))
        y = labels[idx]
        if 0 < y.sum() < len(y):
            out[cat] = float(roc_auc_score(y, s))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mulsen",
                   choices=["mulsen", "magnetic_tile", "synthetic", "synthetic_aux"])
    p.add_argument("--renders", nargs="*", default=list(RENDERS), choices=RENDERS)
    p.add_argument("--backbones", nargs="*",
                   default=["patchstats", "builtin", "mobilenetv2", "efficientnet_lite0"])
    p.add_argument("--references", type=int, default=4)
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    samples = load(args.data)
    labels = np.array([s.label for s in samples])
    cats = np.array([s.category for s in samples])
    print("| rendering | features | image AUROC per category | mean |\n| --- | --- | --- | --- |")
    for name in args.renders:
        images = [render(s.frame, name) for s in samples]
        if any(im is None for im in images):
            continue
        for spec in args.backbones:
            bb = load_backbone(spec, torch.device("cpu"))
            if args.references:
                feats = [features(bb, images, r) for r in range(4)]
                auc = score_with_references(feats, labels, cats, args.references, args.draws,
                                            args.seed)
            else:
                auc = score_without_references(features(bb, images, 0), labels, cats)
            cells = ", ".join(f"{c} {v:.3f}" for c, v in auc.items())
            print(f"| {name} | {spec} | {cells} | {np.mean(list(auc.values())):.3f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
