"""q-FFL's aggregation against the paper's formula written out, and its degenerate case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedops.aggregate.fedavg import weighted_mean
from fedops.aggregate.qffl import EPS, qffl_aggregate


def reference(w, local_models, losses, *, q, lr):
    """Li et al. 2020, Alg. 2, literally: Delta_k, h_k and w - sum Delta / sum h (float64)."""
    L = 1.0 / lr
    deltas, hs = [], []
    for wk, f in zip(local_models, losses):
        f = f + EPS
        g = L * (w - wk)
        deltas.append(f ** q * g)
        hs.append(q * f ** (q - 1) * float(g @ g) + L * f ** q)
    return w - sum(deltas) / sum(hs)


@pytest.mark.parametrize("q", [0.1, 1.0, 5.0])
def test_matches_the_paper_formula(q):
    rng = np.random.default_rng(0)
    w = rng.normal(size=7)
    local = [w + rng.normal(scale=0.1, size=7) for _ in range(4)]
    losses = [0.3, 1.2, 0.7, 2.0]
    updates = torch.tensor(np.stack([m - w for m in local]), dtype=torch.float64)
    agg, _ = qffl_aggregate(updates, losses=torch.tensor(losses, dtype=torch.float64), weights=torch.ones(4, dtype=torch.float64), q=q,
                            lr=0.05)
    np.testing.assert_allclose(w + agg.numpy(), reference(w, local, losses, q=q, lr=0.05), rtol=1e-10, atol=1e-12)


def test_q_zero_is_fedavg_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    updates = torch.randn(5, 100, generator=g)
    weights = torch.tensor([10.0, 3.0, 7.0, 1.0, 50.0])
    agg, metrics = qffl_aggregate(updates, losses=torch.rand(5, generator=g), weights=weights, q=0.0, lr=0.1)
    assert metrics["qffl_step_factor"] == 1.0
    assert torch.equal(agg, weighted_mean(updates, weights))


def test_higher_loss_gets_more_weight_as_q_grows():
    updates = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.ones(2)
    a1, _ = qffl_aggregate(updates, losses=torch.tensor([0.1, 2.0]), weights=w, q=1.0, lr=1.0)
    a5, _ = qffl_aggregate(updates, losses=torch.tensor([0.1, 2.0]), weights=w, q=5.0, lr=1.0)
    assert a5[1] / a5[0] > a1[1] / a1[0] > 1.0


def test_refuses_bad_input():
    u = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="q >= 0"):
        qffl_aggregate(u, losses=torch.ones(2), weights=torch.ones(2), q=-1.0, lr=0.1)
    with pytest.raises(ValueError, match="one finite non-negative loss"):
        qffl_aggregate(u, losses=torch.tensor([1.0, float("nan")]), weights=torch.ones(2), q=1.0, lr=0.1)
