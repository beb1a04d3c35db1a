"""Writes an evaluation record to a folder: metrics.json, summary.md and the figures."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence

from zsg_iad_ros.evaluation import metrics as M
from zsg_iad_ros.evaluation.plots import plot_run
from zsg_iad_ros.evaluation.results import MEAN_KEYS, to_json

HEADLINE = ("image_auroc", "image_f1_max", "pixel_auroc", "pixel_f1_max", "aupro",
            "pixel_auroc_fg", "aupro_fg", "false_alarm_rate", "miss_rate")
_SHORT = {"image_auroc": "img AUROC", "image_f1_max": "img F1max", "pixel_auroc": "px AUROC",
          "pixel_f1_max": "px F1max", "aupro": "AUPRO@0.3", "pixel_auroc_fg": "px AUROC fg",
          "aupro_fg": "AUPRO fg", "false_alarm_rate": "false alarms",
          "image_auroc_confident": "img AUROC confident",
          "image_auroc_first": "img AUROC first published",
          "miss_rate": "misses", "n_samples": "n", "n_categories": "categories",
          "n_good": "good", "n_defective": "defective"}


def cell(value) -> str:
    """A table cell: 3 decimals, or 'n/a' with the reason as a footnote-like hint."""
    if isinstance(value, M.Metric) and not value.valid:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _num(v) -> str:
    """Counts as integers, small differences in scientific notation, the rest like `cell`."""
    if isinstance(v, (int, bool)) or not isinstance(v, float):
        return str(v)
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.1e}"
    return cell(v)


def table(rows: Dict[str, dict], columns: Sequence[str], first: str) -> List[str]:
    head = [first] + [_SHORT.get(c, c) for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, m in rows.items():
        lines.append("| " + " | ".join([name] + [cell(m[c]) if c in m else ""
                                                 for c in columns]) + " |")
    return lines


def _reasons(rows: Dict[str, dict], columns: Sequence[str]) -> List[str]:
    seen = {}
    for name, m in rows.items():
        for c in columns:
            v = m.get(c)
            if isinstance(v, M.Metric) and not v.valid:
                seen.setdefault(v.reason, []).append(f"{name}/{_SHORT.get(c, c)}")
    return [f"- n/a: {reason} ({', '.join(where[:6])}{', ...' if len(where) > 6 else ''})"
            for reason, where in seen.items()]


#: Bags listed by name in summary.md (all of them are in metrics.json).
MAX_LISTED_BAGS = 50


def inputs_lines(inputs: dict) -> List[str]:
    """Bags and parts evaluated, skipped (unreadable) and failed, and why."""
    bags, parts, run = inputs["bags"], inputs["parts"], inputs["execution"]
    skipped = str(parts["skipped"])
    if parts["skipped_bags_of_unknown_size"]:
        skipped += f" (+ {parts['skipped_bags_of_unknown_size']} bag(s) of unknown size)"
    lines = ["## Inputs", "",
             f"{bags['found']} bag(s): {bags['evaluated']} evaluated, {bags['skipped']} "
             f"skipped (unreadable), {bags['failed']} failed. Parts: {parts['evaluated']} "
             f"evaluated, {skipped} skipped, {parts['failed']} failed. Run by "
             f"{run['engine']}, {run['workers']} worker(s).", ""]
    rows = inputs["not_evaluated"]
    if rows:
        lines += ["| bag | status | parts | reason |", "| --- | --- | --- | --- |"]
        for b in rows[:MAX_LISTED_BAGS]:
            reason = b["reason"].replace("|", "\\|")
            n = "?" if b["parts"] is None else b["parts"]
            lines.append(f"| {b['name']} | {b['status']} | {n} | {reason} |")
        if len(rows) > MAX_LISTED_BAGS:
            lines += ["", f"... and {len(rows) - MAX_LISTED_BAGS} more in metrics.json "
                          f"(inputs.not_evaluated)."]
        lines.append("")
    return lines


def markdown(record: dict, title: Optional[str] = None) -> str:
    proto = record["protocol"]
    lines = [f"# Evaluation: {title or record['name']}", ""]
    teach = (f"teach mode, {proto['references']} known-good references per category, averaged "
             f"over {proto['draws']} draw(s)" if proto["references"] else "no references (cold "
             "start, streaming memory only)")
    if proto.get("limit_samples"):
        teach += (f", {proto['limit_samples']} known-defective limit samples per category "
                  "taught and not scored")
    memory = {"carry": "; stream memory carried from bag to bag",
              "per-bag": "; stream memory fresh in every bag"}.get(proto.get("stream_memory"), "")
    lines += [f"{proto['n_samples']} samples; {teach}; modalities in the data: "
              f"{', '.join(proto['modalities_present'])}; pixel stride {proto['pixel_stride']}"
              f"{memory}.", ""]
    if record.get("inputs"):
        lines += inputs_lines(record["inputs"])
    configs = record["configs"]
    main = configs["all"]
    lines += [f"Model `{main.get('model_id', '')}` on `{main.get('device', '')}`.", ""]
    cols = ["n_samples", "n_good", "n_defective"] + list(HEADLINE)
    lines += ["## Overall", ""]
    overall_rows = {name: c["overall"] for name, c in configs.items()}
    baselines = record.get("baselines") or {}
    lines += table({**overall_rows, **{f"baseline: {n}": b for n, b in baselines.items()}},
                   cols, "configuration") + [""]
    lines += _foreground_note(main["overall"], baselines)
    lines += _warm_up_note(main["overall"])
    means = {name: c["category_mean"] for name, c in configs.items()
             if c.get("category_mean", {}).get("n_categories", 0) > 1}
    if means:
        lines += ["Mean over categories (the table above pools all parts, which also needs "
                  "scores comparable across categories):", ""]
        lines += table(means, ["n_categories"] + list(MEAN_KEYS), "configuration") + [""]
    lines += _reasons(overall_rows, HEADLINE)
    if main.get("spread"):
        lines += ["", "Standard deviation over draws (all modalities): " + ", ".join(
            f"{_SHORT.get(k, k)} {v:.3f}" for k, v in main["spread"].items())]
    lines += ["", "## Per category (all modalities)", ""]
    cat_rows = dict(main["per_category"])
    for name, b in baselines.items():
        cat_rows.update({f"{c} (baseline: {name})": m
                         for c, m in b.get("per_category", {}).items()})
    lines += table(cat_rows, cols, "category") + [""]
    lines += _reasons(main["per_category"], HEADLINE)
    lines += ["", "## Per defect type (vs the good parts of the same categories)", ""]
    if len(configs) > 1:
        ab_cols = list(configs)
        nan = float("nan")
        rows = {dt: {c: configs[c]["per_defect_type"].get(dt, {}).get("image_auroc", nan)
                     for c in ab_cols}
                for dt in main["per_defect_type"]}
        lines += ["Image AUROC per modality configuration (ablation):", ""]
        lines += table(rows, ab_cols, "defect type") + [""]
    lines += table(main["per_defect_type"], cols, "defect type") + [""]
    lines += _reasons(main["per_defect_type"], HEADLINE)
    lat = main["overall"].get("latency_ms", {})
    if lat:
        lines += ["", "## Latency per stage [ms] (all modalities)", "",
                  "| stage | p50 | p95 | p99 | mean | n |", "|" + " --- |" * 6]
        for stage, s in lat.items():
            lines.append(f"| {stage} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | "
                         f"{s['mean']:.1f} | {s['n']} |")
    rules = main["overall"].get("rule_pass_rates", {})
    if rules:
        lines += ["", "## Report rule checks (pass rate)", "",
                  f"All rules passed on {cell(main['overall']['report_valid_rate'])} of reports.",
                  "", "| rule | pass rate |", "| --- | --- |"]
        lines += [f"| {k} | {cell(v)} |" for k, v in rules.items()]
    extra = record.get("live")
    if extra:
        lines += ["", "## Live replay", "", "| figure | value |", "| --- | --- |"]
        for k, v in extra.items():
            if isinstance(v, dict) and v and all(not isinstance(x, dict) for x in v.values()):
                lines += [f"| {k}: {k2} | {_num(v2)} |" for k2, v2 in v.items()]
            elif isinstance(v, dict):
                lines.append(f"| {k} | {json.dumps(to_json(v))} |")
            else:
                lines.append(f"| {k} | {_num(v)} |")
    figs = record.get("figures", [])
    if figs:
        lines += ["", "## Figures", ""]
        if proto.get("draws", 1) > 1:
            lines += [f"All modalities, draw 1 of {proto['draws']}: curves and their figures "
                      "are that draw's; legends give the mean over draws (the tables above) "
                      "next to them.", ""]
        lines += [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figs]
    return "\n".join(lines) + "\n"


def _warm_up_note(overall: dict) -> List[str]:
    """How the parts of a stream's warm-up were scored, where there were some: revised once
    the stream was calibrated, or left not confident."""
    lines = []
    revised = overall.get("revised_rate")
    if revised is not None and float(revised) > 0:
        lines += [f"The first parts of an untaught stream, {cell(revised)} of the parts here, "
                  "were scored before its history calibrated it, published as not confident "
                  "(status unknown: a cell holds them), and scored again once it did; the "
                  "figures above are those of the revisions, on which the cell decides. As "
                  f"first published, image AUROC (all modalities) "
                  f"{cell(overall.get('image_auroc_first'))}.", ""]
    unknown = overall.get("unknown_rate")
    if unknown is not None and float(unknown) > 0:
        lines += [f"Image AUROC of the parts scored with a calibrated stream, all modalities: "
                  f"{cell(overall.get('image_auroc_confident'))}. {cell(unknown)} of the parts "
                  "here are published as not confident and were never revised (no usable "
                  "modality, their stream not calibrated before it ended, or revisions "
                  "off).", ""]
    return lines


def _foreground_note(overall: dict, baselines: dict) -> List[str]:
    """What the "fg" columns mean, with this run's foreground figures and baseline polarity."""
    cov, area = overall.get("fg_defect_coverage"), overall.get("fg_area_fraction")
    if area is None or not isinstance(area, float) or math.isnan(area):
        return []
    lines = [f"\"fg\" columns: inside the part's foreground, estimated from each RGB image "
             f"alone (it covers {cell(area)} of the image on average and {cell(cov)} of the "
             "defect pixels; where it is the whole image, fg equals the whole-image figure)."]
    for name, b in baselines.items():
        if "polarity" in b:
            image = (f"; its img AUROC is the frame's mean brightness, {b['image_polarity']} "
                     "frames scored anomalous: far from 0.5, brightness alone (the capture "
                     "conditions, or defects that change the whole frame) tells good from "
                     "defective parts" if "image_polarity" in b else "")
            lines.append(f"Baseline {name}: {b['polarity']} pixels scored anomalous over the "
                         f"whole image, {b.get('polarity_fg', b['polarity'])} inside the part "
                         f"(the better of the two each){image}.")
        elif "image_polarity" in b:
            lines.append(f"Baseline {name}: its img AUROC is the image's mean level, "
                         f"{b['image_polarity']} images scored anomalous (per category its "
                         "better polarity).")
    return lines + [""]


def write_outputs(record: dict, out_dir: str, plots: bool = True,
                  title: Optional[str] = None) -> Dict[str, str]:
    """metrics.json + summary.md (+ PNG figures of the all-modality run's first draw, with the
    means over draws in their legends).

    record["baselines"] (optional): {name: metrics} of reference maps scored in the same run
    (e.g. `baselines.content_free_metrics`), shown as rows of the overall table."""
    os.makedirs(out_dir, exist_ok=True)
    if plots and "runs" in record and "all" in record["runs"]:
        run = record["runs"]["all"]
        record["figures"] = plot_run(run.draws[0], run.worst_defective, run.worst_good, out_dir,
                                     means=record["configs"]["all"].get("overall"),
                                     n_draws=len(run.draws))
    serial = {k: v for k, v in record.items() if k != "runs"}
    serial["figures"] = [os.path.basename(f) for f in record.get("figures", [])]
    paths = {"metrics": os.path.join(out_dir, "metrics.json"),
             "summary": os.path.join(out_dir, "summary.md")}
    with open(paths["metrics"], "w") as f:
        json.dump(to_json(serial), f, indent=1, allow_nan=False)
    with open(paths["summary"], "w") as f:
        f.write(markdown(record, title))
    return paths
