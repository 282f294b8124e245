"""FairBatch's equalized-odds reweighting: hand cases, its invariants under hypothesis, and the
client's state across rounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.fairness.fairbatch import fairbatch_step, fairbatch_table, natural_lambda

COUNTS = np.array([[30.0, 10.0], [60.0, 40.0]])  # counts[a, y]: group 0 has 40 rows, group 1 has 100


def test_natural_shares_give_weight_one():
    lam = natural_lambda(COUNTS)
    np.testing.assert_allclose(lam, [60 / 90, 40 / 50])
    np.testing.assert_allclose(fairbatch_table(lam, COUNTS), np.ones((2, 2)))


def test_hand_computed_step_and_weights():
    # mean losses: y=0: group 0 0.2, group 1 0.3 (gap 0.1); y=1: group 0 1.0, group 1 0.4 (gap -0.6)
    sums = np.array([[0.2 * 30, 1.0 * 10], [0.3 * 60, 0.4 * 40]])
    lam = fairbatch_step(natural_lambda(COUNTS), loss_sums=sums, counts=COUNTS, alpha=0.1)
    # label 1 has the larger gap and group 0 the higher loss there: group 1's share falls by 0.1
    np.testing.assert_allclose(lam, [60 / 90, 0.7])
    w = fairbatch_table(lam, COUNTS)
    # label 1: group 0 takes 0.3 of n_1 = 50 over its 10 rows (1.5), group 1 0.7 * 50 / 40 (0.875)
    np.testing.assert_allclose(w[:, 1], [1.5, 0.875])
    np.testing.assert_allclose(w[:, 0], [1.0, 1.0])


def test_a_label_with_one_group_keeps_weight_one_and_does_not_move():
    counts = np.array([[0.0, 10.0], [50.0, 40.0]])
    sums = np.array([[0.0, 9.0], [40.0, 4.0]])
    lam = fairbatch_step(natural_lambda(counts), loss_sums=sums, counts=counts, alpha=0.2)
    assert lam[0] == 1.0 and lam[1] == pytest.approx(0.8 - 0.2)
    np.testing.assert_allclose(fairbatch_table(lam, counts)[:, 0], [0.0, 1.0])


def test_equal_losses_leave_the_shares_alone():
    lam = natural_lambda(COUNTS)
    assert np.array_equal(fairbatch_step(lam, loss_sums=COUNTS * 0.5, counts=COUNTS, alpha=0.1), lam)


def test_bad_input_refused():
    with pytest.raises(ValueError, match="alpha"):
        fairbatch_step([0.5, 0.5], loss_sums=COUNTS, counts=COUNTS, alpha=0.0)
    with pytest.raises(ValueError, match="two groups"):
        natural_lambda(np.ones((3, 2)))
    with pytest.raises(ValueError, match="do not match"):
        fairbatch_step([0.5], loss_sums=COUNTS, counts=COUNTS, alpha=0.1)


cells = st.floats(0, 500, allow_nan=False).map(float)


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 200), min_size=4, max_size=4), losses=st.lists(cells, min_size=4, max_size=4),
       alpha=st.floats(0.001, 1.0), steps=st.integers(1, 30))
def test_shares_stay_in_the_unit_interval_and_each_label_keeps_its_weight(counts, losses, alpha, steps):
    c = np.array(counts, dtype=np.float64).reshape(2, 2)
    sums = np.array(losses).reshape(2, 2) * c
    lam = natural_lambda(c)
    for _ in range(steps):
        lam = fairbatch_step(lam, loss_sums=sums, counts=c, alpha=alpha)
        assert ((0 <= lam) & (lam <= 1)).all()
    w = fairbatch_table(lam, c)
    assert (w >= 0).all()
    np.testing.assert_allclose((w * c).sum(0), c.sum(0), rtol=1e-12, atol=1e-9)  # label y keeps mass n_y


def test_global_update_carries_large_loss_sums_exactly_as_small_counts():
    from fedops.fairness.fairbatch import DIGIT, LOSS_SCALE, GlobalFairBatch

    counts = [np.array([[3000.0, 1000.0], [6000.0, 4000.0]]), np.array([[2000.0, 500.0], [7000.0, 3000.0]])]
    sums = [np.array([[2500.123, 900.0], [4000.0, 3900.5]]), np.array([[1500.0, 800.25], [5000.0, 2000.0]])]
    seen = []

    def summer(vectors, kind):  # what a secure sum of counts carries exactly: integers up to 2^20
        arrays = [np.asarray(v) for v in vectors.values()]
        assert kind == "counts" and max(float(np.abs(a).max()) for a in arrays) < DIGIT
        assert all(np.array_equal(a, np.rint(a)) for a in arrays)
        seen.append(len(arrays))
        return np.sum(arrays, axis=0)

    total = counts[0] + counts[1]
    g = GlobalFairBatch(counts=total, alpha=0.1, target="eqopp")
    start = g.lam.copy()
    g.update({3: np.stack([sums[0], counts[0]]), 8: np.stack([sums[1], counts[1]])}, summer=summer)
    exact = np.rint(sums[0] * LOSS_SCALE) / LOSS_SCALE + np.rint(sums[1] * LOSS_SCALE) / LOSS_SCALE
    assert seen == [2] and np.array_equal(g.lam, fairbatch_step(start, loss_sums=exact, counts=total, alpha=0.1,
                                                                target="eqopp"))
    with pytest.raises(ValueError, match="client 3 reported non-finite"):
        g.update({3: np.stack([sums[0] * np.nan, counts[0]])}, summer=summer)
    with pytest.raises(ValueError, match="not finite"):
        fairbatch_step(start, loss_sums=COUNTS * np.inf, counts=COUNTS, alpha=0.1)
