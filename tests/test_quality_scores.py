"""Norm outliers against the round's median, and per-client anomaly scores."""

import pytest
import torch

from fedops.quality import anomaly_scores, default_byzantine, norm_outliers, robust_z


def test_norm_outliers_hand_computed():
    u = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0], [60.0, 80.0]])  # norms 5, 1, 1, 100
    mask, norms, median = norm_outliers(u, multiple=10)
    assert norms.tolist() == [5.0, 1.0, 1.0, 100.0]
    assert median == 3.0  # mean of the middle two (1, 5)
    assert mask.tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="multiple must be > 1"):
        norm_outliers(u, multiple=1.0)


def test_anomaly_scores_hand_computed():
    u = torch.tensor([[1.0, 0.0]] * 5 + [[-2.0, 0.0]])
    agg = u.mean(dim=0)  # [0.5, 0]
    s = anomaly_scores(u, agg, num_byzantine=0, min_clients=5)
    # log norms 0 x5, log 2: median 0, MAD 0, so the scale is 1.2533 x mean |dev| = 1.2533 log 2 / 6 (above the floor 0.1)
    assert s.norm_z.tolist() == pytest.approx([0.0] * 5 + [6 / 1.2533])
    assert s.cosine.tolist() == pytest.approx([1.0] * 5 + [-1.0])
    # cosines 1 x5, -1: median 1, MAD 0, scale 1.2533 x 2 / 6
    assert s.cosine_z.tolist() == pytest.approx([0.0] * 5 + [-6 / 1.2533])
    # Krum with f = 0: each row's k - 2 = 4 nearest squared distances
    assert s.krum.tolist() == pytest.approx([0.0] * 5 + [36.0])
    assert s.flagged.tolist() == [False] * 5 + [True]  # both z-scores 4.79 beyond 3.5
    assert s.row(5)["flagged"] is True and s.row(0)["krum_score"] == pytest.approx(0.0)
    assert not anomaly_scores(u, agg, flag_norm_z=5.0, flag_cosine_z=5.0, min_clients=5).flagged.any()
    assert not anomaly_scores(u, agg, min_clients=7).flagged.any()  # too few to estimate the spread


def test_honest_spread_is_not_flagged_but_an_outlier_against_it_is():
    """Non-IID honest clients: cosines to the aggregate from 0.9 down to -0.3 (the old absolute
    cut at 0 flagged two of them); an update pointing against the round is still flagged."""
    torch.manual_seed(0)
    angles = torch.tensor([0.45, 0.6, 0.8, 1.0, 1.2, 1.4, 1.7, 1.9])  # radians from the aggregate's direction
    u = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    agg = torch.tensor([1.0, 0.0])
    s = anomaly_scores(u, agg, min_clients=5)
    assert (s.cosine < 0).sum() == 2 and not s.flagged.any()
    attacked = torch.cat([u, torch.tensor([[-3.0, 0.0]])])
    s = anomaly_scores(attacked, agg, min_clients=5)
    assert s.flagged.tolist() == [False] * 8 + [True]


def test_fewer_updates_than_min_clients_flag_no_one():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [1.1, 0.0], [1.0, -0.1], [-50.0, 0.0]])
    assert not anomaly_scores(u, u.mean(dim=0)).flagged.any()  # 6 < 10 by default
    assert anomaly_scores(u, u.mean(dim=0), min_clients=6).flagged.tolist() == [False] * 5 + [True]


def test_degenerate_cases():
    one = anomaly_scores(torch.ones(1, 3), torch.ones(3))
    assert one.krum is None and one.norm_z.tolist() == [0.0] and one.cosine.tolist() == pytest.approx([1.0])
    zero = anomaly_scores(torch.zeros(3, 2), torch.zeros(2))
    assert zero.cosine.tolist() == [0.0, 0.0, 0.0] and zero.norm_z.tolist() == [0.0, 0.0, 0.0]
    assert [default_byzantine(k) for k in (1, 3, 4, 5, 10)] == [0, 0, 0, 1, 3]


def test_robust_z_hand_computed_and_not_dragged_by_outliers():
    # 1, 2, 3, 4, 100: median 3, |dev| 2, 1, 0, 1, 97 -> MAD 1, scale 1.4826
    z = robust_z(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert z.tolist() == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826, 97 / 1.4826])
    # two of six scaled tenfold: a plain z-score stays under 1.6, the robust one flags both
    norms = torch.tensor([1.0, 1.1, 0.9, 1.05, 10.0, 11.0])
    plain = (norms - norms.mean()) / norms.std(unbiased=False)
    assert float(plain.max()) < 1.6 and (robust_z(norms)[4:] > 3).all() and (robust_z(norms)[:4].abs() < 3).all()
    assert robust_z(torch.full((4,), 2.0)).tolist() == [0.0] * 4


def test_scaled_sign_flippers_are_flagged_among_honest_clients_of_uneven_norms():
    """15 clients: 12 honest with norms spread log-normally (sigma 0.4, as uneven data sizes give)
    and directions scattered around a common one, 3 sending -10x an honest update."""
    g = torch.Generator().manual_seed(0)
    d = 50
    common = torch.randn(d, generator=g)
    honest = common + 0.8 * torch.randn(12, d, generator=g)
    honest = honest / honest.norm(dim=1, keepdim=True) * torch.exp(0.4 * torch.randn(12, 1, generator=g))
    attackers = -10 * honest[:3]
    u = torch.cat([honest, attackers])
    s = anomaly_scores(u, u.mean(dim=0))
    assert s.flagged.tolist() == [False] * 12 + [True] * 3


def test_float32_updates_score_as_their_float64_copies():
    """Float32 stacks are multiplied in float32 (block sums in float64): the scores agree with the
    float64 computation on the same values to ~1e-5, and the flags and Krum's ranking are the
    same, with a large common component, uneven norms and scaled Byzantine rows."""
    g = torch.Generator().manual_seed(3)
    d = 40_000  # more than two blocks of columns
    common = 0.05 * torch.randn(d, generator=g)
    honest = common + 0.01 * torch.randn(30, d, generator=g) * torch.linspace(0.5, 2.0, 30)[:, None]
    attack = -8.0 * honest[:4]
    u32 = torch.cat([honest, attack]).to(torch.float32)
    u64 = u32.to(torch.float64)
    agg = u32.mean(dim=0)
    s32, s64 = anomaly_scores(u32, agg), anomaly_scores(u64, agg)
    for name in ("norm", "norm_z", "cosine", "cosine_z", "krum"):
        a, b = getattr(s32, name), getattr(s64, name)
        assert a.dtype == torch.float64
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max())), name
    assert torch.equal(s32.flagged, s64.flagged) and bool(s32.flagged[30:].all()) and not s32.flagged[:30].any()
    assert torch.equal(s32.krum.argsort(), s64.krum.argsort())
