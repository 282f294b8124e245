import math

import pytest
import torch
from torch import nn

from fedops.privacy.local_dp import dp_sgd_train


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] > 0).long()


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))


KW = dict(batch_size=16, lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, generator_seed=3)


def test_runs_returns_finite_delta_and_epsilon_grows_with_epochs():
    x, y = data()
    model = mlp()
    start = [p.detach().clone() for p in model.parameters()]
    trained1, info1 = dp_sgd_train(model, x=x, y=y, epochs=1, **KW)
    trained3, info3 = dp_sgd_train(model, x=x, y=y, epochs=3, **KW)
    for p, s in zip(model.parameters(), start):
        assert torch.equal(p, s)  # input model untouched
    d = info1["delta_vector"]
    assert d.shape == (sum(p.numel() for p in model.parameters()),)
    assert bool(torch.isfinite(d).all()) and d.abs().sum() > 0
    assert 0 < info1["epsilon"] < info3["epsilon"] < math.inf
    assert info1["steps"] == 4 and info3["steps"] == 12
    assert info3["accountant_steps"] == info3["steps"]
    assert isinstance(trained1, nn.Sequential) and not trained1._forward_hooks
    assert trained1(x).shape == (64, 2)


def test_same_seed_reproduces():
    x, y = data()
    _, a = dp_sgd_train(mlp(), x=x, y=y, epochs=1, **KW)
    _, b = dp_sgd_train(mlp(), x=x, y=y, epochs=1, **KW)
    assert torch.equal(a["delta_vector"], b["delta_vector"])
    _, c = dp_sgd_train(mlp(), x=x, y=y, epochs=1, **{**KW, "generator_seed": 4})
    assert not torch.equal(a["delta_vector"], c["delta_vector"])


def test_batchnorm_refused_without_fix_and_fixed_with_fix():
    x, y = data()
    bn = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d\)"):
        dp_sgd_train(bn, x=x, y=y, epochs=1, **KW)
    trained, info = dp_sgd_train(bn, x=x, y=y, epochs=1, fix_model=True, **KW)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in trained.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in trained.modules())
    assert info["fixed_modules"] and "BatchNorm1d" in info["fixed_modules"][0]
    assert info["epsilon"] > 0 and bool(torch.isfinite(info["delta_vector"]).all())


def test_bad_inputs_named():
    x, y = data()
    with pytest.raises(ValueError, match="noise_multiplier.*-1"):
        dp_sgd_train(mlp(), x=x, y=y, epochs=1, **{**KW, "noise_multiplier": -1.0})
    with pytest.raises(ValueError, match="delta.*1.0"):
        dp_sgd_train(mlp(), x=x, y=y, epochs=1, **{**KW, "delta": 1.0})
    with pytest.raises(ValueError, match="'nope'"):
        dp_sgd_train(mlp(), x=x, y=y, epochs=1, accountant="nope", **KW)
