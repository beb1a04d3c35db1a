#!/usr/bin/env python3
"""Ablation of registration + variation model: aligned vs unaligned, per modality, on the
synthetic zero-shot test split (objects and textures apart, each part also turned by a random
angle) and on the real MulSen-AD samples (evaluation only).

  python benchmarks/benchmark_alignment.py                       # both sections, ~3 min
  python benchmarks/benchmark_alignment.py --sections synthetic --n-good 4 --n-defective 8
  python benchmarks/benchmark_alignment.py --json outputs/alignment.json

Synthetic: `iter_split('test', n_good, n_defective, seed)`; per category `--references`
known-good parts taught from the same split's generator with another seed (never test parts).
Whether a category is an object or a texture is decided by `is_texture` on its references'
RGB images. Objects: the references are registered to their medoid on the raw RGB image (the
frame is pixel-registered, so the sensor and geometry models share that pose), each part is
registered once and compared pixel by pixel; a failed registration falls back to the unaligned
model (counted). Textures always use the unaligned model (that is their fall-back). The
unaligned baseline compares in place with a variation model of the unregistered references.

Image score: max of the Gaussian-smoothed deviation map (`variation.image_score`); 'fused' is
the max over modalities (maps: the pixel-wise max). Threshold for the false-alarm rate: set at
teach time, never on test parts: the largest score of each reference against a model of the
other references (leave one out), per category and variant.

MulSen-AD (CC BY 4.0, Li et al., CVPR 2025): per category `--references` good parts drawn at
random as references, the other parts scored; modalities are not pixel-aligned, so each
registers on its own raw image (RGB, infrared, scan height) and pixel metrics exist for RGB
only. Averaged over `--draws` draws.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch

from zsg_iad_ros.core.backbones import rgb_image, sensor_image
from zsg_iad_ros.core.frame import GEOMETRY, RGB, SENSOR
from zsg_iad_ros.core.geometry import geometry_maps
from zsg_iad_ros.core.registration import foreground_mask, frame_foreground, is_texture
from zsg_iad_ros.core.variation import VariationConfig, VariationModel, image_score
from zsg_iad_ros.evaluation.metrics import aupro, image_auroc, pixel_auroc

MODS = (RGB, SENSOR, GEOMETRY)
SPLIT = "test"


# ---------------------------------------------------------------------------------------------
# per-frame inputs

_IMAGES: dict = {}  # id(frame) -> modality images, for frames kept alive by the caller


def modality_images(frame, cache: bool = False) -> dict:
    """Modality images as the detector's backbones see them: (H, W, 3) float32 each."""
    if cache and id(frame) in _IMAGES:
        return _IMAGES[id(frame)]
    size = frame.shape
    out = {}
    if frame.rgb is not None:
        out[RGB] = rgb_image(frame.rgb, size[0]).permute(1, 2, 0).numpy()
    if frame.sensor is not None:
        out[SENSOR] = sensor_image(frame.sensor, frame.sensor_type)
    if frame.points is not None:
        out[GEOMETRY] = geometry_maps(frame.points, frame.intrinsics, size).as_image() \
            .permute(1, 2, 0).numpy()
    if cache:
        _IMAGES[id(frame)] = out
    return out


def raw_signal(frame, mod: str):
    """What a modality registers on when the frame is not pixel-registered."""
    if mod == RGB:
        return frame.rgb
    if mod == SENSOR:
        return frame.sensor
    z = np.asarray(frame.points, np.float32)[..., 2]
    return np.where(np.isfinite(z), z, np.nanmedian(z))


class Stream:
    """The variation models of one stream (category): aligned and unaligned, per modality."""

    def __init__(self, frames, registered: bool, kind: str, config: VariationConfig):
        self.registered, self.kind = registered, kind
        imgs = [modality_images(f, cache=True) for f in frames]
        self.mods = [m for m in MODS if all(m in i for i in imgs)]
        self.aligned, self.flat = {}, {}
        flat_cfg = replace(config, align=False)
        cfg = config
        if registered:
            fgs = [frame_foreground(f.rgb) for f in frames]
            sig = [f.rgb for f in frames]
            if kind == "object":
                rgb = VariationModel.teach([i[RGB] for i in imgs], masks=fgs, signals=sig,
                                           kind=kind, config=cfg)
                for m in self.mods:
                    self.aligned[m] = rgb if m == RGB else VariationModel.teach(
                        [i[m] for i in imgs], masks=fgs, signals=sig,
                        registrations=rgb.ref_registrations, medoid=rgb.medoid, kind=kind,
                        config=cfg)
            for m in self.mods:
                self.flat[m] = VariationModel.teach([i[m] for i in imgs], masks=fgs,
                                                    kind="object", config=flat_cfg)
        else:
            for m in self.mods:
                sig = [raw_signal(f, m) for f in frames]
                fgs = [foreground_mask(s) for s in sig]
                if kind == "object":
                    self.aligned[m] = VariationModel.teach([i[m] for i in imgs], masks=fgs,
                                                           signals=sig, kind=kind, config=cfg)
                self.flat[m] = VariationModel.teach([i[m] for i in imgs], masks=fgs,
                                                    kind="object", config=flat_cfg)

    def score(self, frame, imgs=None):
        """{variant: {modality: (H, W) map}}, number of registration fall-backs, seconds spent
        in registration + comparison (modality images excluded)."""
        imgs = imgs if imgs is not None else modality_images(frame)
        t0 = time.perf_counter()
        out = {"aligned": {}, "unaligned": {}}
        fallbacks = 0
        if self.registered:  # one foreground and one RGB registration serve every modality
            fg = frame_foreground(frame.rgb)
            align = {}
            if self.kind == "object":
                align = {"registration": self.aligned[RGB].register(frame.rgb, fg)}
        for m in self.mods:
            if not self.registered:  # each modality registers on its own signal
                sig = raw_signal(frame, m)
                fg = foreground_mask(sig)
                align = {"signal": sig}
            flat = self.flat[m].inspect(imgs[m], mask=fg).map
            out["unaligned"][m] = out["aligned"][m] = flat
            if self.kind == "object":
                r = self.aligned[m].inspect(imgs[m], mask=fg, **align)
                fallbacks += int(r.fallback)
                if not r.fallback:
                    out["aligned"][m] = r.map
        return out, fallbacks, time.perf_counter() - t0


def loo_threshold(frames, registered, kind, config) -> dict:
    """Per variant: the largest fused score of each reference against the others' model."""
    if len(frames) < 2:
        return {"aligned": float("nan"), "unaligned": float("nan")}
    worst = defaultdict(float)
    for i in range(len(frames)):
        s = Stream([f for j, f in enumerate(frames) if j != i], registered, kind, config)
        maps, _, _ = s.score(frames[i], modality_images(frames[i], cache=True))
        for v, mm in maps.items():
            worst[v] = max(worst[v], max(image_score(x) for x in mm.values()))
    return dict(worst)


# ---------------------------------------------------------------------------------------------
# metrics

def summarize(records, mods, pixel_mods, stride=2):
    """records: dicts with label, gt (mask or None), maps {variant: {mod: map}}, thr, kind...
    Returns {variant: {metric: value}}."""
    out = {}
    labels = [r["label"] for r in records]
    for v in ("aligned", "unaligned"):
        row = {}
        fused_scores = []
        for m in mods + ["fused"]:
            if m == "fused":
                sc = [max(image_score(r["maps"][v][k]) for k in mods) for r in records]
                fused_scores = sc
            else:
                sc = [image_score(r["maps"][v][m]) for r in records]
            row[f"img_{m}"] = image_auroc(labels, sc)
        for m in pixel_mods + (["fused"] if len(pixel_mods) > 1 else []):
            gts, maps = [], []
            for r in records:
                if r["gt"] is None:
                    continue
                mm = r["maps"][v]
                x = np.maximum.reduce([mm[k] for k in pixel_mods]) if m == "fused" else mm[m]
                gts.append(r["gt"][::stride, ::stride])
                maps.append(x[::stride, ::stride])
            row[f"pix_{m}"] = pixel_auroc(gts, maps)
            if m == ("fused" if len(pixel_mods) > 1 else pixel_mods[0]):
                row["aupro"] = aupro(gts, maps)
        good = [s for s, r in zip(fused_scores, records) if r["label"] == 0]
        alarms = [s >= r["thr"][v] for s, r in zip(fused_scores, records) if r["label"] == 0]
        row["far"] = float(np.mean(alarms)) if alarms else float("nan")
        row["good_p50"] = float(np.median(good)) if good else float("nan")
        row["scores"] = fused_scores
        out[v] = row
    return out


def fmt(x, w=6):
    try:
        return f"{float(x):{w}.3f}" if np.isfinite(float(x)) else f"{'-':>{w}s}"
    except (TypeError, ValueError):
        return f"{'-':>{w}s}"


# ---------------------------------------------------------------------------------------------
# sections

def run_synthetic(args):
    from zsg_iad_ros.data.splits import split_categories, split_specs
    from zsg_iad_ros.data.transforms import rotate_sample

    rng = np.random.default_rng(args.seed + 101)
    test_specs = split_specs(args.split, args.n_good, args.n_defective, seed=args.seed)
    test_seeds = {(s.category, s.seed) for s in test_specs}
    ref_specs = [s for s in split_specs(args.split, args.references, 0, seed=args.ref_seed)
                 if (s.category, s.seed) not in test_seeds]
    records = {"unrotated": [], "rotated": []}
    kinds, fallbacks, lat = {}, defaultdict(int), []
    for cat in split_categories(args.split):
        if args.categories and cat not in args.categories:
            continue
        _IMAGES.clear()
        t = time.perf_counter()
        refs = [s.generate(args.size).frame for s in ref_specs if s.category == cat]
        tex, tscore = is_texture([f.rgb for f in refs])
        kind = "texture" if tex else "object"
        kinds[cat] = (kind, tscore)
        stream = Stream(refs, True, kind, args.config)
        thr = loo_threshold(refs, True, kind, args.config)
        t_teach = time.perf_counter() - t
        n = 0
        for spec in (s for s in test_specs if s.category == cat):
            smp = spec.generate(args.size)
            turned = rotate_sample(smp, rng.uniform(0, 360))
            for rot, part in (("unrotated", smp), ("rotated", turned)):
                imgs = modality_images(part.frame)
                c0 = time.process_time()
                maps, fb, dt = stream.score(part.frame, imgs)
                fallbacks[(cat, rot)] += fb
                if kind == "object":
                    lat.append((dt, time.process_time() - c0))
                records[rot].append(dict(label=part.label, gt=part.gt_mask, maps=maps, thr=thr,
                                         cat=cat, kind=kind, defect=part.defect_type))
            n += 1
        print(f"[alignment] {cat:13s} {kind:8s} (self-similarity {tscore:.2f}) teach+calibration "
              f"{t_teach:5.1f} s, {n} parts x 2 in {time.perf_counter() - t - t_teach:5.1f} s, "
              f"thresholds aligned {thr['aligned']:.2f} unaligned {thr['unaligned']:.2f}",
              file=sys.stderr)
    return records, kinds, fallbacks, lat


def print_synthetic(records, kinds, fallbacks, lat):
    print(f"\n## Synthetic zero-shot {SPLIT} split: variation model, aligned vs unaligned")
    print("kind per category (is_texture on the references' RGB): " +
          ", ".join(f"{c}={k} ({s:.2f})" for c, (k, s) in kinds.items()))
    head = (f"{'group':9s} {'variant':9s} {'parts':9s} | {'img rgb':>7s} {'sensor':>6s} "
            f"{'geom':>6s} {'fused':>6s} | {'pix rgb':>7s} {'sensor':>6s} {'geom':>6s} "
            f"{'fused':>6s} {'AUPRO':>6s} | {'FAR':>6s} {'good50':>6s}")
    print(head)
    print("-" * len(head))
    summary = {}
    for group in ("object", "texture"):
        for v in ("aligned", "unaligned"):
            for rot in ("unrotated", "rotated"):
                recs = [r for r in records[rot] if r["kind"] == group]
                if not recs:
                    continue
                s = summarize(recs, list(MODS), list(MODS))[v]
                summary[(group, v, rot)] = s
                print(f"{group + 's':9s} {v:9s} {rot:9s} | {fmt(s['img_rgb'], 7)} "
                      f"{fmt(s['img_sensor'])} {fmt(s['img_geometry'])} {fmt(s['img_fused'])} | "
                      f"{fmt(s['pix_rgb'], 7)} {fmt(s['pix_sensor'])} {fmt(s['pix_geometry'])} "
                      f"{fmt(s['pix_fused'])} {fmt(s['aupro'])} | {fmt(s['far'])} "
                      f"{fmt(s['good_p50'])}")
    # rotation invariance of the scores themselves (same parts, turned)
    print("\nscore shift turned vs as generated (fused, same parts): median |delta| / median "
          "score of good parts")
    for group in ("object", "texture"):
        for v in ("aligned", "unaligned"):
            a = [s for s, r in zip(summary.get((group, v, "unrotated"), {}).get("scores", []),
                                   [r for r in records["unrotated"] if r["kind"] == group])
                 if r["label"] == 0]
            b = [s for s, r in zip(summary.get((group, v, "rotated"), {}).get("scores", []),
                                   [r for r in records["rotated"] if r["kind"] == group])
                 if r["label"] == 0]
            if a and b:
                d = np.abs(np.asarray(b) - np.asarray(a))
                print(f"  {group + 's':9s} {v:9s} median |shift| {np.median(d):.2f} "
                      f"(good median {np.median(a):.2f})")
    print("\nper category, fused image AUROC (unrotated / rotated); registration fall-backs "
          "(part-modality pairs)")
    cats = list(dict.fromkeys(r["cat"] for r in records["unrotated"]))
    for c in cats:
        cells = []
        for v in ("aligned", "unaligned"):
            for rot in ("unrotated", "rotated"):
                recs = [r for r in records[rot] if r["cat"] == c]
                sc = [max(image_score(m) for m in r["maps"][v].values()) for r in recs]
                cells.append(fmt(image_auroc([r["label"] for r in recs], sc)))
        print(f"  {c:13s} aligned {cells[0]} / {cells[1]}   unaligned {cells[2]} / {cells[3]}"
              f"   fall-backs {fallbacks[(c, 'unrotated')]} / {fallbacks[(c, 'rotated')]}")
    print("\nobjects per defect type, fused image AUROC against the objects' good parts "
          "(unrotated)")
    recs = [r for r in records["unrotated"] if r["kind"] == "object"]
    goods = [r for r in recs if r["label"] == 0]
    for d in sorted({r["defect"] for r in recs if r["label"] == 1}):
        sub = goods + [r for r in recs if r["defect"] == d]
        cells = []
        for v in ("aligned", "unaligned"):
            sc = [max(image_score(m) for m in r["maps"][v].values()) for r in sub]
            cells.append(fmt(image_auroc([r["label"] for r in sub], sc)))
        print(f"  {d:13s} aligned {cells[0]}  unaligned {cells[1]}  "
              f"(n={len(sub) - len(goods)})")
    if lat:
        ms = np.asarray(lat) * 1e3
        print(f"\nlatency per object part: foreground + registration + 3 modality comparisons "
              f"+ the unaligned baseline's 3 (modality images excluded): wall p50 "
              f"{np.percentile(ms[:, 0], 50):.1f} ms, p95 {np.percentile(ms[:, 0], 95):.1f} ms; "
              f"CPU p50 {np.percentile(ms[:, 1], 50):.1f} ms ({len(ms)} parts, shared machine)")
    return summary


def run_mulsen(args):
    from zsg_iad_ros.data.real import load_mulsen

    samples = load_mulsen()
    out = []
    for draw in range(args.draws):
        rng = np.random.default_rng(args.seed + 1000 * draw)
        for cat in sorted({s.category for s in samples}):
            cs = [s for s in samples if s.category == cat]
            good = [i for i, s in enumerate(cs) if s.label == 0]
            ref_idx = set(rng.choice(good, size=min(args.references, len(good) - 1),
                                     replace=False).tolist())
            refs = [cs[i].frame for i in sorted(ref_idx)]
            tex, tscore = is_texture([f.rgb for f in refs])
            kind = "texture" if tex else "object"
            t = time.perf_counter()
            stream = Stream(refs, False, kind, args.config)
            thr = loo_threshold(refs, False, kind, args.config)
            for i, s in enumerate(cs):
                if i in ref_idx:
                    continue
                maps, fb, _ = stream.score(s.frame)
                out.append(dict(label=s.label, gt=s.gt_mask, maps=maps, thr=thr, cat=cat,
                                kind=kind, draw=draw, fallbacks=fb, defect=s.defect_type))
            print(f"[alignment] MulSen {cat} draw {draw}: {kind} ({tscore:.2f}), "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out


def print_mulsen(records, draws):
    print("\n## MulSen-AD (evaluation only; mean over draws): variation model per modality")
    head = (f"{'category':12s} {'variant':9s} | {'img rgb':>7s} {'ir':>6s} {'scan':>6s} "
            f"{'fused':>6s} | {'pix rgb':>7s} {'AUPRO':>6s} | {'FAR':>6s} | kind, fall-backs")
    print(head)
    print("-" * len(head))
    res = {}
    for cat in sorted({r["cat"] for r in records}) + ["all"]:
        for v in ("aligned", "unaligned"):
            rows = []
            for d in range(draws):
                recs = [r for r in records if r["draw"] == d and (cat == "all" or r["cat"] == cat)]
                rows.append(summarize(recs, list(MODS), [RGB])[v])
            mean = {k: float(np.nanmean([float(r[k]) for r in rows]))
                    for k in ("img_rgb", "img_sensor", "img_geometry", "img_fused", "pix_rgb",
                              "aupro", "far")}
            res[(cat, v)] = mean
            sub = [r for r in records if cat == "all" or r["cat"] == cat]
            kinds = ",".join(sorted({r["kind"] for r in sub}))
            fb = sum(r["fallbacks"] for r in sub) if v == "aligned" else 0
            print(f"{cat:12s} {v:9s} | {fmt(mean['img_rgb'], 7)} {fmt(mean['img_sensor'])} "
                  f"{fmt(mean['img_geometry'])} {fmt(mean['img_fused'])} | "
                  f"{fmt(mean['pix_rgb'], 7)} {fmt(mean['aupro'])} | {fmt(mean['far'])} | "
                  f"{kinds}, {fb}")
    return res


def run_latency(args):
    """Per-call latency of the API on 256 x 256 gear frames (wall and CPU p50 over --repeat
    calls after a warm-up)."""
    from zsg_iad_ros.core.registration import (align_clouds, make_template,
                                               region_centroid_3d, register,
                                               rigid_from_registration)
    from zsg_iad_ros.data.synthetic import generate_sample
    from zsg_iad_ros.data.transforms import rotate_sample

    refs = [generate_sample("gear", "good", 900 + i).frame for i in range(4)]
    part = rotate_sample(generate_sample("gear", "missing_part", 950), 33.0)
    q = part.frame
    imgs = [modality_images(f) for f in refs]
    qi = modality_images(q)
    fg_refs = [frame_foreground(f.rgb) for f in refs]
    fg = frame_foreground(q.rgb)
    tmpl = make_template(refs[0].rgb, fg_refs[0])
    model = VariationModel.teach([i[RGB] for i in imgs], masks=fg_refs,
                                 signals=[f.rgb for f in refs])
    others = {m: VariationModel.teach([i[m] for i in imgs], masks=fg_refs,
                                      signals=[f.rgb for f in refs],
                                      registrations=model.ref_registrations,
                                      medoid=model.medoid) for m in (SENSOR, GEOMETRY)}
    reg = model.register(q.rgb, fg)
    cloud = q.points.reshape(-1, 3)
    cloud = cloud[np.isfinite(cloud).all(1)]
    ref_cloud = refs[0].points.reshape(-1, 3)
    ref_cloud = ref_cloud[np.isfinite(ref_cloud).all(1)]

    def per_part():
        f = frame_foreground(q.rgb)
        r = model.register(q.rgb, f)
        for m, mdl in ((RGB, model), (SENSOR, others[SENSOR]), (GEOMETRY, others[GEOMETRY])):
            mdl.inspect(qi[m], mask=f, registration=r)

    calls = [
        ("frame_foreground(rgb)", lambda: frame_foreground(q.rgb), args.repeat),
        ("make_template(rgb, mask)", lambda: make_template(refs[0].rgb, fg_refs[0]),
         args.repeat),
        ("register(rgb, template, mask)", lambda: register(q.rgb, tmpl, fg), args.repeat),
        ("VariationModel.inspect(rgb image, registration)",
         lambda: model.inspect(qi[RGB], mask=fg, registration=reg), args.repeat),
        ("per part: foreground + register + 3 inspects", per_part, args.repeat),
        ("VariationModel.teach(4 refs, rgb, medoid search)",
         lambda: VariationModel.teach([i[RGB] for i in imgs], masks=fg_refs,
                                      signals=[f.rgb for f in refs]), 3),
        ("rigid_from_registration(organized clouds)",
         lambda: rigid_from_registration(reg, q.points, refs[model.medoid].points,
                                         mask=fg_refs[model.medoid]), args.repeat),
        ("region_centroid_3d", lambda: region_centroid_3d(part.gt_mask, None, q.points),
         args.repeat),
        (f"align_clouds({len(cloud)} vs {len(ref_cloud)} points)",
         lambda: align_clouds(cloud, ref_cloud), 3),
    ]
    print("\n## Latency (one process, torch threads 2, shared 2-core machine)")
    print(f"{'call':52s} {'wall p50':>9s} {'CPU p50':>8s}  ms")
    out = {}
    for name, fn, n in calls:
        fn()
        wall, cpu = [], []
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        out[name] = (1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu)))
        print(f"{name:52s} {out[name][0]:9.1f} {out[name][1]:8.1f}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="*", default=["synthetic", "mulsen", "latency"],
                   choices=["synthetic", "mulsen", "latency"])
    p.add_argument("--repeat", type=int, default=20, help="latency: calls per measurement")
    p.add_argument("--n-good", type=int, default=6, help="good test parts per category")
    p.add_argument("--n-defective", type=int, default=12, help="defective test parts per category")
    p.add_argument("--references", type=int, default=4, help="known-good references per category")
    p.add_argument("--seed", type=int, default=0, help="test split seed")
    p.add_argument("--ref-seed", type=int, default=1,
                   help="seed of the split draw the references come from (not the test seed)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--draws", type=int, default=2, help="MulSen reference draws")
    p.add_argument("--json", default="", help="write the summary figures here")
    p.add_argument("--split", default="test", choices=["test", "aux"],
                   help="synthetic split ('aux' is where parameters are chosen)")
    p.add_argument("--categories", nargs="*", default=[], help="only these synthetic categories")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="VariationConfig overrides, e.g. tolerance_px=2 envelope=false")
    args = p.parse_args(argv)
    global SPLIT
    SPLIT = args.split
    over = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        over[k] = json.loads(v) if v not in ("rms", "max") else v
    args.config = VariationConfig(**over)
    if args.ref_seed == args.seed:
        p.error("--ref-seed must differ from --seed: references are never test parts")
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    t0 = time.perf_counter()
    dump = {}
    if "synthetic" in args.sections:
        recs, kinds, fbs, lat = run_synthetic(args)
        summ = print_synthetic(recs, kinds, fbs, lat)
        dump["synthetic"] = {" ".join(k): {m: float(x) for m, x in v.items() if m != "scores"}
                             for k, v in summ.items()}
        dump["synthetic_latency_ms_p50"] = (float(np.median(np.asarray(lat)[:, 0]) * 1e3)
                                            if lat else None)
    if "mulsen" in args.sections:
        res = print_mulsen(run_mulsen(args), args.draws)
        dump["mulsen"] = {" ".join(k): v for k, v in res.items()}
    if "latency" in args.sections:
        dump["latency_ms_wall_cpu"] = run_latency(args)
    print(f"\n[alignment] total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1, default=lambda x: None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
