import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.aggregate import AGGREGATORS
from fedops.aggregate.robust import canonical_order, krum_scores, pairwise_sq_distances

ONES = torch.ones

# (spec, smallest cohort it accepts)
RULES = [
    ({"name": "median"}, 1),
    ({"name": "trimmed_mean", "beta": 0.2}, 1),
    ({"name": "krum", "num_byzantine": 1}, 5),
    ({"name": "multi_krum", "num_byzantine": 1}, 5),
    ({"name": "multi_krum", "num_byzantine": 0, "m": 2}, 3),
    ({"name": "bulyan", "num_byzantine": 1}, 7),
    ({"name": "geometric_median"}, 1),
    ({"name": "norm_bounded", "max_norm": 1.0}, 1),
    ({"name": "fltrust"}, 1),
]


def run(spec, u, w=None, **kw):
    rule = AGGREGATORS.build(spec)
    w = ONES(u.shape[0], dtype=u.dtype) if w is None else w
    return rule.aggregate(u, weights=w, **kw)


def rand(k, d, seed, discrete=False):
    g = torch.Generator().manual_seed(seed)
    if discrete:  # small integers: many exact ties and duplicate rows
        u = torch.randint(-2, 3, (k, d), generator=g).to(torch.float64)
    else:
        u = torch.randn(k, d, generator=g, dtype=torch.float64)
    w = torch.randint(1, 4, (k,), generator=g).to(torch.float64)
    ref = torch.randn(d, generator=g, dtype=torch.float64)
    perm = torch.randperm(k, generator=g)
    return u, w, ref, perm


# ------------------------------------------------------------------------------------------- #
# registry, flags, refusals


def test_registered_with_flags():
    for key in ["median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geometric_median", "fltrust"]:
        assert key in AGGREGATORS
    for spec, _ in RULES:
        rule = AGGREGATORS.build(spec)
        assert rule.needs_individual_updates is (spec["name"] != "norm_bounded")
        assert getattr(rule, "needs_reference", False) is (spec["name"] == "fltrust")


def test_unknown_rule_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown aggregator 'krumm'.*bulyan.*krum.*median"):
        AGGREGATORS.build({"name": "krumm", "num_byzantine": 1})


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "trimmed_mean", "beta": 0.5},
        {"name": "trimmed_mean", "beta": -0.1},
        {"name": "krum", "num_byzantine": -1},
        {"name": "krum"},  # f is required
        {"name": "multi_krum", "num_byzantine": 1, "m": 0},
        {"name": "bulyan", "num_byzantine": 1, "extra": 3},
        {"name": "geometric_median", "eps": 0.0},
        {"name": "norm_bounded", "max_norm": 0.0},
    ],
)
def test_bad_hyperparameters_are_refused(spec):
    with pytest.raises(ValueError):  # pydantic.ValidationError is a ValueError
        AGGREGATORS.build(spec)


@pytest.mark.parametrize("n,f", [(4, 1), (2, 0), (6, 2)])
def test_krum_refuses_n_le_2f_plus_2(n, f):
    for name in ["krum", "multi_krum"]:
        spec = {"name": name, "num_byzantine": f}
        with pytest.raises(ValueError, match=rf"n > 2f \+ 2.*n={n}.*f={f}"):
            run(spec, torch.randn(n, 3))
        with pytest.raises(ValueError, match=rf"n={n}.*f={f}"):
            AGGREGATORS.build(spec).check_cohort(n)
        AGGREGATORS.build(spec).check_cohort(2 * f + 3)  # smallest accepted cohort


def test_bulyan_refuses_n_below_4f_plus_3():
    with pytest.raises(ValueError, match=r"n >= 4f \+ 3.*n=10.*f=2"):
        run({"name": "bulyan", "num_byzantine": 2}, torch.randn(10, 3))
    rule = AGGREGATORS.build({"name": "bulyan", "num_byzantine": 2})
    with pytest.raises(ValueError, match=r"n=10 with f=2"):
        rule.check_cohort(10)
    rule.check_cohort(11)


def test_multi_krum_m_larger_than_cohort():
    rule = AGGREGATORS.build({"name": "multi_krum", "num_byzantine": 1, "m": 6})
    with pytest.raises(ValueError, match=r"m=6.*n=5"):
        rule.check_cohort(5)
    with pytest.raises(ValueError, match=r"m=6.*n=5"):
        rule.aggregate(torch.randn(5, 2), weights=ONES(5))


def test_trimmed_mean_check_cohort():
    rule = AGGREGATORS.build({"name": "trimmed_mean", "beta": 0.1})
    with pytest.raises(ValueError, match=r"n=5.*f=0"):
        rule.check_cohort(5)  # trims nothing: a misconfiguration
    rule.check_cohort(10)
    AGGREGATORS.build({"name": "trimmed_mean", "beta": 0.0}).check_cohort(3)
    # nearly 1/2 with an even cohort would trim everything: refused at aggregate time
    near_half = AGGREGATORS.build({"name": "trimmed_mean", "beta": 0.4999999999999})
    with pytest.raises(ValueError, match="nothing remains"):
        near_half.aggregate(torch.randn(2, 3), weights=ONES(2))
    with pytest.raises(ValueError, match="nothing remains"):
        near_half.check_cohort(2)


def test_unconstrained_rules_check_cohort_returns():
    for spec in [{"name": "median"}, {"name": "geometric_median"}, {"name": "fltrust"}, {"name": "norm_bounded", "max_norm": 1}]:
        assert AGGREGATORS.build(spec).check_cohort(2) is None


def test_fltrust_needs_reference():
    with pytest.raises(ValueError, match="root update"):
        run({"name": "fltrust"}, torch.randn(3, 2))
    with pytest.raises(ValueError, match="shape"):
        run({"name": "fltrust"}, torch.randn(3, 2), reference=torch.ones(3))


def test_stack_and_weights_are_checked():
    for spec, k in RULES:
        with pytest.raises(ValueError, match="weights"):
            run(spec, torch.randn(k, 2), -ONES(k), **({"reference": torch.ones(2)} if spec["name"] == "fltrust" else {}))


# ------------------------------------------------------------------------------------------- #
# order invariance (property)


@pytest.mark.parametrize("spec,min_k", RULES, ids=[f"{s['name']}-{i}" for i, (s, _) in enumerate(RULES)])
@settings(max_examples=25, deadline=None)
@given(extra=st.integers(0, 4), d=st.integers(1, 5), seed=st.integers(0, 10_000), discrete=st.booleans())
def test_every_rule_is_order_invariant(spec, min_k, extra, d, seed, discrete):
    k = min_k + extra
    u, w, ref, perm = rand(k, d, seed, discrete)
    kw = {"reference": ref} if spec["name"] == "fltrust" else {}
    a, ma = run(spec, u, w, **kw)
    b, mb = run(spec, u[perm], w[perm], **kw)
    assert a.shape == (d,) and a.dtype == u.dtype
    assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert ma.keys() == mb.keys()
    for key in ma:
        assert math.isclose(ma[key], mb[key], rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 8), seed=st.integers(0, 10_000), discrete=st.booleans())
def test_canonical_order_is_lexicographic(k, seed, discrete):
    u, w, _, perm = rand(k, 3, seed, discrete)
    rows = [tuple(r) + (x,) for r, x in zip(u.tolist(), w.tolist())]
    order = canonical_order(u, w).tolist()
    assert [rows[i] for i in order] == sorted(rows)
    order_p = canonical_order(u[perm], w[perm]).tolist()
    assert torch.equal(u[perm][order_p], u[order]) and torch.equal(w[perm][order_p], w[order])


def test_krum_scores_are_permutation_equivariant_and_hand_computed():
    # 1-D points 0, 1, 3, 4, 20, f = 1 -> 2 nearest: 0: 1+9, 1: 1+4, 3: 4+1, 4: 1+9, 20: 16^2+17^2
    u = torch.tensor([[0.0], [1.0], [3.0], [4.0], [20.0]])
    s = krum_scores(u, 1)
    assert s.tolist() == [10.0, 5.0, 5.0, 10.0, 545.0]
    perm = torch.tensor([4, 2, 0, 3, 1])
    assert torch.equal(krum_scores(u[perm], 1), s[perm])
    with pytest.raises(ValueError, match=r"n=3.*f=1"):
        krum_scores(u[:3], 1)


def test_pairwise_distances_keep_precision_under_a_common_offset():
    # honest spread 1e-3 around 1e3 plus huge Byzantine rows: the plain Gram trick loses the honest
    # distances to cancellation; centring at the coordinate-wise median keeps them
    g = torch.Generator().manual_seed(0)
    x = torch.cat([1e3 + 1e-3 * torch.randn(12, 300, generator=g, dtype=torch.float64), torch.full((3, 300), 1e6, dtype=torch.float64)])
    exact = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    dist = pairwise_sq_distances(x)
    assert torch.equal(dist, dist.T) and bool((dist.diagonal() == 0).all()) and bool((dist >= 0).all())
    assert torch.allclose(dist[:12, :12], exact[:12, :12], rtol=1e-10, atol=0)
    assert torch.allclose(dist, exact, rtol=1e-10, atol=1e-15 * float(exact.max()))


def test_float32_pairwise_distances_agree_with_float64_to_float32_precision():
    g = torch.Generator().manual_seed(1)
    x = (1.0 + 1e-2 * torch.randn(12, 50_000, generator=g)).to(torch.float32)  # a common component 100x the spread
    x = torch.cat([x, 1e3 * x[:2]])
    exact = pairwise_sq_distances(x.to(torch.float64))
    dist = pairwise_sq_distances(x)
    assert dist.dtype == torch.float64 and torch.equal(dist, dist.T) and bool((dist.diagonal() == 0).all())
    assert torch.allclose(dist[:12, :12], exact[:12, :12], rtol=1e-4, atol=0)
    # far from the centre (the Byzantine rows), the error is relative to the distance from the centre
    assert torch.allclose(dist, exact, rtol=1e-4, atol=1e-6 * float(exact.max()))
    assert torch.equal(krum_scores(x, 2).argsort(), krum_scores(x.to(torch.float64), 2).argsort())


# ------------------------------------------------------------------------------------------- #
# hand-computed cases


def test_median_hand_computed():
    u = torch.tensor([[1.0, 5.0], [3.0, -1.0], [2.0, 0.0], [10.0, 2.0]])
    # even k: column 0 sorted 1 2 3 10 -> (2+3)/2; column 1 sorted -1 0 2 5 -> (0+2)/2
    assert run({"name": "median"}, u)[0].tolist() == [2.5, 1.0]
    # odd k: middle value, weights ignored
    assert run({"name": "median"}, u[:3], torch.tensor([1.0, 100.0, 1.0]))[0].tolist() == [2.0, 0.0]


def test_trimmed_mean_hand_computed():
    u = torch.tensor([[1.0, 5.0], [3.0, -1.0], [2.0, 0.0], [10.0, 2.0]])
    out, m = run({"name": "trimmed_mean", "beta": 0.25}, u)  # t = 1 per side
    assert out.tolist() == [2.5, 1.0] and m == {"trimmed_per_side": 1.0, "kept": 2.0}
    col = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0]])
    assert run({"name": "trimmed_mean", "beta": 0.2}, col)[0].tolist() == [3.0]  # mean(2, 3, 4)
    assert run({"name": "trimmed_mean", "beta": 0.0}, col)[0].tolist() == [22.0]  # plain mean
    # floor(0.29 * 100) is 29 although 0.29 * 100 = 28.999999999999996 in floating point
    assert AGGREGATORS.build({"name": "trimmed_mean", "beta": 0.29}).trimmed_per_side(100) == 29


def test_krum_and_multi_krum_hand_computed_with_tie():
    # scores as in test_krum_scores...: 10, 5, 5, 10, 545; the tie 1 vs 3 goes to the smaller vector
    u = torch.tensor([[3.0, 0.0], [20.0, 0.0], [1.0, 0.0], [4.0, 0.0], [0.0, 0.0]])
    out, m = run({"name": "krum", "num_byzantine": 1}, u)
    assert out.tolist() == [1.0, 0.0] and m == {"selected_score": 5.0, "median_score": 10.0}
    out, m = run({"name": "multi_krum", "num_byzantine": 1, "m": 2}, u)  # mean of 1 and 3
    assert out.tolist() == [2.0, 0.0] and m["max_selected_score"] == 5.0
    out, m = run({"name": "multi_krum", "num_byzantine": 1}, u)  # m = n - f = 4: 0, 1, 3, 4
    assert out.tolist() == [2.0, 0.0] and m["selected"] == 4.0 and m["mean_selected_score"] == 7.5


def test_multi_krum_tie_at_cutoff_goes_to_smaller_vectors():
    # f = 0, 3 nearest of... k = 4 symmetric square: all scores equal; m = 2 picks the two
    # lexicographically smallest corners (0,0) and (0,1) whatever the order
    u = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]:
        out, _ = run({"name": "multi_krum", "num_byzantine": 0, "m": 2}, u[perm])
        assert out.tolist() == [0.0, 0.5]
        assert run({"name": "krum", "num_byzantine": 0}, u[perm])[0].tolist() == [0.0, 0.0]


def test_bulyan_hand_computed():
    # n = 7, f = 1: theta = 5, beta = 3.  1-D points 0 1 2 5 6 20 100 (second coordinate 0).
    # iterated Krum (neighbours max(r - 3, 1)): r=7 scores 0:66 1:43 2:30 5:51 6:78 ... -> 2;
    # r=6: 0:62 1:42 5:42 6:62 20:782 -> tie, 1; r=5: 0:61 5:26 6:37 20:421 -> 5;
    # r=4 (1 neighbour): 0:36 6:36 20:196 -> tie, 0; r=3: 6:196 20:196 -> tie, 6.
    # selection {0, 1, 2, 5, 6}, median 2, the 3 closest to it are 0 1 2 -> mean 1.
    u = torch.tensor([[0.0], [1.0], [2.0], [5.0], [6.0], [20.0], [100.0]])
    u = torch.cat([u, torch.zeros(7, 1)], dim=1)
    out, m = run({"name": "bulyan", "num_byzantine": 1}, u[torch.tensor([5, 3, 6, 0, 2, 4, 1])])
    assert out.tolist() == [1.0, 0.0]
    assert m == {"selection_size": 5.0, "kept_per_coordinate": 3.0, "max_selection_score": 196.0}


def test_geometric_median_hand_computed():
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]], dtype=torch.float64)
    out, m = run({"name": "geometric_median"}, square)
    assert torch.allclose(out, torch.tensor([1.0, 1.0], dtype=torch.float64), atol=1e-9)
    assert m["converged"] == 1.0 and m["objective"] == pytest.approx(math.sqrt(2))
    line = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    # equal weights: the middle point; weight 3 of 5 on 10: more than half the weight -> 10
    assert torch.allclose(run({"name": "geometric_median"}, line)[0], torch.tensor([1.0], dtype=torch.float64), atol=1e-4)
    heavy = torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64)
    assert torch.allclose(run({"name": "geometric_median"}, line, heavy)[0], torch.tensor([10.0], dtype=torch.float64), atol=1e-4)


def test_norm_bounded_hand_computed():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)
    out, m = run({"name": "norm_bounded", "max_norm": 1.0}, u)  # [3,4] -> [0.6, 0.8]
    assert torch.allclose(out, torch.tensor([0.45, 0.6], dtype=torch.float64))
    assert m == {"clipped_fraction": 0.5, "max_update_norm": 5.0}
    out, _ = run({"name": "norm_bounded", "max_norm": 1.0}, u, torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([0.375, 0.5], dtype=torch.float64))  # (0.6 + 0.9)/4, (0.8 + 1.2)/4


def test_fltrust_hand_computed():
    g0 = torch.tensor([2.0, 0.0], dtype=torch.float64)  # ||g0|| = 2
    u = torch.tensor([[1.0, 0.0], [3.0, 3.0], [-5.0, 0.0]], dtype=torch.float64)
    # trusts 1, 1/sqrt2, 0 (opposite); rescaled to norm 2: [2, 0], [sqrt2, sqrt2]
    # (1 * [2, 0] + 1/sqrt2 * [sqrt2, sqrt2]) / (1 + 1/sqrt2) = [3, 1] / (1 + 1/sqrt2)
    out, m = run({"name": "fltrust"}, u, reference=g0)
    c = 1 + 1 / math.sqrt(2)
    assert torch.allclose(out, torch.tensor([3 / c, 1 / c], dtype=torch.float64))
    assert m["zero_trust_clients"] == 1.0 and m["all_zero_trust"] == 0.0
    assert m["mean_trust"] == pytest.approx((1 + 1 / math.sqrt(2)) / 3)
    # a scaled-up copy of g0 is rescaled to ||g0||; weights play no part
    out, _ = run({"name": "fltrust"}, torch.tensor([[100.0, 0.0]]), torch.tensor([7.0]), reference=torch.tensor([2.0, 0.0]))
    assert out.tolist() == [2.0, 0.0]


def test_fltrust_all_zero_trust_gives_zeros():
    u = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # opposite, orthogonal, zero
    out, m = run({"name": "fltrust"}, u, reference=torch.tensor([1.0, 0.0]))
    assert out.tolist() == [0.0, 0.0] and m["all_zero_trust"] == 1.0 and m["zero_trust_clients"] == 3.0
    out, m = run({"name": "fltrust"}, u, reference=torch.zeros(2))  # zero root update: no direction
    assert out.tolist() == [0.0, 0.0] and m["all_zero_trust"] == 1.0


# ------------------------------------------------------------------------------------------- #
# robustness against Byzantine rows


def poisoned(n, f, d, seed, colluding=False):
    """n updates, the last f Byzantine at +-1e6 (one shared point if colluding), honest ~ N(1, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    honest = 1.0 + 0.1 * torch.randn(n - f, d, generator=g, dtype=torch.float64)
    if colluding:
        byz = torch.full((f, d), -1e6, dtype=torch.float64)
    else:
        byz = 1e6 * torch.sign(torch.randn(f, d, generator=g, dtype=torch.float64))
    u = torch.cat([honest, byz])
    perm = torch.randperm(n, generator=g)
    return u[perm], honest


def inside(out, honest):
    return bool((out >= honest.min(0).values - 1e-9).all() and (out <= honest.max(0).values + 1e-9).all())


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 11), d=st.integers(1, 6), seed=st.integers(0, 10_000), colluding=st.booleans())
def test_median_and_trimmed_mean_stay_in_honest_range(n, d, seed, colluding):
    f = (n - 1) // 2  # f < n / 2
    u, honest = poisoned(n, f, d, seed, colluding)
    assert inside(run({"name": "median"}, u)[0], honest)
    beta = f / n + 1e-6  # trims floor(beta n) = f per side
    assert inside(run({"name": "trimmed_mean", "beta": beta}, u)[0], honest)


@settings(max_examples=30, deadline=None)
@given(f=st.integers(0, 3), extra=st.integers(0, 3), d=st.integers(1, 6), seed=st.integers(0, 10_000), colluding=st.booleans())
def test_krum_family_picks_honest_updates(f, extra, d, seed, colluding):
    n = 2 * f + 3 + extra
    u, honest = poisoned(n, f, d, seed, colluding)
    out, _ = run({"name": "krum", "num_byzantine": f}, u)
    assert any(torch.equal(out, h) for h in honest)
    out, m = run({"name": "multi_krum", "num_byzantine": f}, u)  # m = n - f: exactly the honest ones
    assert torch.allclose(out, honest.mean(0), atol=1e-12) and m["selected"] == n - f
    out, _ = run({"name": "geometric_median"}, u)  # breakdown point 1/2: stays near the honest cluster
    assert bool((out - 1.0).abs().max() < 1.0)
    if n >= 4 * f + 3:
        assert inside(run({"name": "bulyan", "num_byzantine": f}, u)[0], honest)


@pytest.mark.parametrize("f", [1, 2])
def test_bulyan_stays_in_honest_range(f):
    for seed in range(5):
        for colluding in (False, True):
            u, honest = poisoned(4 * f + 3, f, 4, seed, colluding)
            assert inside(run({"name": "bulyan", "num_byzantine": f}, u)[0], honest)


# ------------------------------------------------------------------------------------------- #
# geometric median against a slow reference


@pytest.mark.parametrize("seed", range(4))
def test_geometric_median_matches_scipy(seed):
    optimize = pytest.importorskip("scipy.optimize")
    import numpy as np

    g = torch.Generator().manual_seed(seed)
    u = torch.randn(6, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    w = torch.rand(6, generator=g, dtype=torch.float64) + 0.2
    un, wn = u.numpy(), (w / w.sum()).numpy()

    def objective(z):
        return float(wn @ np.linalg.norm(un - z, axis=1))

    ref = optimize.minimize(objective, un.mean(0), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000})
    out, m = run({"name": "geometric_median"}, u, w)  # defaults: stops at relative progress 1e-7
    assert m["objective"] == pytest.approx(objective(out.numpy()), rel=1e-12)
    assert objective(out.numpy()) <= ref.fun * (1 + 1e-5)
    assert np.allclose(out.numpy(), ref.x, atol=1e-3)
    # Several of these optima sit on a data point, where the smoothing eps = nu limits accuracy to
    # about nu: with nu and tol tiny the result matches the reference to its own precision.
    tight, m = run({"name": "geometric_median", "tol": 1e-13, "eps": 1e-12, "max_iter": 1000}, u, w)
    assert m["converged"] == 1.0
    assert objective(tight.numpy()) <= ref.fun * (1 + 1e-9)
    assert np.allclose(tight.numpy(), ref.x, atol=1e-5)  # strictly convex here: unique minimiser


def test_geometric_median_two_points_objective():
    # any point of the segment is optimal: the objective equals half the distance (equal weights)
    u = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=torch.float64)
    out, m = run({"name": "geometric_median"}, u)
    obj = float((u - out).norm(dim=1).mean())
    assert obj == pytest.approx(2.5, rel=1e-9) and m["objective"] == pytest.approx(2.5, rel=1e-9)


# ------------------------------------------------------------------------------------------- #
# degenerate cohorts


@pytest.mark.parametrize("spec", [{"name": "median"}, {"name": "trimmed_mean", "beta": 0.4}, {"name": "geometric_median"}])
def test_single_update_is_returned(spec):
    u = torch.tensor([[0.1, -2.5, 3.0]])
    out, _ = run(spec, u, torch.tensor([3.0]))
    assert torch.equal(out, u[0])


@pytest.mark.parametrize("spec,k", RULES, ids=[f"{s['name']}-{i}" for i, (s, _) in enumerate(RULES)])
def test_identical_updates_give_that_update(spec, k):
    v = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)  # norm < 1: norm_bounded leaves it alone
    u = v.repeat(k, 1)
    kw = {"reference": torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)} if spec["name"] == "fltrust" else {}
    out, m = run(spec, u, torch.arange(1, k + 1, dtype=torch.float64), **kw)
    expected = v / v.norm() if spec["name"] == "fltrust" else v  # fltrust rescales to ||g0|| = 1
    assert torch.allclose(out, expected, rtol=0, atol=1e-15)
    if spec["name"] == "geometric_median":
        assert m["iterations"] == 0.0 and m["objective"] == 0.0


def test_float32_in_float32_out():
    u = torch.randn(7, 4)
    for spec, _ in RULES:
        kw = {"reference": torch.ones(4)} if spec["name"] == "fltrust" else {}
        assert run(spec, u, **kw)[0].dtype == torch.float32
