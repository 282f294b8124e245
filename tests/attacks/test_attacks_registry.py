"""Attack registry, hyperparameter validation and the choice of malicious clients."""

import pytest
from pydantic import ValidationError

from fedops.attacks import ATTACKS, choose_malicious

KEYS = ["alie", "backdoor", "free_rider", "gaussian", "ipm", "label_flip", "none", "sign_flip"]


def test_keys_and_unknown():
    assert ATTACKS.keys() == KEYS
    with pytest.raises(ValueError, match="known: alie, backdoor"):
        ATTACKS.build({"name": "nope"})


@pytest.mark.parametrize("key", KEYS)
def test_defaults_build(key):
    assert ATTACKS.build(key).name == key


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "sign_flip", "scale": 0},
        {"name": "sign_flip", "scale": -1.0},
        {"name": "gaussian", "std": 0.0},
        {"name": "gaussian", "std": float("inf")},
        {"name": "label_flip", "fraction": 0},
        {"name": "label_flip", "fraction": 1.5},
        {"name": "ipm", "epsilon": 0},
        {"name": "ipm", "epsilon": -0.1},
        {"name": "alie", "z": float("nan")},
        {"name": "backdoor", "poison_fraction": 0},
        {"name": "backdoor", "trigger_size": 0},
        {"name": "backdoor", "target_label": -1},
        {"name": "backdoor", "boost": 0},
        {"name": "none", "scale": 1.0},  # unknown field
    ],
)
def test_bad_hyperparameters(spec):
    with pytest.raises(ValidationError):
        ATTACKS.build(spec)


def test_choose_malicious():
    a = choose_malicious(50, fraction=0.2, seed=3)
    assert a == choose_malicious(50, fraction=0.2, seed=3)
    assert len(a) == 10 and all(isinstance(i, int) and 0 <= i < 50 for i in a)
    assert a != choose_malicious(50, fraction=0.2, seed=4)
    assert choose_malicious(50, fraction=0.0, seed=3) == frozenset()
    assert len(choose_malicious(7, fraction=0.3, seed=0)) == round(0.3 * 7)


@pytest.mark.parametrize("fraction", [1.0, -0.1, float("nan")])
def test_choose_malicious_refuses(fraction):
    with pytest.raises(ValueError, match="fraction"):
        choose_malicious(10, fraction=fraction, seed=0)


def test_choose_malicious_keeps_an_honest_client():
    with pytest.raises(ValueError, match="no honest client"):
        choose_malicious(10, fraction=0.96, seed=0)
