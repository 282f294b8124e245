import math

import pytest
import torch

from fedops.aggregate.fedavg import weighted_mean
from fedops.privacy import DPFedAvg, effective_noise_multiplier, split_noise_multiplier


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def noise(seed_or_gen=0):
    """A noise source (standard normals) from a seeded torch generator, for these tests."""
    g = seed_or_gen if isinstance(seed_or_gen, torch.Generator) else gen(seed_or_gen)
    return lambda n: torch.randn(n, generator=g, dtype=torch.float64)


def test_no_noise_no_clipping_is_plain_unweighted_mean_exactly():
    u = torch.randn(7, 33, generator=gen(1)) * 3
    agg = DPFedAvg(noise_multiplier=0.0, clip_norm=math.inf)
    out, metrics = agg.aggregate(u, expected_cohort=7, noise=noise(2))
    assert torch.equal(out, weighted_mean(u, torch.ones(7)))
    assert torch.equal(out, u.double().mean(0).float())
    assert metrics["noise_std"] == 0.0
    assert not {"fraction_clipped", "mean_update_norm", "cohort"} & set(metrics)  # exact, per-client: never
    # fixed denominator: dividing by the expected cohort, not the realised count
    out10, _ = agg.aggregate(u, expected_cohort=10, noise=noise(2))
    assert torch.allclose(out10, u.mean(0) * 7 / 10, atol=1e-6)


def test_fixed_clip_without_noise_matches_hand_computation():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    out, m = DPFedAvg(noise_multiplier=0.0, clip_norm=1.0).aggregate(u, expected_cohort=4, noise=noise())
    assert torch.allclose(out, torch.tensor([0.9, 1.2]) / 4)
    assert m["clip_norm"] == 1.0


def test_noise_std_matches_sigma_c_over_expected_cohort():
    sigma, c, m, d, trials = 1.3, 0.5, 8.0, 50, 2000
    u = torch.randn(6, d, generator=gen(3))
    agg = DPFedAvg(noise_multiplier=sigma, clip_norm=c)
    noiseless, _ = DPFedAvg(noise_multiplier=0.0, clip_norm=c).aggregate(u, expected_cohort=m, noise=noise())
    g = gen(4)
    drawn = torch.stack([agg.aggregate(u, expected_cohort=m, noise=noise(g))[0] - noiseless for _ in range(trials)])
    expected = sigma * c / m
    assert abs(drawn.std().item() - expected) < 0.15 * expected
    assert abs(drawn.mean().item()) < 0.05 * expected
    _, metrics = agg.aggregate(u, expected_cohort=m, noise=noise(g))
    assert metrics["noise_std"] == pytest.approx(expected)
    assert metrics["noise_std_sum"] == pytest.approx(sigma * c)


def test_same_generator_seed_reproduces():
    u = torch.randn(5, 20, generator=gen(5))
    a = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, adaptive=True)
    b = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, adaptive=True)
    for r in range(3):
        oa, ma = a.aggregate(u, expected_cohort=50, noise=noise(r))
        ob, mb = b.aggregate(u, expected_cohort=50, noise=noise(r))
        assert torch.equal(oa, ob) and ma == mb


def _norm_stream(seed, k, d, rounds):
    g = gen(seed)
    for _ in range(rounds):
        direction = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
        norms = torch.exp(0.5 * torch.randn(k, generator=g))  # lognormal, median 1
        yield direction * norms[:, None]


def test_adaptive_clip_tracks_median_without_count_noise():
    agg = DPFedAvg(noise_multiplier=0.0, clip_norm=0.1, adaptive=True, clip_count_stddev=0.0)
    history = []
    for u in _norm_stream(6, 100, 10, 200):
        _, m = agg.aggregate(u, expected_cohort=100, noise=noise())
        history.append(m["clip_norm"])
    assert history[0] == 0.1  # C0
    assert agg.clip_norm == pytest.approx(1.0, rel=0.10)
    assert history[10] > history[1]  # moving up from C0 towards the median


def test_adaptive_clip_other_quantile_and_paper_default_noise():
    # target 0.9 quantile of lognormal(0, 0.5): exp(0.5 * 1.2816)
    agg = DPFedAvg(noise_multiplier=1.0, clip_norm=0.1, adaptive=True, target_quantile=0.9)
    g = gen(7)
    for u in _norm_stream(8, 100, 10, 300):
        _, m = agg.aggregate(u, expected_cohort=100, noise=noise(g))
    assert m["clip_count_stddev"] == 5.0  # expected_cohort / 20
    assert agg.clip_norm == pytest.approx(math.exp(0.5 * 1.2816), rel=0.15)
    assert m["noise_multiplier_delta"] == pytest.approx(split_noise_multiplier(1.0, 5.0))


def test_adaptive_update_rule_by_hand():
    u = torch.tensor([[0.05, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 0.01]])  # 2 of 4 within C=0.1
    agg = DPFedAvg(noise_multiplier=0.0, clip_norm=0.1, adaptive=True, clip_count_stddev=0.0, target_quantile=0.2)
    _, m = agg.aggregate(u, expected_cohort=5, noise=noise())
    assert m["noisy_unclipped_fraction"] == pytest.approx(2 / 5)
    assert agg.clip_norm == pytest.approx(0.1 * math.exp(-0.2 * (2 / 5 - 0.2)))


def test_effective_noise_multiplier_hand_checked():
    # (3^-2 + (2*2)^-2)^-1/2 = (1/9 + 1/16)^-1/2 = 12/5
    assert effective_noise_multiplier(3.0, 2.0) == pytest.approx(2.4)
    assert split_noise_multiplier(2.4, 2.0) == pytest.approx(3.0)
    for z, sb in [(0.5, 1.0), (1.0, 5.0), (2.0, 1.5)]:
        assert effective_noise_multiplier(split_noise_multiplier(z, sb), sb) == pytest.approx(z)
    assert split_noise_multiplier(0.0, 0.0) == 0.0


def test_too_small_count_noise_refused():
    with pytest.raises(ValueError, match=r"sigma_b=0\.5.*z=1\.0"):
        split_noise_multiplier(1.0, 0.5)
    with pytest.raises(ValueError, match="0.4"):
        DPFedAvg(noise_multiplier=1.0, adaptive=True, clip_count_stddev=0.4)
    agg = DPFedAvg(noise_multiplier=1.0, adaptive=True)  # default sigma_b = m/20 = 0.5 for m=10
    with pytest.raises(ValueError, match="too small"):
        agg.aggregate(torch.ones(3, 2), expected_cohort=10, noise=noise())


def test_accounting_per_round_and_state_roundtrip():
    agg = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, population=1000, accountant="rdp", delta=1e-5)
    u = torch.randn(10, 4, generator=gen(9))
    eps = []
    for r in range(3):
        _, m = agg.aggregate(u, expected_cohort=10, noise=noise(r))
        eps.append(m["epsilon"])
    assert 0 < eps[0] < eps[1] < eps[2]
    assert agg.ledger.history == [(1.0, 0.01, 3)]
    clone = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, population=1000)
    clone.load_state_dict(agg.state_dict())
    assert clone.epsilon() == agg.epsilon() and clone.rounds == 3


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="expected_cohort.*got 0"):
        DPFedAvg(noise_multiplier=0.0).aggregate(torch.ones(2, 2), expected_cohort=0, noise=noise())
    with pytest.raises(ValueError, match="inf"):
        DPFedAvg(noise_multiplier=1.0, clip_norm=math.inf)
    with pytest.raises(ValueError, match="noise_multiplier"):
        DPFedAvg(noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="exceeds population=5"):
        DPFedAvg(noise_multiplier=1.0, population=5).aggregate(torch.ones(2, 2), expected_cohort=6, noise=noise())
