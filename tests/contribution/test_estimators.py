"""Contribution estimators: a hand-computed 3-player game, Shapley's axioms under hypothesis, the
Monte Carlo estimators against exact Shapley, and bad input."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.contribution import ESTIMATORS, ExactShapley, GTGShapley, LeaveOneOut, TMCShapley, Utility

# players 5, 9, 40 (client ids, not positions)
GAME = {(): 0.0, (5,): 1.0, (9,): 2.0, (40,): 0.0, (5, 9): 4.0, (5, 40): 1.0, (9, 40): 3.0, (5, 9, 40): 6.0}


def game(coalition: frozenset[int]) -> float:
    return GAME[tuple(sorted(coalition))]


def rng():
    return np.random.default_rng(0)


def test_exact_shapley_on_a_hand_computed_game():
    # phi_5 = 1/3 (1 - 0) + 1/6 ((4 - 2) + (1 - 0)) + 1/3 (6 - 3) = 11/6; likewise 20/6 and 5/6
    res = ExactShapley().estimate(Utility(game, [5, 9, 40]), rng=rng())
    assert res.values == pytest.approx({5: 11 / 6, 9: 20 / 6, 40: 5 / 6})
    assert res.evaluations == 8


def test_leave_one_out_on_the_same_game():
    res = LeaveOneOut().estimate(Utility(game, [5, 9, 40]), rng=rng())
    assert res.values == {5: 3.0, 9: 5.0, 40: 2.0}
    assert res.evaluations == 4


def test_utility_evaluates_each_coalition_once_and_refuses_strangers():
    calls = []
    u = Utility(lambda s: calls.append(s) or len(s), [3, 7])
    assert u({3}) == u(frozenset({3})) == 1 and calls == [frozenset({3})] and u.evaluations == 1
    with pytest.raises(ValueError, match=r"ids outside the players \[3, 7\]"):
        u({4})
    with pytest.raises(ValueError, match="distinct"):
        Utility(len, [1, 1])
    with pytest.raises(ValueError, match="not finite"):
        Utility(lambda s: float("nan"), [1])({1})


def _typed_game(types: list[int], table: dict) -> callable:
    """v(S) depends only on the multiset of the members' types: same-type players are symmetric."""
    def v(s):
        key = tuple(sorted(types[p] for p in s))
        return table.setdefault(key, float(hash(key) % 1000) / 10.0)
    return v


@settings(max_examples=60, deadline=None)
@given(types=st.lists(st.integers(0, 2), min_size=1, max_size=6), salt=st.integers(0, 10**6))
def test_exact_shapley_is_efficient_and_symmetric(types, salt):
    table: dict = {(): 0.0}
    rnd = np.random.default_rng(salt)
    n = len(types)
    for size in range(1, n + 1):
        for members in combinations(range(n), size):
            table.setdefault(tuple(sorted(types[p] for p in members)), float(rnd.normal()))
    u = Utility(_typed_game(types, table), range(n))
    res = ExactShapley().estimate(u, rng=rng())
    assert sum(res.values.values()) == pytest.approx(u(range(n)) - u([]), abs=1e-9)
    for i in range(n):
        for j in range(n):
            if types[i] == types[j]:
                assert res.values[i] == pytest.approx(res.values[j], abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=8, max_size=8), seed=st.integers(0, 1000))
def test_permutation_estimators_without_truncation_are_efficient(values, seed):
    v = {frozenset(s): float(x) for s, x in zip([(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)], values)}
    for est in (GTGShapley(eps_between=0, eps_within=0, max_permutations=7),
                TMCShapley(tolerance=0, max_permutations=7)):
        res = est.estimate(Utility(v.__getitem__, [1, 2, 3]), rng=np.random.default_rng(seed))
        assert sum(res.values.values()) == pytest.approx(v[frozenset({1, 2, 3})] - v[frozenset()], abs=1e-9)


def test_additive_game_is_scored_exactly_by_every_estimator():
    w = {11: 0.5, 12: -0.2, 13: 1.5, 14: 0.0}
    v = lambda s: sum(w[p] for p in s)  # noqa: E731
    for est in (ExactShapley(), LeaveOneOut(), GTGShapley(), TMCShapley()):
        res = est.estimate(Utility(v, list(w)), rng=rng())
        assert res.values == pytest.approx(w, abs=1e-12), est.name


def _smooth_game(n: int, seed: int):
    g = np.random.default_rng(seed)
    w = g.uniform(0.1, 1.0, n)
    return lambda s: float(math.sqrt(sum(w[p] for p in s)))


def test_gtg_shapley_tracks_exact_shapley_with_fewer_evaluations():
    for seed in range(3):
        exact = ExactShapley().estimate(Utility(_smooth_game(8, seed), range(8)), rng=rng())
        gtg = GTGShapley(max_permutations=24).estimate(Utility(_smooth_game(8, seed), range(8)),
                                                       rng=np.random.default_rng(seed))
        a = [exact.values[p] for p in range(8)]
        b = [gtg.values[p] for p in range(8)]
        assert np.corrcoef(a, b)[0, 1] >= 0.95
        assert gtg.evaluations < exact.evaluations  # 256 coalitions for exact


def test_gtg_between_round_truncation_scores_zero():
    res = GTGShapley(eps_between=0.1).estimate(Utility(lambda s: 0.5 + 0.01 * len(s), [1, 2, 3]), rng=rng())
    assert res.truncated and res.values == {1: 0.0, 2: 0.0, 3: 0.0} and res.evaluations == 2


def test_within_round_truncation_skips_evaluations():
    # v saturates once any two players are in: later marginals are truncated to 0 without evaluating
    v = lambda s: min(len(s), 2) / 2  # noqa: E731
    full = GTGShapley(eps_within=0.0, max_permutations=10, convergence=0).estimate(Utility(v, range(6)), rng=rng())
    cut = GTGShapley(eps_within=0.01, max_permutations=10, convergence=0).estimate(Utility(v, range(6)), rng=rng())
    assert cut.evaluations < full.evaluations


def test_registry_and_bad_input():
    assert ESTIMATORS.build({"name": "gtg_shapley", "max_permutations": 10}).max_permutations == 10
    with pytest.raises(ValueError, match="contribution estimator"):
        ESTIMATORS.build({"name": "banzhaf"})
    with pytest.raises(ValueError, match="13 clients per round is above its max_players = 12"):
        ExactShapley().estimate(Utility(len, range(13)), rng=rng())
    with pytest.raises(ValueError, match="eps_within"):
        ESTIMATORS.build({"name": "gtg_shapley", "eps_within": -1})


def test_reconstruction_scores_the_weighted_mean_of_the_coalitions_updates():
    import torch

    from fedops.contribution.reconstruction import reconstruction_utility

    params = torch.zeros(2)
    updates = {10: torch.tensor([1.0, 0.0]), 20: torch.tensor([0.0, 2.0]), 30: torch.tensor([-1.0, -1.0])}
    target = torch.tensor([0.5, 1.0])
    score = lambda p: -float(((p - target) ** 2).sum())  # noqa: E731 - higher is better
    u = reconstruction_utility(params=params, updates=updates, weights={10: 1.0, 20: 1.0, 30: 2.0}, score=score)
    assert u(set()) == pytest.approx(-1.25)  # the global model as it was
    assert u({10, 20}) == pytest.approx(0.0)  # mean (0.5, 1.0): the target
    assert u({10, 30}) == pytest.approx(score(torch.tensor([-1 / 3, -2 / 3])))  # weights 1 and 2
    res = ExactShapley().estimate(u, rng=rng())
    assert res.values[30] == min(res.values.values())  # the update that points away scores lowest
    with pytest.raises(ValueError, match=r"no aggregation weight for clients \[30\]"):
        reconstruction_utility(params=params, updates=updates, weights={10: 1.0, 20: 1.0}, score=score)
