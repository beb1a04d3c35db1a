"""Pure scoring functions: mutual scoring (incl. poisoning), cold start, calibration."""
import math

import numpy as np
import torch

from zsg_iad_ros.core import scoring as sc


def _parts(n, P=64, C=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(P, C, generator=g)
    return [base + 0.05 * torch.randn(P, C, generator=g) for _ in range(n)], base


def test_mutual_score_flags_new_patch_and_resists_poisoning():
    parts, base = _parts(12)
    q = base.clone() + 0.05 * torch.randn(base.shape, generator=torch.Generator().manual_seed(9))
    defect = torch.full((8,), 3.0)
    q[5] = defect
    # two memory parts carry the same defect: it must still stand out
    mem = torch.stack(parts)
    mem[0, 7] = defect
    mem[1, 9] = defect
    s = sc.mutual_score(q, mem, fraction=0.3)
    assert int(s.argmax()) == 5
    others = torch.cat([s[:5], s[6:]])
    assert s[5] > 5 * others.max()
    # a plain nearest neighbour over the pooled memory would be fooled
    nn = torch.cdist(q, mem.reshape(-1, 8)).min(1).values
    assert nn[5] < 1e-6


def test_intra_image_score_finds_odd_patch():
    g = torch.Generator().manual_seed(1)
    f = 0.05 * torch.randn(4, 16, 16, generator=g) + torch.tensor([1.0, 0, 0, 0])[:, None, None]
    f[:, 3, 12] = torch.tensor([0.0, 2.0, 0, 0])
    s = sc.intra_image_score(f)
    assert tuple(np.unravel_index(int(s.argmax()), s.shape)) == (3, 12)


def test_language_map_prefers_closer_state():
    normal = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0]]), dim=1)
    anom = torch.nn.functional.normalize(torch.tensor([[0.0, 1.0, 0]]), dim=1)
    emb = torch.zeros(3, 2, 2)
    emb[0] = 1
    emb[:, 1, 1] = torch.tensor([0.0, 1.0, 0.0])
    m = sc.language_map(emb, normal, anom)
    assert m[1, 1] > 0.99 and m[0, 0] < 0.01


def test_score_stats_and_threshold():
    st = sc.ScoreStats.of_scores([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 30.0])  # one outlier
    assert abs(st.loc - 1.0) < 1e-9 and st.scale < 0.2
    st2 = sc.ScoreStats.of_scores([1.0, 1.0, 1.0], spread=0.4)
    assert st2.scale == 0.2  # floor from the within-part spread
    t = sc.calibrated_threshold(0.01, 1)
    assert abs(t - 2.3263) < 1e-3
    assert sc.calibrated_threshold(0.01, 3) > t  # shared false-alarm budget
    assert abs(sc.unsquash(sc.squash(4.2)) - 4.2) < 1e-6
    assert sc.squash(sc.SQUASH_CENTER) == 0.5
    assert math.isclose(float(sc.squash(torch.tensor(1.0))), sc.squash(1.0), rel_tol=1e-6)


def test_cold_start_stats_from_own_map():
    raw = torch.ones(32, 32)
    raw[0, 0] = 10.0
    st = sc.cold_start_stats(raw)
    assert st.loc == 1.0 and st.scale > 0
    assert float(sc.topk_mean((raw - st.loc) / st.scale)) > 3
