"""Invariants every registered partitioner must keep, plus input checks and the registry."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fedops.partition import PARTITIONERS, Partition, Partitioner, partition_labels

NUM_CLIENTS = 10

# One spec per registered key; a new partitioner without an entry here fails test_every_key_has_a_spec.
SPECS = {
    "iid": {"name": "iid"},
    "dirichlet": {"name": "dirichlet", "alpha": 0.5, "min_size": 20},
    "shards": {"name": "shards", "shards_per_client": 2},
    "labels_per_client": {"name": "labels_per_client", "labels_per_client": 3},
    "quantity": {"name": "quantity", "sigma": 1.0, "min_size": 5},
    "feature_skew": {"name": "feature_skew", "kind": "noise"},
    "natural_id": {"name": "natural_id"},
    "sensitive_dirichlet": {"name": "sensitive_dirichlet", "alpha": 0.5, "min_size": 20},
}
GROUPED = {"natural_id", "sensitive_dirichlet"}
"""Partitioners that split by a per-sample group (a client id, or the sensitive attribute)."""
MIN_SIZE = {key: spec.get("min_size", 1) for key, spec in SPECS.items()}
DETERMINISTIC = {"natural_id"}


def groups_for(n: int, num_clients: int) -> np.ndarray:
    """Group ids 0..num_clients-1 of unequal sizes, in a shuffled order."""
    rng = np.random.default_rng(7)
    groups = np.concatenate([np.arange(num_clients), rng.integers(0, num_clients, n - num_clients)])
    return rng.permutation(groups)


def run(key: str, labels: np.ndarray, num_clients: int, seed: int) -> Partition:
    groups = None
    if key == "natural_id":
        groups = groups_for(labels.size, num_clients)
    elif key == "sensitive_dirichlet":
        groups = np.random.default_rng(11).integers(0, 2, labels.size)
    return partition_labels(SPECS[key], labels, num_clients=num_clients, seed=seed, groups=groups)


def test_every_key_has_a_spec():
    assert sorted(SPECS) == PARTITIONERS.keys()
    assert {"iid", "dirichlet", "shards", "labels_per_client", "quantity", "feature_skew",
            "natural_id"} <= set(PARTITIONERS.keys())


@pytest.mark.parametrize("key", PARTITIONERS.keys())
def test_each_index_exactly_once_and_min_size(key, balanced_labels, exact_cover):
    part = run(key, balanced_labels, NUM_CLIENTS, seed=0)
    assert part.num_clients == NUM_CLIENTS
    assert len(part.client_meta) == NUM_CLIENTS
    exact_cover(part, balanced_labels.size)
    assert part.sizes().min() >= MIN_SIZE[key]


@pytest.mark.parametrize("key", PARTITIONERS.keys())
def test_same_seed_same_partition_different_seed_differs(key, balanced_labels):
    a = run(key, balanced_labels, NUM_CLIENTS, seed=3)
    b = run(key, balanced_labels, NUM_CLIENTS, seed=3)
    assert a == b
    c = run(key, balanced_labels, NUM_CLIENTS, seed=4)
    if key in DETERMINISTIC:
        assert a == c
    else:
        assert a != c


@pytest.mark.parametrize("key", PARTITIONERS.keys())
def test_one_client_gets_everything(key, balanced_labels):
    spec = {**SPECS[key]}
    if key == "labels_per_client":
        spec["labels_per_client"] = 10  # one client must then hold all 10 classes
    groups = np.zeros(balanced_labels.size, dtype=np.int64) if key in GROUPED else None
    part = partition_labels(spec, balanced_labels, num_clients=1, seed=0, groups=groups)
    assert part.num_clients == 1
    np.testing.assert_array_equal(part.indices[0], np.arange(balanced_labels.size))


@pytest.mark.parametrize("key", PARTITIONERS.keys())
def test_more_clients_than_samples_refused(key):
    labels = np.array([0, 1, 0, 1, 2])
    with pytest.raises(ValueError, match="num_clients=6 exceeds the number of samples"):
        partition_labels(SPECS[key], labels, num_clients=6, seed=0, groups=np.arange(5))


@pytest.mark.parametrize("key", PARTITIONERS.keys())
def test_partition_arrays_are_read_only(key, balanced_labels):
    part = run(key, balanced_labels, NUM_CLIENTS, seed=0)
    with pytest.raises(ValueError):
        part.indices[0][0] = 5


@pytest.mark.parametrize(
    ("labels", "num_clients", "message"),
    [
        (np.array([0.0, 1.0, 2.0]), 2, "labels must be integers"),
        (np.array([[0, 1], [1, 0]]), 2, "labels must be a 1-D array"),
        (np.array([0, -1, 2]), 2, "labels must be non-negative, got -1"),
        (np.array([0, 1, 2]), 0, "num_clients must be >= 1, got 0"),
        (np.array([0, 1, 2]), 1.5, "num_clients must be an integer"),
        (np.array([], dtype=np.int64), 1, "num_clients=1 exceeds"),
    ],
)
def test_bad_inputs_are_refused(labels, num_clients, message):
    with pytest.raises(ValueError, match=message):
        partition_labels({"name": "iid"}, labels, num_clients=num_clients, seed=0)


def test_rng_must_be_a_generator():
    part = PARTITIONERS.build({"name": "iid"})
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        part.split(np.arange(4), num_clients=2, rng=np.random.RandomState(0))


def test_groups_shape_must_match_labels():
    with pytest.raises(ValueError, match="groups must have the same shape"):
        partition_labels({"name": "natural_id"}, np.arange(4), num_clients=2, seed=0,
                         groups=np.array([0, 1]))


def test_unknown_key_lists_known_keys():
    with pytest.raises(ValueError, match="unknown partitioner 'zipf'") as info:
        PARTITIONERS.build({"name": "zipf"})
    for key in PARTITIONERS.keys():
        assert key in str(info.value)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_non_positive_alpha_refused_by_pydantic(alpha):
    with pytest.raises(ValidationError, match="alpha"):
        PARTITIONERS.build({"name": "dirichlet", "alpha": alpha})


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "dirichlet", "min_size": -1}, "min_size"),
        ({"name": "dirichlet", "max_tries": 0}, "max_tries"),
        ({"name": "shards", "shards_per_client": 0}, "shards_per_client"),
        ({"name": "labels_per_client", "labels_per_client": 0}, "labels_per_client"),
        ({"name": "quantity", "sigma": 0}, "sigma"),
        ({"name": "feature_skew", "kind": "blur"}, "kind"),
        ({"name": "feature_skew", "max_noise_std": -0.1}, "max_noise_std"),
        ({"name": "iid", "alpha": 1.0}, "alpha"),  # extra fields are refused
    ],
)
def test_bad_hyperparameters_name_the_field(spec, field):
    with pytest.raises(ValidationError, match=field):
        PARTITIONERS.build(spec)


def test_plugins_are_frozen_and_report_params():
    p = PARTITIONERS.build({"name": "dirichlet", "alpha": 0.3})
    assert isinstance(p, Partitioner)
    assert p.params() == {"alpha": 0.3, "min_size": 10, "max_tries": 1000}
    with pytest.raises(ValidationError):
        p.alpha = 1.0
    assert PARTITIONERS.build(p) is p


def test_partition_labels_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        partition_labels({"name": "iid"}, np.arange(4), num_clients=2, seed=-1)


def test_partition_checks_its_fields():
    with pytest.raises(ValueError, match="client_meta has 1 entries but there are 2 clients"):
        Partition((np.array([0]), np.array([1])), ({},))
    with pytest.raises(ValueError, match="client 0: indices must be a 1-D integer array"):
        Partition((np.array([0.5]),))
    part = Partition((np.array([3, 1]), np.array([], dtype=np.int64)))
    np.testing.assert_array_equal(part.indices[0], [1, 3])
    assert part.client_meta == ({}, {})
    np.testing.assert_array_equal(part.sizes(), [2, 0])
