"""The simulator's attack step and malicious clients: which clients are malicious, data
poisoning inside training, update crafting with the round's honest updates."""

import numpy as np
import pytest
import torch

from fedops.client.runtime import ClientRuntime
from fedops.config import ConfigError, parse_config
from fedops.attacks.step import AttackStep
from fedops.types import ClientUpdate


def _runtime(attack, fraction):
    cfg = parse_config({
        "data": {"name": "synthetic", "num_train": 100, "num_test": 20, "num_classes": 4, "image_size": 8},
        "partition": {"num_clients": 10}, "model": {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "server": {"fraction": 1.0}, "simulation": {"attack": attack, "malicious_fraction": fraction},
    })
    g = torch.Generator().manual_seed(0)
    return ClientRuntime(
        config=cfg, x_train=torch.rand(100, 1, 8, 8, generator=g), y_train=torch.randint(0, 4, (100,), generator=g),
        partition_indices=[np.arange(i * 10, (i + 1) * 10) for i in range(10)], client_meta=[],
        input_shape=(1, 8, 8), num_classes=4, devices=[torch.device("cpu")],
    )


def _step(rt):
    return AttackStep.build(attack=rt.config.simulation.attack, malicious=rt.malicious, seed=rt.config.seed)


def _updates(rt):
    g = torch.Generator().manual_seed(1)
    return {c: ClientUpdate(client_id=c, delta=torch.randn(rt.layout.size, generator=g), num_samples=10) for c in range(10)}


def test_the_malicious_set_is_seeded_and_sized():
    rt = _runtime("sign_flip", 0.3)
    assert len(rt.malicious) == 3 and rt.malicious == _runtime("sign_flip", 0.3).malicious
    assert _runtime("none", 0.0).malicious == frozenset()


def test_sign_flip_rewrites_only_the_malicious_updates():
    rt = _runtime({"name": "sign_flip", "scale": 2.0}, 0.2)
    ups = _updates(rt)
    out = _step(rt)(round_idx=1, updates=ups, global_params=torch.zeros(rt.layout.size), num_selected=10)
    for c in range(10):
        expected = -2.0 * ups[c].delta if c in rt.malicious else ups[c].delta
        assert torch.equal(out[c].delta, expected)


def test_ipm_uses_the_mean_of_the_honest_updates():
    rt = _runtime({"name": "ipm", "epsilon": 0.5}, 0.2)
    ups = _updates(rt)
    out = _step(rt)(round_idx=1, updates=ups, global_params=torch.zeros(rt.layout.size), num_selected=10)
    honest = torch.stack([ups[c].delta for c in range(10) if c not in rt.malicious]).mean(dim=0)
    for c in rt.malicious:
        assert torch.allclose(out[c].delta, -0.5 * honest, atol=1e-6)


def test_label_flip_poisons_the_training_data_of_malicious_clients_only():
    rt = _runtime("label_flip", 0.2)
    honest_rt = _runtime("none", 0.0)
    params = rt.layout.flatten(rt.new_model(seed=0))
    bad = min(rt.malicious)
    good = min(set(range(10)) - rt.malicious)
    assert not torch.equal(rt.train(round_idx=1, client_id=bad, global_params=params).delta,
                           honest_rt.train(round_idx=1, client_id=bad, global_params=params).delta)
    assert torch.equal(rt.train(round_idx=1, client_id=good, global_params=params).delta,
                       honest_rt.train(round_idx=1, client_id=good, global_params=params).delta)
    assert _step(rt) is None  # a data attack: updates are sent as trained, no attack step


def test_attack_config_refusals():
    with pytest.raises(ConfigError, match="set both"):
        parse_config({"simulation": {"attack": "sign_flip"}})
    with pytest.raises(ConfigError, match="set both"):
        parse_config({"simulation": {"malicious_fraction": 0.2}})
    with pytest.raises(ConfigError, match="unknown attack 'flip'"):
        parse_config({"simulation": {"attack": "flip", "malicious_fraction": 0.2}})
    with pytest.raises(ConfigError, match="selects no client"):
        parse_config({"partition": {"num_clients": 10}, "simulation": {"attack": "sign_flip", "malicious_fraction": 0.01}})
