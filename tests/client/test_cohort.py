"""Cohort training equals sequential local training, client by client: float64 on CPU within
1e-5 (here far closer), FedAvg and FedProx, momentum and weight decay, unequal client sizes (so
unequal step counts and a smaller last batch), per-row loss weights, and any chunk size; in
float32 the same bytes whatever the chunk size. Both kernels: ``torch.func`` (``autograd``) and
the hand-written one for chains of Linear and ReLU layers (``dense``)."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from fedops.client.cohort import CohortClient, DenseChain, DenseLayer, cohort_supported, cohort_train, dense_chain
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


def _cohort(model, layout, params, x, y, indices, weights=None, chunk_size=32, **hp):  # hp: kernel= too
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
@pytest.mark.parametrize("kernel", ["autograd", "dense"])
def test_cohort_updates_equal_the_sequential_ones_in_float64(hp, chunk_size, kernel):
    model, layout, params, x, y, indices = _setup(torch.float64)
    want = _sequential(model, layout, params, x, y, indices, **hp)
    got = _cohort(model, layout, params, x, y, indices, chunk_size=chunk_size, kernel=kernel, **hp)
    for a, b in zip(want, got):
        assert a.client_id == b.client_id and a.num_samples == b.num_samples
        assert torch.allclose(a.delta, b.delta, atol=1e-10, rtol=0), (a.client_id, (a.delta - b.delta).abs().max())
        assert a.metrics["steps"] == b.metrics["steps"]
        assert a.metrics["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-9)


@pytest.mark.parametrize("kernel", ["autograd", "dense"])
def test_per_row_loss_weights_match(kernel):
    model, layout, params, x, y, indices = _setup(torch.float64)
    weights = torch.rand(x.shape[0], dtype=torch.float32) + 0.5
    hp = dict(epochs=2, batch_size=4, lr=0.1)
    want = _sequential(model, layout, params, x, y, indices, weights=weights, **hp)
    got = _cohort(model, layout, params, x, y, indices, weights=weights, kernel=kernel, **hp)
    for a, b in zip(want, got):
        assert torch.allclose(a.delta, b.delta, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kernel", ["autograd", "dense"])
@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["fused-step", "momentum"])
def test_float32_bytes_do_not_depend_on_the_chunk_size(kernel, momentum):
    model, layout, params, x, y, indices = _setup(torch.float32)
    hp = dict(epochs=2, batch_size=4, lr=0.1, momentum=momentum)

    def digest(chunk):
        ups = _cohort(model, layout, params, x, y, indices, chunk_size=chunk, kernel=kernel, **hp)
        return hashlib.sha256(b"".join(u.delta.numpy().tobytes() for u in ups)).hexdigest()

    assert digest(1) == digest(2) == digest(5)


def test_the_zoo_mlp_on_images_trains_the_same_with_either_kernel():
    """The 2NN shape (Flatten, Linear, ReLU, Linear, ReLU, Linear) on image rows, float64: the
    dense kernel, the autograd one and local_train agree; identities and p = 0 dropout are skipped."""
    from fedops.config import parse_config

    torch.manual_seed(1)
    model = parse_config({"model": {"name": "mlp", "hidden": [7, 5]}}).model.build(
        input_shape=(1, 4, 4), num_classes=3, seed=0).double()
    assert [layer.relu for layer in dense_chain(model).layers] == [True, True, False] and dense_chain(model).flattens
    x = torch.randn(40, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    indices = [torch.arange(0, 11), torch.arange(11, 14), torch.arange(14, 40)]
    layout = ParamLayout.from_module(model)
    params = layout.flatten(model).clone()
    hp = dict(epochs=2, batch_size=5, lr=0.2)
    want = _sequential(model, layout, params, x, y, indices, **hp)
    for kernel in ("dense", "autograd"):
        got = _cohort(model, layout, params, x, y, indices, chunk_size=2, kernel=kernel, **hp)
        for a, b in zip(want, got):
            assert torch.allclose(a.delta, b.delta, atol=1e-10, rtol=0), (kernel, a.client_id)
            assert a.metrics["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-9)


def test_only_chains_of_linear_and_relu_take_the_dense_kernel():
    assert dense_chain(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Identity(), nn.Dropout(0.0),
                                     nn.Linear(3, 2, bias=False))) == DenseChain(layers=(
        DenseLayer(weight="1.weight", bias="1.bias", relu=True), DenseLayer(weight="5.weight", bias=None, relu=False)),
        flattens=True)
    relu = nn.ReLU()

    class Scaled(nn.Sequential):  # its own forward
        def forward(self, x):
            return 2 * super().forward(x)

    hooked = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    hooked[2].register_forward_hook(lambda module, args, out: out * 0)
    parametrized = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    torch.nn.utils.parametrizations.weight_norm(parametrized[0])
    for other in (nn.Linear(4, 2),  # not a Sequential
                  nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)),  # no ReLU between
                  nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)),  # another activation
                  nn.Sequential(nn.Linear(4, 3), nn.ReLU()),  # ends in a ReLU
                  nn.Sequential(nn.Flatten(0), nn.Linear(4, 3)),  # flattens the batch too
                  nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)),
                  nn.Sequential(nn.Linear(4, 3), relu, nn.Linear(3, 2), relu),  # one ReLU twice: the last on the logits
                  Scaled(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), hooked, parametrized,
                  nn.Sequential(nn.Sequential(nn.Linear(4, 3)), nn.ReLU(), nn.Linear(3, 2))):  # nested
        assert dense_chain(other) is None, other
    model, layout, params, x, y, indices = _setup(torch.float32)
    with pytest.raises(ValueError, match="kernel must be one of 'auto', 'dense', 'autograd', got 'fast'"):
        _cohort(model, layout, params, x, y, indices, kernel="fast", epochs=1, batch_size=4, lr=0.1)
    tanh = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    tanh_layout = ParamLayout.from_module(tanh)
    with pytest.raises(ValueError, match=r"kernel .dense. needs a chain .* \(this model is not one\)"):
        _cohort(tanh, tanh_layout, tanh_layout.flatten(tanh), x, y, indices, kernel="dense", epochs=1, batch_size=4,
                lr=0.1)
    # no Flatten: Linear acts on the last dimension of image rows, which the dense kernel does not do; auto falls back
    images = x.reshape(-1, 1, 2, 3)
    with pytest.raises(ValueError, match=r"rows of shape \(1, 2, 3\) need a Flatten first"):
        _cohort(model, layout, params, images, y, indices, kernel="dense", epochs=1, batch_size=4, lr=0.1)
    with pytest.raises(Exception, match="shape|size"):  # the model's own forward fails on such rows too
        _cohort(model, layout, params, images, y, indices, kernel="auto", epochs=1, batch_size=4, lr=0.1)


def test_models_with_random_or_stateful_layers_are_refused_with_the_reason():
    assert cohort_supported(nn.Sequential(nn.Linear(2, 2))) is None
    assert cohort_supported(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))) is None
    assert "dropout layer with p = 0.5" in cohort_supported(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    assert "batch norm" in cohort_supported(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    frozen = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    frozen[0].weight.requires_grad_(False)  # the per-client paths leave it alone: the cohort would step it
    assert cohort_supported(frozen) == "parameter 0.weight does not require a gradient (frozen)"
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
    from fedops.client.cohort import PARAM_COPIES, PER_SAMPLE_COPIES, client_bytes

    model, *_ = _setup(torch.float32)
    x, y = torch.randn(rows, 6), torch.randint(0, 3, (rows,))
    loss = nn.functional.cross_entropy(model(x), y)
    params = sum(p.numel() * 4 for p in model.parameters())  # 6*8 + 8 + 8*3 + 3 = 83 floats
    assert params == 332
    assert client_bytes(model, x=x, y=y) == _saved_bytes_by_graph(loss) + PARAM_COPIES * params
    # DP-SGD holds a gradient per row besides: 332 bytes for each of the rows
    assert client_bytes(model, x=x, y=y, per_sample=True) == client_bytes(model, x=x, y=y) + PER_SAMPLE_COPIES * rows * 332
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


# --- DP-SGD: the cohort equals Opacus client by client --------------------------------------


def _dp_sequential(model, layout, x, y, indices, *, noise, clip, batch_size, **hp):
    from fedops.privacy.local_dp import dp_sgd_train

    return [dp_sgd_train(model, x=x[ix], y=y[ix], noise_multiplier=noise, max_grad_norm=clip, delta=1e-5,
                         batch_size=batch_size or ix.numel(),  # None: full batch, as the runtime passes it
                         generator_seed=514 + 2 * c, flatten=layout.flatten, **hp)[1] for c, ix in enumerate(indices)]


def _dp_cohort(model, layout, params, x, y, indices, *, noise, clip, chunk_size, width=None, **hp):
    from fedops.client.cohort import DPSGD

    clients = [CohortClient(client_id=c, indices=ix, generator=torch.Generator().manual_seed(514 + 2 * c),
                            noise_generator=torch.Generator().manual_seed(515 + 2 * c)) for c, ix in enumerate(indices)]
    return cohort_train(model, layout=layout, global_params=params, x=x, y=y, clients=clients, chunk_size=chunk_size,
                        width=width, dp=DPSGD(noise_multiplier=noise, max_grad_norm=clip), **hp)


@pytest.mark.parametrize("noise", [0.0, 1.3], ids=["clip-only", "noised"])
@pytest.mark.parametrize("width, batch_size", [(None, 4), (2, 4), (None, None)],
                         ids=["batch-wide", "passes-of-2", "full-batch"])
@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_dp_sgd_cohort_equals_opacus_per_client_in_float64(noise, width, batch_size, chunk_size):
    """Poisson batches (empty ones and ones longer than the width included), per-sample clipping at
    0.5 (most rows clipped), Opacus' noise draws and its division by the expected batch size."""
    model, layout, params, x, y, indices = _setup(torch.float64)
    hp = dict(epochs=2, batch_size=batch_size, lr=0.3)
    want = _dp_sequential(model, layout, x, y, indices, noise=noise, clip=0.5, **hp)
    got = _dp_cohort(model, layout, params, x, y, indices, noise=noise, clip=0.5, chunk_size=chunk_size,
                     width=width, **hp)
    for c, (a, b) in enumerate(zip(want, got)):
        assert b.client_id == c and b.num_samples == SIZES[c]
        assert b.metrics == {"steps": float(a["steps"]), "sample_rate": a["sample_rate"]}
        assert float(a["delta_vector"].norm()) > 0
        assert torch.allclose(b.delta.double(), a["delta_vector"].double(), atol=1e-5, rtol=0), c


def test_dp_sgd_sample_rate_and_expected_batch_are_the_private_loaders():
    """925 rows in batches of 10: 93 batches, but Opacus' private loader has int(1 / (1 / 93)) = 92
    steps, and make_private takes the rate 1/92 and the expected batch int(925 / 92) = 10 from it."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    layout = ParamLayout.from_module(model)
    x, y = torch.randn(925, 3, dtype=torch.float64), torch.randint(0, 2, (925,))
    want = _dp_sequential(model, layout, x, y, [torch.arange(925)], noise=0.5, clip=1.0, batch_size=10,
                          epochs=1, lr=0.2)[0]
    got = _dp_cohort(model, layout, layout.flatten(model).clone(), x, y, [torch.arange(925)], noise=0.5, clip=1.0,
                     chunk_size=1, epochs=1, batch_size=10, lr=0.2)[0]
    assert want["steps"] == 92 and want["sample_rate"] == 1 / 92
    assert got.metrics == {"steps": 92.0, "sample_rate": 1 / 92}
    assert torch.allclose(got.delta.double(), want["delta_vector"].double(), atol=1e-5, rtol=0)


def test_dp_sgd_cohort_schedule_has_empty_and_long_poisson_batches():
    """The case above is not vacuous: with these seeds some Poisson batches are empty and some
    are longer than 2 rows (taken in several passes)."""
    from fedops.client.cohort import _dp_schedule

    _, _, _, _, _, indices = _setup(torch.float64)
    lengths = [b.numel() for c, ix in enumerate(indices)
               for b in _dp_schedule(CohortClient(client_id=c, indices=ix, generator=torch.Generator().manual_seed(514 + 2 * c)),
                                     epochs=2, batch_size=4).batches]
    assert 0 in lengths and max(lengths) > 4, sorted(lengths)


def test_dp_sgd_float32_bytes_do_not_depend_on_the_chunk_size():
    model, layout, params, x, y, indices = _setup(torch.float32)
    digests = set()
    for chunk in (1, 2, 3, 5):
        ups = _dp_cohort(model, layout, params, x, y, indices, noise=1.0, clip=0.5, chunk_size=chunk,
                         epochs=2, batch_size=4, lr=0.3)
        digests.add(hashlib.sha256(b"".join(u.delta.numpy().tobytes() for u in ups)).hexdigest())
    assert len(digests) == 1


def test_dp_sgd_cohort_refuses_what_opacus_training_does_not_do():
    from fedops.client.cohort import DPSGD

    model, layout, params, x, y, indices = _setup(torch.float32)
    dp = DPSGD(noise_multiplier=1.0, max_grad_norm=1.0)
    with pytest.raises(ValueError, match="plain SGD.*'momentum': 0.9"):
        _dp_cohort(model, layout, params, x, y, indices, noise=1.0, clip=1.0, chunk_size=2, epochs=1, batch_size=4,
                   lr=0.1, momentum=0.9)
    lone = [CohortClient(client_id=0, indices=indices[0], generator=torch.Generator().manual_seed(0))]
    with pytest.raises(ValueError, match="noise_generator"):
        cohort_train(model, layout=layout, global_params=params, x=x, y=y, clients=lone, epochs=1, batch_size=4,
                     lr=0.1, dp=dp)
