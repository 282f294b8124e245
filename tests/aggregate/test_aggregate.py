import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.aggregate import AGGREGATORS, SERVER_OPTIMIZERS, weighted_mean


def test_fedavg_hand_computed():
    # clients with 1, 3 samples: (1*[1, 2] + 3*[5, -2]) / 4 = [4, -1]
    u = torch.tensor([[1.0, 2.0], [5.0, -2.0]])
    agg, _ = AGGREGATORS.build("fedavg").aggregate(u, weights=torch.tensor([1.0, 3.0]))
    assert torch.equal(agg, torch.tensor([4.0, -1.0]))
    unweighted, _ = AGGREGATORS.build({"name": "fedavg", "weighted": False}).aggregate(u, weights=torch.tensor([1.0, 3.0]))
    assert torch.equal(unweighted, torch.tensor([3.0, 0.0]))


@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 8), d=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_fedavg_is_order_invariant_and_inside_the_hull(k, d, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(k, d, generator=g)
    w = torch.rand(k, generator=g) + 0.1
    perm = torch.randperm(k, generator=g)
    a = weighted_mean(u, w)
    assert torch.allclose(a, weighted_mean(u[perm], w[perm]), atol=1e-6)
    assert bool((a <= u.max(0).values + 1e-6).all() and (a >= u.min(0).values - 1e-6).all())


@pytest.mark.parametrize("bad", [torch.tensor([1.0]), torch.tensor([-1.0, 2.0]), torch.tensor([0.0, 0.0])])
def test_weights_are_checked(bad):
    with pytest.raises(ValueError, match="weights"):
        weighted_mean(torch.ones(2, 3), bad)


def test_server_optimizers_hand_computed():
    x = torch.tensor([1.0, 1.0])
    d = torch.tensor([0.5, -1.0])
    plain = SERVER_OPTIMIZERS.build("fedavg")
    assert torch.equal(plain.step(x, d, plain.init_state(x)), torch.tensor([1.5, 0.0]))
    m = SERVER_OPTIMIZERS.build({"name": "fedavgm", "momentum": 0.5, "lr": 1.0})
    st_ = m.init_state(x)
    x1 = m.step(x, d, st_)          # v = d
    x2 = m.step(x1, d, st_)         # v = 0.5 d + d = 1.5 d
    assert torch.allclose(x2, x + 2.5 * d)
    adam = SERVER_OPTIMIZERS.build({"name": "fedadam", "lr": 0.1, "beta1": 0.0, "beta2": 0.0, "tau": 1e-9})
    # with beta1 = beta2 = 0: step = lr * d / |d| = lr * sign(d)
    assert torch.allclose(adam.step(x, d, adam.init_state(x)), x + 0.1 * torch.sign(d), atol=1e-6)
