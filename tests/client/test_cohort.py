"""Cohort training equals sequential local training, client by client: float64 on CPU within
1e-5 (here far closer), FedAvg and FedProx, momentum and weight decay, unequal client sizes (so
unequal step counts and a smaller last batch), per-row loss weights, and any chunk size; in
float32 the same bytes whatever the chunk size."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from fedops.client.cohort import CohortClient, cohort_supported, cohort_train
from fedops.client.local import local_train
from fedops.types import ParamLayout

SIZES = (5, 13, 20, 1, 9)


def _setup(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    x = torch.randn(sum(SIZES), 6, dtype=dtype)
    y = torch.randint(0, 3, (sum(SIZES),))
    bounds = torch.tensor((0,) + SIZES).cumsum(0)
    indices = [torch.arange(int(bounds[i]), int(bounds[i + 1])) for i in range(len(SIZES))]
    layout = ParamLayout.from_module(model)
    return model, layout, layout.flatten(model).clone(), x, y, indices


def _gen(client):
    return torch.Generator().manual_seed(1000 + client)


def _sequential(model, layout, params, x, y, indices, weights=None, **hp):
    return [local_train(model, client_id=c, layout=layout, global_params=params, x=x, y=y, indices=ix,
                        generator=_gen(c), sample_weights=weights, **hp) for c, ix in enumerate(indices)]


def _cohort(model, layout, params, x, y, indices, weights=None, chunk_size=32, **hp):
    clients = [CohortClient(client_id=c, indices=ix, generator=_gen(c), sample_weights=weights)
               for c, ix in enumerate(indices)]
    return cohort_train(model, layout=layout, global_params=params, x=x, y=y, clients=clients,
                        chunk_size=chunk_size, **hp)


@pytest.mark.parametrize("hp", [
    dict(epochs=2, batch_size=4, lr=0.1),  # FedAvg
    dict(epochs=2, batch_size=4, lr=0.1, prox_mu=0.5),  # FedProx
    dict(epochs=3, batch_size=7, lr=0.05, momentum=0.9, weight_decay=1e-3, prox_mu=0.1),
    dict(epochs=1, batch_size=None, lr=0.3),  # FedSGD: one full-batch step
], ids=["fedavg", "fedprox", "momentum-wd-prox", "full-batch"])
@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_cohort_updates_equal_the_sequential_ones_in_float64(hp, chunk_size):
    model, layout, params, x, y, indices = _setup(torch.float64)
    want = _sequential(model, layout, params, x, y, indices, **hp)
    got = _cohort(model, layout, params, x, y, indices, chunk_size=chunk_size, **hp)
    for a, b in zip(want, got):
        assert a.client_id == b.client_id and a.num_samples == b.num_samples
        assert torch.allclose(a.delta, b.delta, atol=1e-10, rtol=0), (a.client_id, (a.delta - b.delta).abs().max())
        assert a.metrics["steps"] == b.metrics["steps"]
        assert a.metrics["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-9)


def test_per_row_loss_weights_match():
    model, layout, params, x, y, indices = _setup(torch.float64)
    weights = torch.rand(x.shape[0], dtype=torch.float32) + 0.5
    hp = dict(epochs=2, batch_size=4, lr=0.1)
    want = _sequential(model, layout, params, x, y, indices, weights=weights, **hp)
    got = _cohort(model, layout, params, x, y, indices, weights=weights, **hp)
    for a, b in zip(want, got):
        assert torch.allclose(a.delta, b.delta, atol=1e-10, rtol=0)


def test_float32_bytes_do_not_depend_on_the_chunk_size():
    model, layout, params, x, y, indices = _setup(torch.float32)
    hp = dict(epochs=2, batch_size=4, lr=0.1, momentum=0.5)

    def digest(chunk):
        ups = _cohort(model, layout, params, x, y, indices, chunk_size=chunk, **hp)
        return hashlib.sha256(b"".join(u.delta.numpy().tobytes() for u in ups)).hexdigest()

    assert digest(1) == digest(2) == digest(5)


def test_models_with_random_or_stateful_layers_are_refused_with_the_reason():
    assert cohort_supported(nn.Sequential(nn.Linear(2, 2))) is None
    assert cohort_supported(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))) is None
    assert "dropout layer with p = 0.5" in cohort_supported(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    assert "batch norm" in cohort_supported(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    model, layout, params, x, y, indices = _setup(torch.float32)
    with pytest.raises(ValueError, match="dropout"):
        bad = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5))
        cohort_train(bad, layout=ParamLayout.from_module(bad), global_params=ParamLayout.from_module(bad).flatten(bad),
                     x=x, y=y, clients=[], epochs=1, batch_size=4, lr=0.1)


def _saved_bytes_by_graph(loss: torch.Tensor) -> int:
    """An independent count of what autograd saved: every ``_saved_*`` tensor of every node of
    the loss's graph (each distinct tensor object once, by node and name)."""
    seen, total, stack = set(), 0, [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in dir(node):
            if name.startswith("_saved_"):
                value = getattr(node, name)
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
        stack.extend(n for n, _ in node.next_functions)
    return total


@pytest.mark.parametrize("rows", [1, 5, 32])
def test_a_clients_bytes_are_what_autograd_saves_plus_parameter_copies(rows):
    from fedops.client.cohort import PARAM_COPIES, client_bytes

    model, *_ = _setup(torch.float32)
    x, y = torch.randn(rows, 6), torch.randint(0, 3, (rows,))
    loss = nn.functional.cross_entropy(model(x), y)
    params = sum(p.numel() * 4 for p in model.parameters())  # 6*8 + 8 + 8*3 + 3 = 83 floats
    assert params == 332
    assert client_bytes(model, x=x, y=y) == _saved_bytes_by_graph(loss) + PARAM_COPIES * params
    assert all(p.grad is None for p in model.parameters())  # nothing stepped, no gradient left


def test_a_small_cnn_client_counts_at_least_its_first_convolutions_output():
    from fedops.client.cohort import client_bytes
    from fedops.models.small_cnn import SmallCNN

    model = SmallCNN().build(input_shape=(1, 28, 28), num_classes=10, seed=0)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    # the ReLU after the first convolution saves its output, [32, 8, 28, 28] floats, for backward
    assert client_bytes(model, x=x, y=y) >= 32 * 8 * 28 * 28 * 4


def test_the_chunk_is_as_many_clients_as_the_budget_holds():
    from fedops.client.cohort import chunk_for_memory, client_bytes

    model, *_ = _setup(torch.float32)
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    one = client_bytes(model, x=x, y=y)
    assert chunk_for_memory(model, x=x, y=y, budget_bytes=3 * one) == 3
    assert chunk_for_memory(model, x=x, y=y, budget_bytes=3 * one - 1) == 2
    assert chunk_for_memory(model, x=x, y=y, budget_bytes=1) == 1  # at least one client
    assert chunk_for_memory(model, x=x, y=y, budget_bytes=10**12, most=50) == 50
    with pytest.raises(ValueError, match="budget_bytes must be >= 1, got 0"):
        chunk_for_memory(model, x=x, y=y, budget_bytes=0)
