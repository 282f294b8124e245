"""FLTrust's root data set: drawn once per run from the training data, the server's own update
is local training on it (same hyperparameters as the clients), and the server engine needs it."""

import numpy as np
import pytest
import torch

from fedops.client.local import local_train
from fedops.client.runtime import ClientRuntime
from fedops.config import ConfigError, parse_config
from fedops.server.engine import FederatedServer
from fedops.types import EncodedUpdate


def _runtime(aggregator, seed=0):
    cfg = parse_config({
        "seed": seed,
        "data": {"name": "synthetic", "num_train": 100, "num_test": 20, "num_classes": 4, "image_size": 8},
        "partition": {"num_clients": 10}, "model": {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "server": {"fraction": 1.0, "aggregator": aggregator}, "client": {"epochs": 2, "batch_size": 8},
    })
    g = torch.Generator().manual_seed(0)
    return ClientRuntime(
        config=cfg, x_train=torch.rand(100, 1, 8, 8, generator=g), y_train=torch.randint(0, 4, (100,), generator=g),
        partition_indices=[np.arange(i * 10, (i + 1) * 10) for i in range(10)], client_meta=[],
        input_shape=(1, 8, 8), num_classes=4, devices=[torch.device("cpu")],
    )


def test_root_set_is_seeded_sized_and_only_built_for_rules_that_need_it():
    rt = _runtime({"name": "fltrust", "root_size": 30})
    assert rt.root_indices.shape == (30,) and len(set(rt.root_indices.tolist())) == 30
    assert np.array_equal(rt.root_indices, _runtime({"name": "fltrust", "root_size": 30}).root_indices)
    assert not np.array_equal(rt.root_indices, _runtime({"name": "fltrust", "root_size": 30}, seed=1).root_indices)
    assert _runtime("median").root_indices is None
    with pytest.raises(ConfigError, match="root_size = 101 exceeds the 100 training examples"):
        _runtime({"name": "fltrust", "root_size": 101})


def test_root_update_is_local_training_on_the_root_set_and_replays():
    rt = _runtime({"name": "fltrust", "root_size": 30})
    params = rt.layout.flatten(rt.new_model(seed=3))
    g0 = rt.root_update(round_idx=2, global_params=params)
    assert torch.equal(g0, rt.root_update(round_idx=2, global_params=params))
    assert not torch.equal(g0, rt.root_update(round_idx=3, global_params=params))
    # the same training by hand: the root rows only, the clients' hyperparameters
    from fedops.rng import STREAM_ROOT, derive_seed, torch_generator

    torch.manual_seed(derive_seed(0, STREAM_ROOT, 2, 1))
    ref = local_train(rt.new_model(seed=0), client_id=-1, layout=rt.layout, global_params=params,
                      x=rt.x_train, y=rt.y_train, indices=torch.as_tensor(rt.root_indices), epochs=2, batch_size=8,
                      lr=rt.config.client.lr, generator=torch_generator(0, STREAM_ROOT, 2))
    assert torch.allclose(g0, ref.delta, atol=1e-6)
    with pytest.raises(ValueError, match="has no root data set"):
        _runtime("median").root_update(round_idx=1, global_params=params)


def _msg(cid, values):
    payload = np.asarray(values, dtype="<f4").tobytes()
    return EncodedUpdate(client_id=cid, payload=payload, nbytes=len(payload), num_samples=10)


def test_server_round_with_fltrust_uses_the_reference():
    cfg = parse_config({"partition": {"num_clients": 4}, "server": {"fraction": 1.0, "aggregator": "fltrust"}})
    server = FederatedServer(config=cfg, params=torch.zeros(2), num_clients=4)
    msgs = [_msg(0, [1.0, 0.0]), _msg(1, [0.0, 2.0]), _msg(2, [-5.0, 0.0]), _msg(3, [3.0, 3.0])]
    with pytest.raises(ValueError, match="needs the server's root update"):
        server.finish_round(1, selected=[0, 1, 2, 3], received=msgs, reports={}, dropped={}, started=0.0)
    out = server.finish_round(1, selected=[0, 1, 2, 3], received=msgs, reports={}, dropped={}, started=0.0,
                              reference=torch.tensor([1.0, 1.0]))
    # trust: cos 1/sqrt2, 1/sqrt2, 0 (ReLU of -1/sqrt2), 1; every update rescaled to |g0| = sqrt2
    t = [2 ** -0.5, 2 ** -0.5, 0.0, 1.0]
    rescaled = [[2 ** 0.5, 0.0], [0.0, 2 ** 0.5], [-(2 ** 0.5), 0.0], [1.0, 1.0]]
    expected = [sum(ti * r[j] for ti, r in zip(t, rescaled)) / sum(t) for j in range(2)]
    assert out.params.tolist() == pytest.approx(expected)
    assert out.metrics["aggregate/zero_trust_clients"] == 1.0
