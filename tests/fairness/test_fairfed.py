"""FairFed's weights: a hand-computed step, properties under hypothesis, degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.fairness.fairfed import FairFedState, fairfed_step, metric_gap, plain_sum
from fedops.fairness.metrics import group_counts


def test_step_by_hand():
    w = {0: 30.0, 1: 50.0, 2: 20.0}  # n = 100, normalised 0.3 / 0.5 / 0.2
    gaps = {0: 0.1, 1: 0.3, 2: 0.2}  # mean 0.2
    new = fairfed_step(w, gaps, beta=0.5, scale=100.0)
    # 30 - 50 * (0.1 - 0.2) = 35; 50 - 50 * 0.1 = 45; 20 - 0 = 20 (sum 100: no renormalisation needed)
    assert new == pytest.approx({0: 35.0, 1: 45.0, 2: 20.0})


def test_step_clamps_and_renormalises():
    w = {0: 10.0, 1: 90.0}
    new = fairfed_step(w, {0: 0.9, 1: 0.1}, beta=1.0, scale=100.0)  # 10 - 40 < 0 -> 0; 90 + 40 = 130
    assert new[0] == 0.0
    assert new[1] == pytest.approx(100.0)  # renormalised to the participants' total


def test_beta_zero_keeps_weights_bit_for_bit():
    w = {0: 123.0, 1: 77.0}
    new = fairfed_step(w, {0: 0.4, 1: float("nan")}, beta=0.0, scale=200.0)
    assert new == w


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 10_000), min_size=1, max_size=12),
    gaps=st.lists(st.floats(0, 2, allow_nan=False), min_size=12, max_size=12),
    beta=st.floats(0, 50, allow_nan=False),
    rounds=st.integers(1, 5),
)
def test_weights_stay_non_negative_and_sum_to_one(sizes, gaps, beta, rounds):
    w = {c: float(n) for c, n in enumerate(sizes)}
    total = sum(w.values())
    for r in range(rounds):
        g = {c: gaps[(c + r) % len(gaps)] for c in w}
        w = fairfed_step(w, g, beta=beta, scale=total)
        assert all(v >= 0 for v in w.values())
        assert sum(w.values()) / total == pytest.approx(1.0, rel=1e-9)


def test_gap_uses_pooled_counts_and_accuracy_fallback():
    rng = np.random.default_rng(3)
    parts = []
    for k in range(3):
        n = 200
        parts.append((rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 2, n)))
    counts = {k: group_counts(*p) for k, p in enumerate(parts)}
    pooled = plain_sum({k: c.reshape(-1) for k, c in counts.items()}, "counts").reshape(2, 2, 2)
    y = np.concatenate([p[0] for p in parts]); pr = np.concatenate([p[1] for p in parts])
    a = np.concatenate([p[2] for p in parts])
    tpr = [pr[(a == g) & (y == 1)].mean() for g in (0, 1)]
    gap0 = metric_gap(counts[0], pooled, metric="eod")
    y0, p0, a0 = parts[0]
    local = p0[(a0 == 0) & (y0 == 1)].mean() - p0[(a0 == 1) & (y0 == 1)].mean()
    assert gap0 == pytest.approx(abs((tpr[0] - tpr[1]) - local))  # global from pooled rows, not a mean of clients
    only_group0 = group_counts(y0[a0 == 0], p0[a0 == 0], a0[a0 == 0])
    acc_gap = metric_gap(only_group0, pooled, metric="eod")
    assert acc_gap == pytest.approx(abs((y == pr).mean() - (y0[a0 == 0] == p0[a0 == 0]).mean()))


def test_state_starts_at_sample_counts_and_round_trips():
    s = FairFedState.start(beta=1.0, metric="spd", sizes=[5, 15])
    assert s.weights == {0: 5.0, 1: 15.0} and s.scale == 20.0
    counts = {0: np.array([[[3, 1], [1, 0]], [[0, 0], [0, 0]]]), 1: np.array([[[2, 2], [1, 3]], [[4, 1], [2, 3]]])}
    new = s.round_weights(counts)
    assert sum(new.values()) == pytest.approx(20.0)
    t = FairFedState.start(beta=1.0, metric="spd", sizes=[5, 15])
    t.load_state_dict(s.state_dict())
    assert t.weights == s.weights
    with pytest.raises(ValueError, match="unknown"):
        FairFedState.start(beta=1.0, metric="acc", sizes=[1])
