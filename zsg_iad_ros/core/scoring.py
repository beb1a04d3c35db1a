"""Zero-shot scoring: streaming mutual scoring against a rolling memory, cold-start intra-image
scoring, language scores, per-modality calibration, fusion and threshold calibration.

Units. A raw modality map is a patch distance; its raw image score is the mean of its top 0.3 %.
Both are calibrated by the same affine map c = (raw - loc) / scale, where loc / scale are the
median / MAD of the raw image scores of normal parts (taught references' leave-one-out scores, or
the stream's own history under a normal-majority assumption). Normal parts then score about
N(0, 1) in every modality, so modalities become comparable. Fusion (``fuse``) is Stouffer's sum
of the modalities' c over sqrt(n), itself ~N(0, 1) on normal parts (default), or their max.
``squash`` maps c to [0, 1].
"""
from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import log_ndtr, ndtri_exp
from scipy.stats import median_abs_deviation, norm

#: floor of the image-score scale, as a fraction of the within-part spread of normal maps
SPREAD_FLOOR = 0.5
#: c value that squash() maps to 0.5, and its temperature.
SQUASH_CENTER = 3.0
SQUASH_SCALE = 1.0


def squash(c):
    """Calibrated score (normal ~ N(0, 1)) -> [0, 1]; monotone, 0.5 at c = SQUASH_CENTER.

    A logistic below the centre; above it a rational tail 0.5 + 0.5 x / (x + 4) that never
    saturates in floating point, so strongly anomalous parts keep their ranking (a logistic
    would round them all to exactly 1.0)."""
    if torch.is_tensor(c):
        x = (c.float() - SQUASH_CENTER) / SQUASH_SCALE
        xp = x.clamp_min(0)
        return torch.where(x < 0, torch.sigmoid(x), 0.5 + 0.5 * xp / (xp + 4.0))
    x = (float(c) - SQUASH_CENTER) / SQUASH_SCALE
    if x < 0:
        return 1.0 / (1.0 + math.exp(-x))
    return 0.5 + 0.5 * x / (x + 4.0)


def unsquash(p: float) -> float:
    """Inverse of squash (p clipped to (0, 1))."""
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    if p < 0.5:
        x = math.log(p / (1 - p))
    else:
        q = 2.0 * p - 1.0
        x = 4.0 * q / (1.0 - q)
    return SQUASH_CENTER + SQUASH_SCALE * x


def local_aggregate(feat: torch.Tensor, r: int = 3) -> torch.Tensor:
    """Average each patch feature with its r x r neighbours (MuSc's neighbourhood aggregation):
    tolerance to small shifts between parts. feat (B, C, h, w) -> same shape."""
    if r <= 1:
        return feat
    return F.avg_pool2d(feat, r, stride=1, padding=r // 2, count_include_pad=False)


def mutual_score(query: torch.Tensor, memory: torch.Tensor, fraction: float = 0.2,
                 chunk: Optional[int] = None) -> torch.Tensor:
    """MuSc-style mutual score of each query patch against memory parts.

    query: (P, C); memory: (M, Q, C). For each memory part the nearest-patch distance is taken;
    the per-part minima are then averaged over the lowest ``ceil(fraction * M)`` parts. A normal
    patch finds a match in most parts; a defect that appears in a few memory parts only lowers a
    few of the minima, which the average over the lowest fraction dilutes (no poisoning).
    Returns (P,) float32 distances.
    """
    return mean_of_lowest(part_minima(query, memory, chunk), fraction)


#: floats of one block of squared distances per 16 feature channels (`part_minima`)
BLOCK_FLOATS_PER_16_CHANNELS = 1 << 19


def _parts_per_block(query_patches: int, part_patches: int, channels: int) -> int:
    """Memory parts whose distances `part_minima` computes in one matrix product. With few
    channels the product is bound by writing and reading its distances, not by arithmetic:
    a block that stays in cache (about 2 MB per 16 channels) is faster. With 9 channels, 1024
    query patches and 16 parts of 256, two parts at a time took 3 ms against 9 ms for eight
    on one thread (4 against 3 ms on two); with 128 channels eight at a time stay best."""
    budget = BLOCK_FLOATS_PER_16_CHANNELS * max(1, channels // 16)
    return max(1, min(8, budget // max(1, query_patches * part_patches)))


def part_minima(query: torch.Tensor, memory: torch.Tensor,
                chunk: Optional[int] = None) -> torch.Tensor:
    """(M, P) distance of each query patch (query (P, C)) to its nearest patch in each memory
    part (memory (M, Q, C)): the first half of `mutual_score`, kept apart so that minima
    against parts that have not changed can be reused. chunk: memory parts per matrix
    product (None: `_parts_per_block`; the distances do not depend on it beyond rounding)."""
    M = memory.shape[0]
    if M == 0:
        raise ValueError("mutual_score needs at least one memory part")
    if chunk is None:
        chunk = _parts_per_block(query.shape[0], memory.shape[1], memory.shape[2])
    mins = []
    q = query.float()
    qq = (q * q).sum(1)
    # Squared distances |q|^2 + |m|^2 - 2 q.m from one matrix product per chunk of memory parts;
    # the square root is taken of the minima only (cdist took it of every pair).
    for i in range(0, M, chunk):
        mem = memory[i:i + chunk].float()
        m, Q = mem.shape[:2]
        flat = mem.reshape(m * Q, -1)
        d2 = torch.addmm((flat * flat).sum(1)[None], q, flat.T, alpha=-2)  # (P, m * Q)
        mins.append(d2.reshape(-1, m, Q).amin(2).T)  # (m, P)
    return (torch.cat(mins, 0) + qq[None]).clamp_min(0).sqrt()


def mean_of_lowest(minima: torch.Tensor, fraction: float) -> torch.Tensor:
    """(P,) mean over the lowest ``ceil(fraction * M)`` of the (M, P) per-part minima."""
    k = max(1, math.ceil(fraction * minima.shape[0]))
    return minima.topk(k, dim=0, largest=False).values.mean(0)


def coreset(x: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy k-center selection (PatchCore's coreset): n rows of x (P, C) such that every row
    lies close to a kept one. A memory part keeps its rare patches and drops repeats of its
    common ones, so nearest-patch distances change little while scoring gets P / n times cheaper.
    Written here because it is a few lines and no maintained library offers it. The n steps
    are sequential and small: they run in numpy on the CPU, whose per-call overhead is a fraction
    of torch's (2x faster here on 1024 patches), whatever the device of x.
    Returns the (min(n, P), C) subset, on the device of x; n <= 0 keeps every row."""
    P = x.shape[0]
    if n <= 0 or n >= P:
        return x
    xf = x.detach().float().cpu().contiguous().numpy()
    sq = (xf * xf).sum(1)
    # squared distances to row i: |x|^2 + |x_i|^2 - 2 x.x_i, one matrix-vector product per row
    i = int((sq - 2 * (xf @ xf.mean(0))).argmax())  # start from the row farthest from the mean
    idx = np.empty(n, dtype=np.int64)
    idx[0] = i
    d = sq + sq[i] - 2 * (xf @ xf[i])
    for k in range(1, n):
        i = int(d.argmax())
        idx[k] = i
        np.minimum(d, sq + sq[i] - 2 * (xf @ xf[i]), out=d)
    return x[torch.from_numpy(idx).to(x.device)].contiguous()


def inner(x: torch.Tensor, margin: float) -> torch.Tensor:
    """The map without a border of ``margin`` (fraction of its side) on each side: the part of
    a map the image-level score looks at. Image borders change patch features for reasons that
    have nothing to do with the part (band-pass and padding effects, lighting fall-off), and a
    border patch has fewer counterparts in memory than an interior one."""
    h, w = x.shape[-2:]
    b = min(int(round(margin * h)), (h - 1) // 2)
    a = min(int(round(margin * w)), (w - 1) // 2)
    return x[..., b:h - b, a:w - a] if (a or b) else x


@functools.lru_cache(maxsize=8)
def _far_candidates(h: int, w: int, min_offset: float, stride: int, device: str) -> tuple:
    """(candidate patch indices, (h * w, candidates) mask of the pairs closer than min_offset),
    on `device`: the same for every part of one grid, so computed (and copied there) once."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten() / h, xx.flatten() / w], 1).float()
    cand = (yy[::stride, ::stride] * w + xx[::stride, ::stride]).flatten()
    return cand.to(device), (torch.cdist(pos, pos[cand]) < min_offset).to(device)


def intra_image_score(feat: torch.Tensor, min_offset: float = 0.25, k_frac: float = 0.02,
                      stride: int = 2) -> torch.Tensor:
    """Score with no memory: each patch against the patches of the SAME image that lie at least
    ``min_offset`` of the image size away (so a defect cannot match itself), averaging the
    distances to the ``k_frac`` nearest of them. Works for textured or repetitive parts; a
    structured part may look anomalous, which is why cold-start detections are not confident.
    The counterparts are every ``stride``-th patch in each direction: patch features are
    averaged over their neighbours (`local_aggregate`), so a stride of 2 costs a quarter and
    ranked the magnetic tiles the same (image AUROC 0.831 against 0.830 with every patch).
    feat: (C, h, w) -> (h, w) float32.
    """
    C, h, w = feat.shape
    x = feat.reshape(C, -1).T.float()
    cand, near = _far_candidates(h, w, float(min_offset), int(stride), str(feat.device))
    y = x[cand]
    d2 = torch.addmm((y * y).sum(1)[None], x, y.T, alpha=-2) + (x * x).sum(1)[:, None]
    d2 = d2.masked_fill(near, float("inf"))
    k = max(1, int(k_frac * len(cand)))
    vals = d2.topk(k, dim=1, largest=False).values.clamp_min(0).sqrt()
    vals = torch.where(torch.isfinite(vals), vals, torch.zeros_like(vals))
    return vals.mean(1).reshape(h, w)


def language_map(patch_emb: torch.Tensor, normal_text: torch.Tensor,
                 anomalous_text: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """WinCLIP-style zero-shot map: probability of the 'anomalous' state per patch.

    patch_emb (D, h, w) normalised; *_text (N, D) normalised prompt embeddings, averaged into one
    prototype per state. Returns (h, w) in [0, 1]."""
    protos = F.normalize(torch.stack([F.normalize(normal_text.mean(0), dim=0),
                                      F.normalize(anomalous_text.mean(0), dim=0)]), dim=1)
    logits = temperature * torch.einsum("dhw,sd->shw", patch_emb.float(), protos.float())
    return logits.softmax(0)[1]


def topk_mean(x: torch.Tensor, frac: float = 0.003) -> torch.Tensor:
    """Mean of the top ``frac`` of the values (at least one): the image-level score of a map,
    robust to a single noisy patch yet not diluted for a defect of a few patches."""
    flat = x.flatten()
    k = max(1, int(round(frac * flat.numel())))
    return flat.topk(k).values.mean()


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------
@dataclass
class ScoreStats:
    """Image-level calibration: c = (s - loc) / scale, normal parts ~ N(0, 1). `scores`: the
    normal scores it was estimated from, in the order they were computed (empty when it was
    not estimated from scores)."""

    loc: float
    scale: float
    scores: tuple = ()

    @staticmethod
    def of_scores(scores, spread: float = 0.0, min_rel_scale: float = 0.05,
                  min_abs_scale: float = 1e-3, quantile: Optional[float] = None,
                  n_independent: Optional[int] = None) -> "ScoreStats":
        """Median and MAD (x 1.4826, a consistent sigma estimate under a normal majority). The
        floor (a fraction of the location) keeps a few references that happen to agree closely
        from producing a hair-trigger scale; the absolute floor (patch features are unit-norm
        groups, distances lie in [0, 2]) does the same for a featureless modality whose normal
        distances are all near zero. ``spread`` is the typical within-part spread of normal raw
        maps (95th percentile - median); half of it is also a floor, since image scores cannot
        be trusted to vary less between parts than patches vary within one part.

        ``quantile`` (the per-modality quantile the threshold sits at) widens the scale for
        small samples: a new normal part falls outside the n scores' range more often than a
        Gaussian with their spread predicts, so the scale is multiplied by
        ``small_sample_factor(n, quantile)`` and the fixed threshold keeps its false-alarm
        rate whether 4 references or 64 parts of history calibrate the stream. ``n_independent``
        is n when the scores are not independent draws (several orientations of one part)."""
        s = np.asarray(scores, dtype=np.float64)
        loc = float(np.median(s))
        mad = float(median_abs_deviation(s, scale="normal"))
        scale = max(mad, min_rel_scale * abs(loc), SPREAD_FLOOR * spread, min_abs_scale)
        if quantile is not None:
            scale *= small_sample_factor(n_independent or len(s), quantile)
        return ScoreStats(loc, scale, tuple(float(v) for v in s))


def correlated_weight(calibration, k: int) -> float:
    """sqrt(sum of the correlation matrix) of k calibrated scores that may be correlated
    (feature views of one image): the standard deviation of their sum on normal parts, so
    sum(c) / weight is ~N(0, 1) whatever the correlation (Stouffer's combination of dependent
    tests; written here: scipy's combine_pvalues assumes independent ones). The correlations
    are those of the normal scores in `calibration` (one sequence per score, computed on the
    same parts in the same order), clipped to [0, 1]; without 3 such scores each, or where one
    is constant, they count as 1 (weight k: the sum becomes the mean, never wider than
    N(0, 1))."""
    rho = np.ones((k, k))
    if calibration is not None and k > 1:
        cal = [np.asarray(s, dtype=np.float64) for s in calibration]
        n = {s.size for s in cal}
        if len(cal) == k and len(n) == 1 and n.pop() >= 3 and all(np.ptp(s) > 0 for s in cal):
            rho = np.clip(np.corrcoef(np.stack(cal)), 0.0, 1.0)
    return float(math.sqrt(rho.sum()))


def small_sample_factor(n: int, quantile: float) -> float:
    """Ratio of the prediction-interval quantile for one new draw from n normal samples
    (Student t with n - 1 degrees of freedom, times sqrt(1 + 1 / n)) to the Gaussian quantile:
    about 2.8 for 4 references at the default quantile, 1.04 for 64 parts of history."""
    from scipy.stats import t

    n = max(int(n), 4)  # fewer samples say nothing more reliable about the tail than 4
    q = min(max(float(quantile), 0.5 + 1e-6), 1 - 1e-9)
    return float(t.ppf(q, n - 1) * math.sqrt(1 + 1 / n) / norm.ppf(q))


#: fusion of the modalities' calibrated scores: Stouffer's sum / sqrt(n), the max, or the
#: omnibus of the two
FUSIONS = ("stouffer", "max", "omnibus")
#: the omnibus fusion's lowest score (its p-value 1 - 3e-7): nothing normal ranks below it
OMNIBUS_FLOOR = -5.0


def fuse(values, fusion: str = "stouffer", weights=None):
    """Fused calibrated score of per-modality c values (floats, or maps of one shape).

    'stouffer': sum(c) / sqrt(n), ~N(0, 1) when each c is and the modalities' noise is
    independent; noise that one modality's normal parts show averages out against the others,
    and a defect seen by several modalities adds up. 'max': the largest c; a defect seen by one
    modality alone keeps its full score, but so does every modality's normal tail. Measured
    on MulSen-AD with 4 references (docs/DETECTOR.md, "Calibration, fusion and threshold"),
    Stouffer kept the best modality's AUROC where the max fell below it. 'omnibus' (floats or
    numpy arrays, not torch maps): whichever of the two is more significant, each as a p-value
    (the max's with a Bonferroni factor n) and the smaller doubled (Bonferroni over the two
    tests), back on the N(0, 1) scale: a defect that one score out of many sees clearly is not
    averaged away, and the false-alarm rate stays at most the nominal one. `weights`
    (Stouffer's only): sum(w c) / sqrt(sum(w^2)), still ~N(0, 1)."""
    values = list(values)
    if not values:
        raise ValueError("fuse needs at least one modality score")
    if fusion == "max":
        if isinstance(values[0], torch.Tensor):
            return torch.stack(values).amax(0)
        return np.max(values, axis=0)
    if fusion == "stouffer":
        if weights is not None:
            w = [float(x) for x in weights]
            if len(w) != len(values) or min(w) <= 0:
                raise ValueError("fuse needs one positive weight per score")
            return sum(wi * v for wi, v in zip(w, values)) / math.sqrt(sum(x * x for x in w))
        return sum(values[1:], values[0]) / math.sqrt(len(values))
    if fusion == "omnibus":
        if isinstance(values[0], torch.Tensor):
            raise ValueError("omnibus fusion takes floats or numpy arrays")
        c = np.asarray(values, dtype=np.float64)
        if len(c) == 1:
            return c[0] if c.ndim > 1 else float(c[0])
        # in log p-values: a strong defect's tail probability underflows a float (hence not
        # scipy's combine_pvalues, which also has no minimum of two tests)
        log_sum = norm.logsf(c.sum(0) / math.sqrt(len(c)))
        log_max = math.log(len(c)) + norm.logsf(c.max(0))
        log_p = np.minimum(0.0, math.log(2.0) + np.minimum(log_sum, log_max))
        # floored where the doubled p-value reaches 1 (a plainly normal part), not -inf
        out = np.maximum(-ndtri_exp(log_p), OMNIBUS_FLOOR)
        return float(out) if out.ndim == 0 else out
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")


def max_of_normals(values) -> float:
    """The largest of n calibrated scores, back on the N(0, 1) scale: Phi^-1(Phi(max)^n), the
    exact law of the max of n independent N(0, 1) scores (in log space, so a strong score keeps
    its rank). A score that one of them sees alone keeps nearly all of it (5.0 -> 4.86 for
    n = 2) where their sum would divide it by sqrt(n); a normal part stays N(0, 1), so the
    result fuses with other modalities' scores like any one of them."""
    c = [float(v) for v in values]
    if not c:
        raise ValueError("max_of_normals needs at least one score")
    m, n = max(c), len(c)
    if m < 5.0:
        return float(ndtri_exp(n * log_ndtr(m)))
    # far tail: 1 - Phi(m)^n = n (1 - Phi(m)) to float precision, and Phi(m) rounds to 1
    return float(-ndtri_exp(math.log(n) + norm.logsf(m)))


def modality_quantile(target_false_alarm_rate: float, n_modalities: int,
                      fusion: str = "stouffer") -> float:
    """Quantile of each modality's normal scores at the threshold. Stouffer's fused score is
    itself ~N(0, 1), the omnibus's exceeds a level at most as often: the quantile is 1 - rate.
    The max over n modalities gives each one a share of the false-alarm rate (Bonferroni):
    1 - rate / n."""
    rate = min(max(float(target_false_alarm_rate), 1e-6), 0.5)
    return 1.0 - rate / (max(1, n_modalities) if fusion == "max" else 1)


def calibrated_threshold(target_false_alarm_rate: float, n_modalities: int,
                         fusion: str = "stouffer") -> float:
    """Threshold on the fused calibrated score c for a target false-alarm rate per part.

    Each modality's c is ~N(0, 1) on normal parts: t = Phi^-1(modality_quantile(...))."""
    return float(norm.ppf(modality_quantile(target_false_alarm_rate, n_modalities, fusion)))


def false_alarm_rate_at(c: float, n_modalities: int, fusion: str = "stouffer") -> float:
    """The nominal per-part false-alarm rate of a threshold c on the fused calibrated score:
    the inverse of `calibrated_threshold`."""
    tail = float(norm.sf(c))
    return min(1.0, tail * max(1, n_modalities)) if fusion == "max" else tail


def miss_rate_threshold(defect_scores, target_miss_rate: float) -> Tuple[float, float]:
    """(threshold, bound) from the scores of n known-defective parts: a new defective part
    exchangeable with them scores below the j-th smallest with probability j / (n + 1)
    (distribution-free), so the j-th smallest score with j = floor(rate (n + 1)) lets at most
    the target share pass. With fewer than 1 / rate - 1 parts no score can promise the rate:
    the smallest is taken, and `bound` (j / (n + 1), j >= 1) says what it promises."""
    s = np.sort(np.asarray(list(defect_scores), dtype=np.float64))
    if s.size == 0:
        raise ValueError("miss_rate_threshold needs at least one defect score")
    n = s.size
    j = max(1, int(math.floor(float(target_miss_rate) * (n + 1) + 1e-9)))
    return float(s[j - 1]), j / (n + 1)


@dataclass
class ModalityState:
    """Per stream, per modality: rolling memory of patch features and raw score history."""

    memory: Deque[torch.Tensor]
    pinned: List[torch.Tensor] = field(default_factory=list)  # taught references, never rotated
    raw_scores: Deque[float] = field(default_factory=lambda: deque(maxlen=64))
    raw_spreads: Deque[float] = field(default_factory=lambda: deque(maxlen=64))
    taught: Optional[ScoreStats] = None
    #: untaught stream before its history calibrates it: its first memory parts, whole
    #: ((C, h, w) features, memory entry), and the leave-one-out calibration they give
    early: List[tuple] = field(default_factory=list)
    #: early_minima[i][j]: (P,) nearest-patch distances of early part i's patches to early part
    #: j's memory entry (i != j), so each new early part costs its own pairs only
    early_minima: List[List[Optional[torch.Tensor]]] = field(default_factory=list)
    provisional: Optional[ScoreStats] = None

    def memory_tensor(self) -> Optional[torch.Tensor]:
        parts = list(self.pinned) + list(self.memory)
        return torch.stack(parts) if parts else None

    def calibrated(self, min_history: int) -> bool:
        """Whether the stream's own calibration exists: taught references, or `min_history`
        scores of history (`score_stats` then gives neither the provisional one nor None)."""
        return self.taught is not None or len(self.raw_scores) >= min_history

    def score_stats(self, min_history: int, quantile: Optional[float] = None
                    ) -> Optional[ScoreStats]:
        """Taught references first, else the stream's own history (normal-majority
        assumption), else its first memory parts' leave-one-out calibration (`provisional`),
        else None (cold start). ``quantile``: see ScoreStats.of_scores."""
        if self.taught is not None:
            return self.taught
        if self.calibrated(min_history):
            return ScoreStats.of_scores(list(self.raw_scores),
                                        spread=float(np.median(self.raw_spreads)),
                                        quantile=quantile)
        return self.provisional


def cold_start_stats(raw: torch.Tensor) -> ScoreStats:
    """Stats from the part itself when nothing else exists: its 99th percentile as location and
    half its (99th percentile - median) as scale, so only a peak standing well clear of the
    part's own upper tail scores high. Detections made this way are marked not confident."""
    v = raw.flatten().float()
    med, q99 = float(v.median()), float(torch.quantile(v, 0.99))
    return ScoreStats(q99, max((q99 - med) / 2, 1e-4))


def spread(raw: torch.Tensor) -> float:
    """95th percentile - median of a raw map: the within-part spread of patch scores."""
    v = raw.flatten().float()
    return float(torch.quantile(v, 0.95) - v.median())
