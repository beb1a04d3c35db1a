"""Pure scoring functions: mutual scoring (incl. poisoning), cold start, calibration."""
import math

import numpy as np
import pytest
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


def test_part_minima_are_the_nearest_distances_whatever_the_block_of_parts():
    """The memory parts are taken a few at a time (fewer where the features have few channels,
    `_parts_per_block`): each part's minima are the nearest-patch distances computed directly,
    for any block size."""
    g = torch.Generator().manual_seed(4)
    for C, expected_block in ((9, 2), (128, 8)):
        q = torch.randn(1024, C, generator=g)
        mem = torch.randn(5, 256, C, generator=g)
        assert sc._parts_per_block(1024, 256, C) == expected_block
        direct = torch.stack([torch.cdist(q.double(), m.double()).min(1).values
                              for m in mem]).float()
        for chunk in (None, 1, 3, 8):
            torch.testing.assert_close(sc.part_minima(q, mem, chunk), direct, rtol=1e-4,
                                       atol=1e-4)
    assert sc._parts_per_block(4096, 4096, 3) == 1  # a block never has fewer than one part


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
    assert sc.calibrated_threshold(0.01, 3, "max") > t  # shared false-alarm budget
    assert sc.calibrated_threshold(0.01, 3, "stouffer") == t  # the fused score is ~N(0, 1)
    assert abs(sc.unsquash(sc.squash(4.2)) - 4.2) < 1e-6
    assert sc.squash(sc.SQUASH_CENTER) == 0.5
    assert math.isclose(float(sc.squash(torch.tensor(1.0))), sc.squash(1.0), rel_tol=1e-6)


@pytest.mark.parametrize("fusion", sc.FUSIONS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_fused_normal_scores_meet_the_target_false_alarm_rate(fusion, n):
    # normal parts: every modality's calibrated score ~N(0, 1), independent
    c = np.random.default_rng(n).standard_normal((200_000, n))
    fused = sc.fuse([c[:, k] for k in range(n)], fusion)
    for rate in (0.01, 0.05):
        realised = float(np.mean(fused >= sc.calibrated_threshold(rate, n, fusion)))
        if fusion == "omnibus" and n > 1:  # Bonferroni over its two tests: conservative
            assert 0.5 * rate < realised <= rate * 1.05
        else:
            assert abs(realised - rate) < 0.1 * rate


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_correlated_views_fuse_to_the_target_false_alarm_rate(rho):
    """Two views of one image whose normal scores correlate by rho, and a third, independent
    modality: weighted by the deviation of the views' sum, estimated from 64 calibration parts,
    the fused normal score stays ~N(0, 1) (the plain sum of three would widen by
    sqrt(1 + 2 rho / 3)); without calibration the views count as one."""
    rng = np.random.default_rng(int(rho * 10))
    cov = [[1.0, rho], [rho, 1.0]]
    cal = rng.multivariate_normal([0, 0], cov, 64).T
    c = rng.multivariate_normal([0, 0], cov, 20_000)
    other = rng.standard_normal(20_000)
    w = sc.correlated_weight(cal, 2)
    assert w == pytest.approx(math.sqrt(2 + 2 * np.clip(np.corrcoef(cal)[0, 1], 0, 1)))
    fused = sc.fuse([c.sum(1) / w, other], "stouffer", weights=[w, 1.0])
    assert fused == pytest.approx((c.sum(1) + other) / math.sqrt(w * w + 1))
    t = sc.calibrated_threshold(0.05, 1)
    assert abs(float(np.mean(fused >= t)) - 0.05) < 0.012
    assert sc.correlated_weight(None, 2) == 2.0  # no calibration: counted as one
    assert sc.correlated_weight([[0, 0, 0], [1, 2, 3]], 2) == 2.0  # constant scores
    assert sc.correlated_weight(None, 1) == 1.0
    with pytest.raises(ValueError, match="weight"):
        sc.fuse([1.0, 2.0], "stouffer", weights=[1.0])
    # scores carried by the calibration they came from
    assert sc.ScoreStats.of_scores([1.0, 2.0, 4.0]).scores == (1.0, 2.0, 4.0)


def test_fusion_of_scores_and_maps():
    assert sc.fuse([3.0, 0.0, 0.0], "max") == 3.0
    assert math.isclose(sc.fuse([3.0, 0.0, 0.0], "stouffer"), math.sqrt(3))
    # a defect seen by two modalities adds up; one modality's normal tail averages out
    assert sc.fuse([2.0, 2.0, 0.0], "stouffer") > sc.fuse([3.0, 0.0, -0.5], "stouffer")
    maps = [torch.zeros(4, 4), torch.zeros(4, 4)]
    maps[0][1, 1], maps[1][1, 1] = 2.0, 1.0
    assert torch.equal(sc.fuse(maps, "max"), maps[0])
    assert math.isclose(float(sc.fuse(maps, "stouffer")[1, 1]), 3 / math.sqrt(2), rel_tol=1e-6)
    # omnibus: one clear score among many is not averaged away, as Stouffer's sum does, and
    # several moderate ones still add up; a score too strong for float tail
    # probabilities stays finite and ranked
    one = [4.0, -0.4, 0.3, -0.4, 0.2, -0.9]
    assert sc.fuse(one, "omnibus") > 1.645 > sc.fuse(one, "stouffer")
    assert sc.fuse([2.0] * 4, "omnibus") > max(2.0, sc.calibrated_threshold(0.05, 4, "omnibus"))
    assert 50.0 > sc.fuse([50.0, 0.0], "omnibus") > sc.fuse([40.0, 0.0], "omnibus") > 39.0
    assert sc.fuse([-3.0, -3.0], "omnibus") == sc.OMNIBUS_FLOOR
    assert sc.fuse([1.5], "omnibus") == 1.5
    with pytest.raises(ValueError, match="fusion"):
        sc.fuse([1.0], "mean")
    with pytest.raises(ValueError, match="at least one"):
        sc.fuse([], "max")


def test_cold_start_stats_from_own_map():
    raw = torch.ones(32, 32)
    raw[0, 0] = 10.0
    st = sc.cold_start_stats(raw)
    assert st.loc == 1.0 and st.scale > 0
    assert float(sc.topk_mean((raw - st.loc) / st.scale)) > 3


def test_coreset_keeps_rare_rows_and_covers_the_rest():
    g = torch.Generator().manual_seed(1)
    common = torch.randn(4, 8, generator=g)
    x = common[torch.arange(200) % 4] + 0.01 * torch.randn(200, 8, generator=g)
    rare = torch.full((8,), 5.0)
    x[123] = rare
    kept = sc.coreset(x, 8)
    assert kept.shape == (8, 8)
    assert any(torch.equal(k, rare) for k in kept)           # the one rare row survives
    assert torch.cdist(x, kept).min(1).values.max() < 0.1    # every row lies near a kept one
    assert all((x == k).all(1).any() for k in kept)          # kept rows are rows of x
    assert sc.coreset(x, 0) is x and sc.coreset(x, 500) is x


def test_inner_drops_the_border():
    m = torch.zeros(32, 32)
    m[0, 5] = 9.0          # a border hot spot: left out of the image score
    assert sc.inner(m, 0.0625).shape == (28, 28)
    assert float(sc.topk_mean(sc.inner(m, 0.0625))) == 0.0
    m[16, 16] = 9.0        # an interior one counts
    assert float(sc.topk_mean(sc.inner(m, 0.0625))) > 0
    assert sc.inner(m, 0.0) is m


def test_small_sample_factor_widens_few_references_only():
    q = 1 - 0.01 / 3
    f = [sc.small_sample_factor(n, q) for n in (1, 4, 8, 64, 10_000)]
    assert f[0] == f[1] > 2 and f[1] > f[2] > f[3] > f[4]
    assert abs(f[4] - 1) < 0.01
    few = sc.ScoreStats.of_scores([1.0, 1.1, 0.9, 1.05], quantile=q)
    plain = sc.ScoreStats.of_scores([1.0, 1.1, 0.9, 1.05])
    assert few.loc == plain.loc and abs(few.scale / plain.scale - f[1]) < 1e-9
    # scores that are not independent (orientations of the same 4 parts) count as 4
    rot = sc.ScoreStats.of_scores([1.0, 1.1, 0.9, 1.05] * 4, quantile=q, n_independent=4)
    assert abs(rot.scale / plain.scale - f[1]) < 1e-9


def test_max_of_normals_is_normal_on_normal_scores_and_keeps_a_strong_one():
    rng = np.random.default_rng(3)
    v = np.array([sc.max_of_normals(x) for x in rng.standard_normal((40000, 2))])
    assert abs(v.mean()) < 0.03 and abs(v.std() - 1.0) < 0.03
    assert 0.045 < (v > 1.645).mean() < 0.055
    assert 4.8 < sc.max_of_normals([5.0, -1.0]) < 5.0      # one strong score, barely lowered
    assert sc.max_of_normals([5.0, 0.0]) == pytest.approx(sc.max_of_normals([0.0, 5.0]))
    assert 39.9 < sc.max_of_normals([40.0, 0.0]) < 40.0    # far tail: no overflow to inf
    assert sc.max_of_normals([1.2]) == pytest.approx(1.2)
    with pytest.raises(ValueError):
        sc.max_of_normals([])
