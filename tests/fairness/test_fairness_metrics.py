"""Fairness metrics: hand-computed cases and comparisons with fairlearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    true_positive_rate,
)

from fedops.fairness.metrics import (
    accuracy_from_counts,
    client_level,
    group_counts,
    group_fairness,
    jain_index,
    signed_eod,
    signed_spd,
    tail_mean,
)

# 8 rows: group 0 = rows 0-3, group 1 = rows 4-7
Y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
P = np.array([1, 0, 0, 1, 1, 1, 1, 0])
A = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_client_level_by_hand():
    acc = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.4, 0.3, 0.2, 0.1, 0.55])  # K = 11: 10% -> 2 clients
    m = client_level(acc)
    assert m["fairness/client_acc_worst10"] == pytest.approx((0.1 + 0.2) / 2)
    assert m["fairness/client_acc_best10"] == pytest.approx((1.0 + 0.9) / 2)
    assert m["fairness/client_acc_min"] == pytest.approx(0.1)
    assert m["fairness/client_acc_std"] == pytest.approx(float(np.std(acc)))
    assert m["fairness/jain_index"] == pytest.approx(acc.sum() ** 2 / (11 * (acc ** 2).sum()))


def test_tail_mean_and_jain_degenerate():
    assert tail_mean(np.array([0.3, 0.9, 0.5]), fraction=0.1, lowest=True) == pytest.approx(0.3)  # at least one
    assert jain_index(np.array([0.7, 0.7, 0.7])) == pytest.approx(1.0)
    assert jain_index(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="client accuracies"):
        client_level(np.array([]))


def test_group_counts_and_signed_metrics_by_hand():
    c = group_counts(Y, P, A)
    # group 0: y=1 -> preds (1, 0); y=0 -> preds (0, 1); group 1: y=1 -> (1, 1); y=0 -> (1, 0)
    assert c[0].tolist() == [[1, 1], [1, 1]]
    assert c[1].tolist() == [[1, 1], [0, 2]]
    # positive rates 2/4 and 3/4 -> SPD = -0.25; TPR 1/2 and 2/2 -> EOD = -0.5
    assert signed_spd(c) == pytest.approx(-0.25)
    assert signed_eod(c) == pytest.approx(-0.5)
    assert accuracy_from_counts(c) == pytest.approx(np.mean(Y == P))


def test_signed_metrics_undefined_without_a_group():
    c = group_counts(Y[:4], P[:4], A[:4])  # only group 0
    assert math.isnan(signed_spd(c)) and math.isnan(signed_eod(c))


def test_group_fairness_matches_fairlearn():
    rng = np.random.default_rng(0)
    y, p, a = rng.integers(0, 2, 500), rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    m = group_fairness(y, p, a)
    assert m["fairness/dpd"] == pytest.approx(demographic_parity_difference(y, p, sensitive_features=a))
    assert m["fairness/eqodds"] == pytest.approx(equalized_odds_difference(y, p, sensitive_features=a))
    tpr = MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=p, sensitive_features=a).by_group
    assert m["fairness/eopp"] == pytest.approx(abs(tpr[0] - tpr[1]))
    assert m["fairness/spd"] == pytest.approx(p[a == 0].mean() - p[a == 1].mean())
    assert m["fairness/eod"] == pytest.approx(tpr[0] - tpr[1])
    assert abs(m["fairness/spd"]) == pytest.approx(m["fairness/dpd"])


def test_group_fairness_per_client_is_the_worst_client():
    rng = np.random.default_rng(1)
    n = 900
    y, p, a = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 2, n)
    client = rng.integers(0, 3, n)
    m = group_fairness(y, p, a, control=client, prefix="fairness/client_")
    per_client = [demographic_parity_difference(y[client == k], p[client == k], sensitive_features=a[client == k])
                  for k in range(3)]
    eqodds = [equalized_odds_difference(y[client == k], p[client == k], sensitive_features=a[client == k])
              for k in range(3)]
    assert m["fairness/client_dpd"] == pytest.approx(max(per_client))
    assert m["fairness/client_eqodds"] == pytest.approx(max(eqodds))
