"""`zsg-evaluate` (also `ros2 run zsg_iad_ros evaluate`): offline, live and real-data evaluation.

  zsg-evaluate offline BAG_OR_DIR_OR_GLOB [...] --out DIR [--backbone builtin]
               [--references K --draws N] [--ablate-modalities]
               [--limit-samples L [--target-miss-rate R]]
               [--workers N [--ray-address auto|ray://HOST:PORT]] [--stream-memory per-bag]
  zsg-evaluate live BAG --rate 2.0 --out DIR
  zsg-evaluate real --dataset mulsen|magnetic_tile --out DIR [--references K --draws N]

Each writes metrics.json, summary.md and PNG figures into --out.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--backbone", default="auto",
                   help="auto (per modality) | mobilenetv2 | efficientnet_lite0 | dinov2_s_onnx | "
                        "builtin | patchstats | a transformers hub id / local path")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--pixel-stride", type=int, default=1,
                   help="subsample maps and masks by this stride for pixel metrics (memory)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--progress-every", type=int, default=25,
                   help="progress on stderr: in a log a line every N parts (at most one a "
                        "second; a terminal gets one line updated in place); 0: none")


def _offline_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--references", type=int, default=0,
                   help="teach mode: K known-good parts per category (excluded from scoring)")
    p.add_argument("--draws", type=int, default=1, help="teach mode: draws of references")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference draws")
    p.add_argument("--order-seed", type=int, default=None,
                   help="shuffle the scoring order once with this seed (default: as recorded)")
    p.add_argument("--ablate-modalities", action="store_true",
                   help="also run without each modality present in the data (and, with "
                        "three, with each alone)")
    p.add_argument("--image-size", type=int, default=None,
                   help="detector input size [px] (default: the detector's own)")
    p.add_argument("--fusion", choices=("stouffer", "max", "omnibus"), default=None,
                   help="how modality scores combine (default: the detector's own, stouffer)")
    p.add_argument("--variation", action="store_true",
                   help="with --references: also compare each part in register with them "
                        "(variation model; pixel-registered frames of one product)")
    p.add_argument("--variation-grid", type=int, default=None,
                   help="with --variation: side of the variation model's grid [px] (default: "
                        "the detector's own, 0: 256 when the references all lie in one pose, "
                        "else 128)")
    p.add_argument("--intra-image", choices=("auto", "on", "off"), default=None,
                   help="also score each part against its own surface (default: the "
                        "detector's own, auto: streams of surfaces)")
    p.add_argument("--symmetry", choices=("auto", "off"), default=None,
                   help="also compare each part with itself turned or mirrored by its own "
                        "symmetry (default: the detector's own, auto: streams of symmetric "
                        "parts)")
    p.add_argument("--limit-samples", type=int, default=0,
                   help="with --references: also teach L known-defective parts per category "
                        "and draw (excluded from scoring), as a cell keeps limit samples")
    p.add_argument("--target-miss-rate", type=float, default=None,
                   help="with --limit-samples: lower each category's threshold until at most "
                        "this share of its limit samples would pass (the detector's "
                        "target_miss_rate); without it the limit samples change nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zsg-evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    off = sub.add_parser("offline", help="read evaluation bags directly and run the detector")
    off.add_argument("bags", nargs="+", metavar="BAG_OR_DIR_OR_GLOB",
                     help="evaluation bags (with /ground_truth): bag folders, .mcap files, "
                          "folders holding bags, or quoted glob patterns")
    _offline_args(off)
    off.add_argument("--workers", type=int, default=1,
                     help="parallel workers; more than 1 runs the shards on Ray (default 1: "
                          "this process, Ray not used)")
    off.add_argument("--ray-address", default=None,
                     help="with --workers N > 1: an existing Ray cluster ('auto', "
                          "'ray://host:port'); default: a local Ray started for the run")
    off.add_argument("--stream-memory", choices=("carry", "per-bag"), default="carry",
                     help="carry: a stream's memory runs on from one bag into the next (as "
                          "recorded); per-bag: every bag starts empty, bags are independent")

    real = sub.add_parser("real", help="evaluate on the real samples (no bag needed)")
    real.add_argument("--dataset", required=True, choices=("mulsen", "magnetic_tile"))
    real.add_argument("--root", default=None, help="data folder (default: loader's default)")
    real.add_argument("--categories", nargs="*", default=None, help="MulSen categories")
    _offline_args(real)
    real.set_defaults(order_seed=0)

    live = sub.add_parser("live", help="replay a bag into the running inspection node")
    live.add_argument("bag")
    live.add_argument("--out", required=True)
    live.add_argument("--rate", type=float, default=1.0, help="replay speed factor (2.0 = 2x)")
    live.add_argument("--params-file", default=None,
                      help="node parameters (YAML); default: the node's defaults")
    live.add_argument("--spawn", action="store_true",
                      help="start the node as a subprocess instead of in this process")
    live.add_argument("--no-node", action="store_true",
                      help="do not start a node: one is already running on the graph")
    live.add_argument("--namespace", default=None,
                      help="namespace of the node's topics (default: a fresh one for a node "
                           "started here, the root namespace with --no-node)")
    live.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for outputs after the last input")
    live.add_argument("--no-plots", action="store_true")
    live.add_argument("--no-offline", action="store_true",
                      help="skip the offline run of the same bag (score agreement)")
    return parser


def _check_paths(parser, paths: List[str]) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        parser.error(f"bag not found: {', '.join(missing)}")


def _offline(parser, args, factory, kw: dict) -> dict:
    """Score the bags in this process (--workers 1) or as Ray tasks."""
    from zsg_iad_ros.evaluation.bagset import find_bags
    from zsg_iad_ros.evaluation.offline import default_run_name

    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.ray_address and args.workers == 1:
        parser.error("--ray-address runs the evaluation on Ray: give --workers N > 1")
    try:
        bags = find_bags(args.bags)
    except ValueError as e:
        parser.error(str(e))
    kw = dict(kw, name=default_run_name(args.bags), stream_memory=args.stream_memory)
    if args.workers == 1:
        from zsg_iad_ros.evaluation.offline import evaluate_bags
        return evaluate_bags(bags, factory, **kw)
    from zsg_iad_ros.evaluation.fleet import evaluate_bags_on_ray
    return evaluate_bags_on_ray(bags, factory, workers=args.workers,
                                ray_address=args.ray_address, **kw)


def _report_inputs(record: dict) -> None:
    """Say on stderr which bags were not evaluated (they are also in summary.md)."""
    inputs = record.get("inputs")
    if not inputs or not inputs["not_evaluated"]:
        return
    for bag in inputs["not_evaluated"]:
        print(f"zsg-evaluate: {bag['status']} bag {bag['path']}: {bag['reason']}",
              file=sys.stderr)
    parts = inputs["parts"]
    print(f"zsg-evaluate: parts evaluated {parts['evaluated']}, skipped {parts['skipped']}, "
          f"failed {parts['failed']}", file=sys.stderr)


def detector_options(args: argparse.Namespace) -> dict:
    """`default_detector_factory` keyword arguments from the offline / real options; options
    left unset keep the detector's own defaults."""
    out = {"backbone": args.backbone, "device": args.device}
    out.update({k: v for k, v in (("image_size", args.image_size), ("fusion", args.fusion),
                                  ("intra_image", args.intra_image),
                                  ("symmetry", args.symmetry),
                                  ("variation_grid", args.variation_grid)) if v is not None})
    if args.variation:
        out["variation"] = True
    if args.target_miss_rate is not None:
        out["target_miss_rate"] = args.target_miss_rate
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("draws", "pixel_stride"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if getattr(args, "references", 0) < 0:
        parser.error("--references must be >= 0")
    if args.command in ("offline", "real"):
        if args.limit_samples < 0 or (args.limit_samples and not args.references):
            parser.error("--limit-samples needs --references (limit samples are scored "
                         "against the taught references) and must be >= 0")
        if args.target_miss_rate is not None and not (
                args.limit_samples and 0.0 < args.target_miss_rate < 1.0):
            parser.error("--target-miss-rate needs --limit-samples and a value in (0, 1)")
        if args.limit_samples and getattr(args, "workers", 1) > 1:
            parser.error("--limit-samples runs in one process: use --workers 1")

    from zsg_iad_ros.evaluation.summary import write_outputs

    if args.command in ("offline", "real"):
        from zsg_iad_ros.evaluation.offline import default_detector_factory, evaluate_samples
        factory = default_detector_factory(**detector_options(args))
        kw = dict(references=args.references, draws=args.draws, seed=args.seed,
                  order_seed=args.order_seed, ablate_modalities=args.ablate_modalities,
                  pixel_stride=args.pixel_stride, progress_every=args.progress_every)
        if args.limit_samples:  # one process only (checked above)
            kw["limit_samples"] = args.limit_samples
        if args.command == "offline":
            try:
                record = _offline(parser, args, factory, kw)
            except (ValueError, RuntimeError) as e:
                print(f"zsg-evaluate: error: {e}", file=sys.stderr)
                return 2
            _report_inputs(record)
        else:
            from zsg_iad_ros.data import real as real_data
            if args.dataset == "mulsen":
                samples = real_data.load_mulsen(root=args.root, categories=args.categories)
            else:
                samples = real_data.load_magnetic_tile(root=args.root)
            record = evaluate_samples(samples, factory, name=args.dataset, **kw)
            # where the part is and how bright the images, nothing about defects: the floor of
            # the pixel figures and what the capture conditions alone separate, same parts
            from zsg_iad_ros.evaluation.baselines import real_data_baselines
            record["baselines"] = real_data_baselines(samples, args.pixel_stride)
        paths = write_outputs(record, args.out, plots=not args.no_plots)
    else:
        _check_paths(parser, [args.bag])
        if args.rate <= 0:
            parser.error("--rate must be > 0")
        from zsg_iad_ros.evaluation.live import evaluate_live
        record = evaluate_live(args.bag, rate=args.rate, params_file=args.params_file,
                               spawn=args.spawn, start_node=not args.no_node,
                               namespace=args.namespace,
                               timeout_s=args.timeout, compare_offline=not args.no_offline)
        paths = write_outputs(record, args.out, plots=not args.no_plots)
    print(open(paths["summary"]).read())
    print(f"wrote {args.out}/metrics.json, summary.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
