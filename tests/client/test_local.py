import torch
import torch.nn.functional as F

from fedops.client.local import local_train
from fedops.models import MODELS
from fedops.types import ParamLayout


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    model = MODELS.build("small_cnn").build(input_shape=(1, 8, 8), num_classes=3, seed=1)
    layout = ParamLayout.from_module(model)
    return x, y, model, layout


def test_one_full_batch_step_equals_centralised_sgd():
    """FedSGD (E=1, full batch) with one client: the new global model is exactly one SGD step."""
    x, y, model, layout = _setup()
    w0 = layout.flatten(model)
    ref = MODELS.build("small_cnn").build(input_shape=(1, 8, 8), num_classes=3, seed=1)
    loss = F.cross_entropy(ref(x), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expected = w0 - 0.1 * torch.cat([g.reshape(-1) for g in grads])
    upd = local_train(
        model, client_id=0, layout=layout, global_params=w0, x=x, y=y, indices=torch.arange(40),
        epochs=1, batch_size=None, lr=0.1, generator=torch.Generator().manual_seed(0),
    )
    assert upd.metrics["steps"] == 1 and upd.num_samples == 40
    assert torch.allclose(w0 + upd.delta, expected, atol=1e-6)


def test_trains_only_on_its_indices_and_is_replayable():
    x, y, model, layout = _setup()
    w0 = layout.flatten(model)
    idx = torch.tensor([3, 5, 7, 11, 13])
    args = dict(client_id=0, layout=layout, global_params=w0, x=x, y=y, indices=idx, epochs=2, batch_size=2, lr=0.05)
    a = local_train(model, generator=torch.Generator().manual_seed(4), **args)
    b = local_train(model, generator=torch.Generator().manual_seed(4), **args)
    assert torch.equal(a.delta, b.delta)
    assert a.metrics["steps"] == 6  # ceil(5/2) per epoch
    x2 = x.clone()
    x2[0] += 100  # a sample outside the partition does not change the result
    c = local_train(model, generator=torch.Generator().manual_seed(4), **{**args, "x": x2})
    assert torch.equal(a.delta, c.delta)


def test_prox_term_pulls_towards_the_global_model():
    x, y, model, layout = _setup()
    w0 = layout.flatten(model)
    args = dict(client_id=0, layout=layout, global_params=w0, x=x, y=y, indices=torch.arange(40), epochs=3, batch_size=8, lr=0.1)
    plain = local_train(model, generator=torch.Generator().manual_seed(1), **args)
    zero = local_train(model, generator=torch.Generator().manual_seed(1), prox_mu=0.0, **args)
    prox = local_train(model, generator=torch.Generator().manual_seed(1), prox_mu=10.0, **args)
    assert torch.equal(plain.delta, zero.delta)
    assert prox.delta.norm() < plain.delta.norm()


def test_layout_round_trip():
    _, _, model, layout = _setup()
    v = torch.arange(layout.size, dtype=torch.float32)
    layout.load_into(model, v)
    assert torch.equal(layout.flatten(model), v)
    first = layout.slots[0]
    assert layout.view(v, first.name).shape == first.shape
