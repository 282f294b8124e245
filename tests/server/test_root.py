"""FLTrust's root data set: drawn once per run from the training data and held by the server; the
server's own update is local training on it (the clients' hyperparameters); the rule uses it."""

import numpy as np
import pytest
import torch
from server_helpers import finish, msg

from fedops.client.local import local_train
from fedops.config import ConfigError, parse_config
from fedops.rng import STREAM_ROOT, derive_seed, numpy_rng, torch_generator
from fedops.server.root import RootSet
from fedops.server.server import Server
from fedops.types import ParamLayout


def _cfg(aggregator, seed=0):
    return parse_config({
        "seed": seed, "data": {"name": "synthetic", "num_train": 100, "num_test": 20, "num_classes": 4, "image_size": 8},
        "partition": {"num_clients": 10}, "model": {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "server": {"fraction": 1.0, "aggregator": aggregator}, "client": {"epochs": 2, "batch_size": 8},
    })


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(100, 1, 8, 8, generator=g), torch.randint(0, 4, (100,), generator=g)


def _root(cfg):
    x, y = _data()
    model = cfg.model.build(input_shape=(1, 8, 8), num_classes=4, seed=0)
    return RootSet.draw(cfg, x_train=x, y_train=y, layout=ParamLayout.from_module(model), model=model,
                        device=torch.device("cpu"))


def test_root_set_is_seeded_and_sized():
    cfg = _cfg({"name": "fltrust", "root_size": 30})
    root, again, other = _root(cfg), _root(cfg), _root(_cfg({"name": "fltrust", "root_size": 30}, seed=1))
    assert root.x.shape[0] == 30 and torch.equal(root.x, again.x) and not torch.equal(root.x, other.x)
    with pytest.raises(ConfigError, match="root_size = 101 exceeds the 100 training examples"):
        _root(_cfg({"name": "fltrust", "root_size": 101}))


def test_root_update_is_local_training_on_the_root_rows_and_replays():
    cfg = _cfg({"name": "fltrust", "root_size": 30})
    root = _root(cfg)
    params = root.layout.flatten(cfg.model.build(input_shape=(1, 8, 8), num_classes=4, seed=3))
    g0 = root.update(round_idx=2, global_params=params)
    assert torch.equal(g0, root.update(round_idx=2, global_params=params))
    assert not torch.equal(g0, root.update(round_idx=3, global_params=params))
    # the same training by hand: the root rows of the training data, the clients' hyperparameters
    x, y = _data()
    idx = torch.as_tensor(np.sort(numpy_rng(0, STREAM_ROOT).choice(100, 30, replace=False)))
    torch.manual_seed(derive_seed(0, STREAM_ROOT, 2, 1))
    ref = local_train(cfg.model.build(input_shape=(1, 8, 8), num_classes=4, seed=0), client_id=-1, layout=root.layout,
                      global_params=params, x=x, y=y, indices=idx, epochs=2, batch_size=8, lr=cfg.client.lr,
                      generator=torch_generator(0, STREAM_ROOT, 2))
    assert torch.allclose(g0, ref.delta, atol=1e-6)


class _FixedRoot:
    def update(self, *, round_idx, global_params):
        return torch.tensor([1.0, 1.0])


def test_server_round_with_fltrust_uses_the_reference():
    cfg = parse_config({"partition": {"num_clients": 4}, "server": {"fraction": 1.0, "aggregator": "fltrust"}})
    with pytest.raises(ValueError, match="needs the server's root set"):
        Server(cfg, params=torch.zeros(2), num_clients=4)
    server = Server(cfg, params=torch.zeros(2), num_clients=4, root=_FixedRoot())
    m, _ = finish(server, [msg(0, [1.0, 0.0]), msg(1, [0.0, 2.0]), msg(2, [-5.0, 0.0]), msg(3, [3.0, 3.0])])
    # trust: cos 1/sqrt2, 1/sqrt2, 0 (ReLU of -1/sqrt2), 1; every update rescaled to |g0| = sqrt2
    t = [2 ** -0.5, 2 ** -0.5, 0.0, 1.0]
    rescaled = [[2 ** 0.5, 0.0], [0.0, 2 ** 0.5], [-(2 ** 0.5), 0.0], [1.0, 1.0]]
    expected = [sum(ti * r[j] for ti, r in zip(t, rescaled)) / sum(t) for j in range(2)]
    assert server.params.tolist() == pytest.approx(expected)
    assert m["aggregate/zero_trust_clients"] == 1.0
