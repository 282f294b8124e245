"""Behaviour of the label- and quantity-skew partitioners, with hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from fedops.partition import PARTITIONERS, partition_labels
from fedops.partition.labels_per_client import client_class_sets
from fedops.partition.quantity import lognormal_sizes


def _distributions(part, labels, num_classes=10):
    counts = part.label_counts(labels, num_classes)
    return counts / counts.sum(axis=1, keepdims=True)


# --- iid ------------------------------------------------------------------------------------


def test_iid_hand_case_ten_labels_two_clients():
    labels = np.arange(10) % 3
    part = partition_labels({"name": "iid"}, labels, num_clients=2, seed=0)
    np.testing.assert_array_equal(part.sizes(), [5, 5])
    assert sorted(np.concatenate(part.indices).tolist()) == list(range(10))
    assert part.client_meta == ({}, {})


def test_iid_uneven_sizes_differ_by_one():
    part = partition_labels({"name": "iid"}, np.zeros(11, dtype=int), num_clients=3, seed=0)
    np.testing.assert_array_equal(part.sizes(), [4, 4, 3])


# --- dirichlet ------------------------------------------------------------------------------


@pytest.fixture
def labels_10k():
    return np.random.default_rng(0).integers(0, 10, 10_000)


def test_dirichlet_large_alpha_is_close_to_iid(labels_10k):
    part = partition_labels({"name": "dirichlet", "alpha": 1e4}, labels_10k, num_clients=10, seed=1)
    global_dist = np.bincount(labels_10k, minlength=10) / labels_10k.size
    tv = 0.5 * np.abs(_distributions(part, labels_10k) - global_dist).sum(axis=1)
    assert tv.mean() < 0.1


def test_dirichlet_small_alpha_is_close_to_one_class_per_client(labels_10k):
    part = partition_labels({"name": "dirichlet", "alpha": 1e-3}, labels_10k, num_clients=10, seed=1)
    assert _distributions(part, labels_10k).max(axis=1).mean() > 0.9


def test_dirichlet_skew_grows_as_alpha_shrinks(labels_10k):
    global_dist = np.bincount(labels_10k, minlength=10) / labels_10k.size

    def mean_tv(alpha):
        part = partition_labels(
            {"name": "dirichlet", "alpha": alpha}, labels_10k, num_clients=10, seed=2
        )
        return (0.5 * np.abs(_distributions(part, labels_10k) - global_dist).sum(axis=1)).mean()

    assert mean_tv(0.1) > mean_tv(1.0) > mean_tv(100.0)


@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_balancing_caps_client_size(seed):
    """FedLab's balancing: a client at >= N/K samples gets no later class, so no client exceeds
    N/K plus one class (without it, alpha=0.05 often stacks whole classes on one client)."""
    labels = np.random.default_rng(0).integers(0, 10, 2_000)
    spec = {"name": "dirichlet", "alpha": 0.05, "min_size": 0}
    part = partition_labels(spec, labels, num_clients=20, seed=seed)
    assert part.sizes().max() < labels.size / 20 + np.bincount(labels).max()


def test_dirichlet_min_size_above_n_over_k_is_refused_at_once():
    with pytest.raises(ValueError, match="min_size=30 is impossible with 10 clients"):
        partition_labels(
            {"name": "dirichlet", "min_size": 30}, np.zeros(200, dtype=int), num_clients=10, seed=0
        )


def test_dirichlet_unreachable_min_size_exhausts_tries_and_names_alpha():
    labels = np.repeat(np.arange(10), 100)
    spec = {"name": "dirichlet", "alpha": 1e-3, "min_size": 100, "max_tries": 20}
    with pytest.raises(ValueError, match=r"min_size=100 .*max_tries=20 .*alpha=0.001"):
        partition_labels(spec, labels, num_clients=10, seed=0)


def test_dirichlet_resampling_reaches_min_size():
    labels = np.random.default_rng(3).integers(0, 5, 400)
    part = partition_labels(
        {"name": "dirichlet", "alpha": 0.1, "min_size": 15}, labels, num_clients=8, seed=3
    )
    assert part.sizes().min() >= 15


# --- shards ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shards_per_client", [1, 2, 5])
def test_shards_give_at_most_shards_per_client_classes(shards_per_client):
    # 10 classes x 100 samples, 10 clients: shard size 100 / shards_per_client divides each class.
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 100))
    spec = {"name": "shards", "shards_per_client": shards_per_client}
    part = partition_labels(spec, labels, num_clients=10, seed=0)
    np.testing.assert_array_equal(part.sizes(), np.full(10, 100))
    for idx in part.indices:
        assert np.unique(labels[idx]).size <= shards_per_client


def test_shards_hand_case():
    labels = np.array([1, 1, 0, 0, 2, 2])  # sorted order [2, 3, 0, 1, 4, 5], shards of 2
    part = partition_labels({"name": "shards", "shards_per_client": 1}, labels, num_clients=3, seed=0)
    assert sorted(tuple(idx.tolist()) for idx in part.indices) == [(0, 1), (2, 3), (4, 5)]


def test_shards_more_shards_than_samples_refused():
    with pytest.raises(ValueError, match="6 shards exceeds the 5 samples"):
        partition_labels({"name": "shards", "shards_per_client": 2}, np.arange(5), num_clients=3,
                         seed=0)


# --- labels_per_client ----------------------------------------------------------------------


@pytest.mark.parametrize(("num_clients", "k"), [(10, 1), (10, 2), (7, 3), (4, 3), (13, 10), (25, 4)])
def test_labels_per_client_exactly_k_classes(num_clients, k):
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(10), 60))
    spec = {"name": "labels_per_client", "labels_per_client": k}
    part = partition_labels(spec, labels, num_clients=num_clients, seed=5)
    for idx in part.indices:
        assert np.unique(labels[idx]).size == k
    # each class is split evenly (sizes differ by <= 1) among the clients that hold it
    counts = part.label_counts(labels, 10)
    for c in range(10):
        held = counts[:, c][counts[:, c] > 0]
        assert held.size >= 1 and held.max() - held.min() <= 1
    # and each class is held by floor or ceil of num_clients * k / 10 clients
    holders = (counts > 0).sum(axis=0)
    assert holders.min() >= (num_clients * k) // 10
    assert holders.max() <= -(-(num_clients * k) // 10)


def test_client_class_sets_are_distinct_and_random():
    rng = np.random.default_rng(0)
    sets = [client_class_sets(5, num_clients=50, labels_per_client=4, rng=rng) for _ in range(3)]
    for s in sets:
        assert s.shape == (50, 4)
        assert all(len(set(row)) == 4 for row in s.tolist())
        np.testing.assert_array_equal(np.bincount(s.ravel(), minlength=5), np.full(5, 40))
    assert not np.array_equal(sets[0], sets[1])


def test_labels_per_client_more_than_classes_refused():
    with pytest.raises(ValueError, match="labels_per_client=4 exceeds the number of classes present \\(3\\)"):
        partition_labels({"name": "labels_per_client", "labels_per_client": 4},
                         np.arange(30) % 3, num_clients=2, seed=0)


def test_labels_per_client_that_cannot_cover_all_classes_refused():
    with pytest.raises(ValueError, match="covers at most 2 of the 10 classes"):
        partition_labels({"name": "labels_per_client", "labels_per_client": 1},
                         np.arange(100) % 10, num_clients=2, seed=0)


def test_labels_per_client_class_smaller_than_its_holders_refused():
    labels = np.array([0] * 50 + [1])  # class 1 has one sample but 4 clients hold it
    with pytest.raises(ValueError, match="class 1 has 1 samples but is held by 4 clients"):
        partition_labels({"name": "labels_per_client", "labels_per_client": 2}, labels,
                         num_clients=4, seed=0)


# --- quantity -------------------------------------------------------------------------------


def test_lognormal_sizes_sum_and_minimum():
    rng = np.random.default_rng(0)
    sizes = lognormal_sizes(1000, num_clients=50, sigma=2.0, min_size=7, rng=rng)
    assert sizes.sum() == 1000 and sizes.min() >= 7


def test_quantity_sigma_controls_size_spread_but_labels_stay_iid():
    labels = np.random.default_rng(0).integers(0, 10, 20_000)

    def cv(sigma):
        part = partition_labels({"name": "quantity", "sigma": sigma}, labels, num_clients=20, seed=0)
        sizes = part.sizes()
        return sizes.std() / sizes.mean(), part

    low, _ = cv(0.05)
    high, part = cv(1.5)
    assert low < 0.1 < 0.5 < high
    big = part.sizes() >= 500
    global_dist = np.bincount(labels, minlength=10) / labels.size
    tv = 0.5 * np.abs(_distributions(part, labels)[big] - global_dist).sum(axis=1)
    assert tv.max() < 0.1


def test_quantity_impossible_min_size_refused():
    with pytest.raises(ValueError, match="min_size=3 is impossible"):
        partition_labels({"name": "quantity", "min_size": 3}, np.zeros(10, dtype=int),
                         num_clients=4, seed=0)


# --- natural_id -----------------------------------------------------------------------------


def test_natural_id_hand_case():
    labels = np.array([0, 1, 0, 1, 1])
    groups = np.array(["b", "a", "b", "c", "a"])
    part = partition_labels({"name": "natural_id"}, labels, num_clients=3, seed=0, groups=groups)
    assert [idx.tolist() for idx in part.indices] == [[1, 4], [0, 2], [3]]
    assert part.client_meta == ({"group": "a"}, {"group": "b"}, {"group": "c"})


def test_natural_id_integer_groups_sorted_numerically():
    groups = np.array([10, 2, 10, 2, 33])
    part = partition_labels({"name": "natural_id"}, np.zeros(5, dtype=int), num_clients=3, seed=0,
                            groups=groups)
    assert [idx.tolist() for idx in part.indices] == [[1, 3], [0, 2], [4]]
    assert [m["group"] for m in part.client_meta] == ["2", "10", "33"]


def test_natural_id_needs_groups():
    with pytest.raises(ValueError, match="natural_id needs a groups array"):
        partition_labels({"name": "natural_id"}, np.zeros(5, dtype=int), num_clients=2, seed=0)


def test_natural_id_client_count_must_match_groups():
    with pytest.raises(ValueError, match="num_clients=2 but groups has 3 distinct values"):
        partition_labels({"name": "natural_id"}, np.zeros(5, dtype=int), num_clients=2, seed=0,
                         groups=np.array([0, 1, 2, 0, 1]))


def test_registry_holds_all_partitioners():
    assert PARTITIONERS.keys() == sorted(
        ["dirichlet", "feature_skew", "iid", "labels_per_client", "natural_id", "quantity", "sensitive_dirichlet",
         "shards"]
    )
