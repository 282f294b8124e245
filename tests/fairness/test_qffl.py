"""q-FFL's aggregation against the paper's formula written out, and its degenerate case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedops.aggregate.fedavg import weighted_mean
from fedops.aggregate.qffl import EPS, qffl_aggregate


def reference(w, local_models, losses, *, q, lr, p=None):
    """Li et al. 2020, Alg. 2, literally: Delta_k, h_k and w - sum Delta / sum h (float64); ``p``
    weights each client's terms (fedops' ``weighted``)."""
    L = 1.0 / lr
    deltas, hs = [], []
    for wk, f, pk in zip(local_models, losses, p or [1.0] * len(losses)):
        f = f + EPS
        g = L * (w - wk)
        deltas.append(pk * f ** q * g)
        hs.append(pk * (q * f ** (q - 1) * float(g @ g) + L * f ** q))
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


def test_lipschitz_estimate_is_an_input_with_one_over_lr_by_default():
    from pydantic import ValidationError

    from fedops.aggregate.qffl import QFFL

    g = torch.Generator().manual_seed(2)
    updates, weights, losses = torch.randn(4, 50, generator=g), torch.tensor([5.0, 1.0, 2.0, 8.0]), torch.rand(4, generator=g)
    default, m0 = QFFL(q=1.0).aggregate(updates, weights=weights, losses=losses, lr=0.05)
    same, _ = QFFL(q=1.0, lipschitz=20.0).aggregate(updates, weights=weights, losses=losses, lr=0.05)
    assert torch.equal(default, same)
    looser, m1 = QFFL(q=1.0, lipschitz=2.0).aggregate(updates, weights=weights, losses=losses, lr=0.05)
    assert m0["qffl_step_factor"] < m1["qffl_step_factor"] < 1.0  # a smaller L takes a longer step
    w = np.zeros(50)
    local = [u.double().numpy() for u in updates]
    np.testing.assert_allclose(looser.double().numpy(),
                               reference(w, local, (losses * 1.0).tolist(), q=1.0, lr=0.5, p=weights.tolist()),
                               rtol=1e-5, atol=1e-7)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValidationError, match="lipschitz"):
            QFFL(q=1.0, lipschitz=bad)
