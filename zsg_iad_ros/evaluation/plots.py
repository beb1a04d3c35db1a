"""Figures of an evaluation run (matplotlib, Agg backend: no display needed).

roc.png        image ROC, pixel ROC over the whole image and inside the part's foreground
pro.png        PRO curves (whole image, inside the foreground) up to FPR 1 with the AUPRO
               integration limit marked

With teach-mode draws the curves are those of one draw (the first): legends give that draw's
figure and, next to it, the mean over draws that the summary tables report.
scores.png     pred_score histograms of good vs defective parts with the threshold in force
examples_*.png worst misses / false alarms: RGB, anomaly map, GT contour (green),
               predicted contour (red) and the estimated part foreground (cyan, dotted)
"""
from __future__ import annotations

import os
from typing import List, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zsg_iad_ros.evaluation import metrics as M  # noqa: E402
from zsg_iad_ros.evaluation.results import SampleResult  # noqa: E402


def _fmt(value) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.3f}"


def _figure(value, key: str, means: Optional[Mapping[str, object]], n_draws: int) -> str:
    """"0.700" for a single draw; "0.700 (draw 1 of 3; mean over draws 0.760)" otherwise, so a
    plot never shows one draw's figure as if it were the summary's mean."""
    if n_draws <= 1:
        return _fmt(value)
    mean = None if means is None else means.get(key)
    return (f"{_fmt(value)} (draw 1 of {n_draws}; mean over draws "
            f"{_fmt(None if mean is None else float(mean))})")


def _title(name: str, n_draws: int) -> str:
    return name if n_draws <= 1 else f"{name}, draw 1 of {n_draws}"


def _pixel_sets(results: Sequence[SampleResult]):
    """(gts, maps, foregrounds or None) of the results with pixel ground truth and a map; the
    foregrounds only when every one of them has one (else no foreground curve is drawn)."""
    px = [r for r in results if r.gt_mask is not None and r.anomaly_map is not None]
    gts, maps = [r.gt_mask for r in px], [r.anomaly_map for r in px]
    fgs = [r.foreground for r in px]
    return gts, maps, (fgs if px and all(f is not None for f in fgs) else None)


def plot_roc(results: Sequence[SampleResult], path: str,
             means: Optional[Mapping[str, object]] = None, n_draws: int = 1) -> str:
    """Image and pixel ROC curves of `results` (one draw). means: the metrics averaged over
    the `n_draws` draws (e.g. the record's "overall"), shown next to this draw's figures."""
    labels = [r.label for r in results]
    scores = [r.pred_score for r in results]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    fpr, tpr = M.roc_points(labels, scores)
    if fpr.size:
        auc = _figure(M.image_auroc(labels, scores), "image_auroc", means, n_draws)
        ax.plot(fpr, tpr, label=f"image AUROC {auc}")
    gts, maps, fgs = _pixel_sets(results)
    curves = [("pixel", None, "pixel_auroc")]
    if fgs is not None:
        curves.append(("pixel, inside the part", fgs, "pixel_auroc_fg"))
    for name, fg, key in curves:
        if not gts:
            break
        y, s = M.pooled_pixels(gts, maps, fg)
        pfpr, ptpr = M.roc_points(y.astype(int), s)
        if pfpr.size:
            auc = _figure(M.pixel_auroc(gts, maps, fg), key, means, n_draws)
            ax.plot(pfpr, ptpr, label=f"{name} AUROC {auc}")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=_title("ROC", n_draws), xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_pro(results: Sequence[SampleResult], path: str,
             means: Optional[Mapping[str, object]] = None, n_draws: int = 1) -> str:
    """PRO curves of `results` (one draw), whole image and inside the part; see `plot_roc`."""
    gts, maps, fgs = _pixel_sets(results)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    curves = [("whole image", None, "aupro")]
    if fgs is not None:
        curves.append(("inside the part", fgs, "aupro_fg"))
    for name, fg, key in curves:
        if not gts:
            break
        fpr, pro = M.pro_curve(gts, maps, fg)
        if fpr.size:
            value = _figure(M.aupro(gts, maps, foregrounds=fg), key, means, n_draws)
            ax.plot(fpr, pro, label=f"{name}: AUPRO@{M.AUPRO_MAX_FPR} {value}")
    ax.axvline(M.AUPRO_MAX_FPR, color="0.5", ls=":", lw=1, label="integration limit")
    ax.set(xlabel="false positive rate (pixels)", ylabel="per-region overlap",
           title=_title("PRO", n_draws), xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_scores(results: Sequence[SampleResult], path: str, n_draws: int = 1) -> str:
    good = np.array([r.pred_score for r in results if r.label == 0])
    bad = np.array([r.pred_score for r in results if r.label == 1])
    thr = np.array([r.threshold for r in results if np.isfinite(r.threshold)])
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(good, bins=bins, alpha=0.6, label=f"good (n={good.size})", color="tab:green")
    ax.hist(bad, bins=bins, alpha=0.6, label=f"defective (n={bad.size})", color="tab:red")
    if thr.size:
        med = float(np.median(thr))
        span = f", range {thr.min():.2f}-{thr.max():.2f}" if thr.max() - thr.min() > 1e-6 else ""
        ax.axvline(med, color="k", ls="--", label=f"threshold (median {med:.2f}{span})")
    ax.set(xlabel="pred_score", ylabel="parts", title=_title("Image scores", n_draws))
    ax.legend()
    return _save(fig, path)


def plot_examples(examples: Sequence[SampleResult], path: str, title: str) -> str:
    """One row per example: RGB with contours, anomaly map with contours."""
    rows = max(len(examples), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(6.5, 3.1 * rows), squeeze=False)
    for row, r in zip(axes, examples):
        rgb = r.rgb
        row[0].imshow(rgb)
        amap = r.anomaly_map
        if amap is not None:
            stride = max(1, rgb.shape[0] // amap.shape[0])
            # A fixed [0, 1] scale (the map's range), so colours compare across parts.
            im = row[1].imshow(amap, cmap="inferno", vmin=0, vmax=max(1.0, float(amap.max())))
            fig.colorbar(im, ax=row[1], fraction=0.046)
            for ax, scale in ((row[0], stride), (row[1], 1)):
                ext = _extent(amap.shape, scale)
                if r.gt_mask is not None and r.gt_mask.any():
                    ax.contour(r.gt_mask.astype(float), levels=[0.5], colors="lime",
                               linewidths=1.2, extent=ext, origin="upper")
                if r.pred_mask is not None and r.pred_mask.any():
                    ax.contour(r.pred_mask.astype(float), levels=[0.5], colors="red",
                               linewidths=1.0, extent=ext, origin="upper")
                if r.foreground is not None and not r.foreground.all():
                    ax.contour(r.foreground.astype(float), levels=[0.5], colors="cyan",
                               linewidths=0.8, linestyles="dotted", extent=ext,
                               origin="upper")
        else:
            row[1].text(0.5, 0.5, r.pixel_skip_reason or "no map", ha="center", va="center",
                        transform=row[1].transAxes, wrap=True)
        verdict = "flagged" if r.is_anomalous else "passed"
        wrong = (r.label == 1) != r.is_anomalous
        sid = r.sample_id if len(r.sample_id) <= 44 else "..." + r.sample_id[-41:]
        row[0].set_title(f"{r.category}/{r.defect_type}\n{sid}", fontsize=7)
        row[1].set_title(f"score {r.pred_score:.3f} thr {r.threshold:.3f}: {verdict}"
                         f"{' (WRONG)' if wrong else ''}", fontsize=8,
                         color="red" if wrong else "black")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    if not examples:
        axes[0][0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(f"{title}\n(green: ground truth, red: predicted mask, cyan dotted: part "
                 "foreground)", fontsize=9)
    return _save(fig, path)


def _extent(shape, scale):
    h, w = shape
    return (-0.5, w * scale - 0.5, h * scale - 0.5, -0.5)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_run(results: Sequence[SampleResult], worst_defective: Sequence[SampleResult],
             worst_good: Sequence[SampleResult], out_dir: str, prefix: str = "",
             means: Optional[Mapping[str, object]] = None, n_draws: int = 1) -> List[str]:
    """All figures of one run into out_dir; returns the written paths. `results` is one draw
    (the first) of `n_draws`; `means` the metrics averaged over the draws."""
    os.makedirs(out_dir, exist_ok=True)
    p = lambda name: os.path.join(out_dir, prefix + name)  # noqa: E731
    paths = [plot_roc(results, p("roc.png"), means, n_draws),
             plot_pro(results, p("pro.png"), means, n_draws),
             plot_scores(results, p("scores.png"), n_draws)]
    paths.append(plot_examples(worst_defective, p("examples_misses.png"),
                               "Lowest-scoring defective parts"))
    paths.append(plot_examples(worst_good, p("examples_false_alarms.png"),
                               "Highest-scoring good parts"))
    return paths
