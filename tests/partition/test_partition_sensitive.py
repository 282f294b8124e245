"""Partitions that make fairness hard: Dirichlet skew of the sensitive attribute, natural id by a
column, and each client's held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from fedops.partition import partition_labels
from fedops.partition.holdout import holdout_split


def _groups(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, n), (rng.random(n) < 0.33).astype(np.int64)


def test_sensitive_dirichlet_skews_groups_not_labels(exact_cover):
    labels, groups = _groups()
    spread = {}
    for alpha in (0.1, 5000.0):
        part = partition_labels({"name": "sensitive_dirichlet", "alpha": alpha, "min_size": 20}, labels,
                                num_clients=5, seed=1, groups=groups)
        exact_cover(part, labels.size)
        shares = np.array([groups[ix].mean() for ix in part.indices])
        spread[alpha] = shares.max() - shares.min()
    assert spread[0.1] > 0.5  # some clients dominated by one group
    assert spread[5000.0] < 0.05  # the population's mix everywhere


def test_sensitive_dirichlet_needs_groups():
    labels, _ = _groups(100)
    with pytest.raises(ValueError, match="sensitive attribute"):
        partition_labels({"name": "sensitive_dirichlet"}, labels, num_clients=2, seed=0)


def test_natural_id_by_column():
    labels = np.array([0, 1, 0, 1, 1, 0])
    edu = np.array(["PhD", "BSc", "BSc", "PhD", "MSc", "BSc"])
    part = partition_labels({"name": "natural_id", "column": "education"}, labels, num_clients=3, seed=0, groups=edu)
    assert [m["group"] for m in part.client_meta] == ["BSc", "MSc", "PhD"]
    assert [ix.tolist() for ix in part.indices] == [[1, 2, 5], [4], [0, 3]]


def test_holdout_split_is_disjoint_seeded_and_per_client():
    indices = [np.arange(0, 100), np.arange(100, 103), np.arange(103, 104)]
    train, held = holdout_split(indices, fraction=0.2, seed=7)
    assert [len(h) for h in held] == [20, 1, 0] and [len(t) for t in train] == [80, 2, 1]
    for t, h, ix in zip(train, held, indices):
        assert not set(t) & set(h) and sorted([*t, *h]) == ix.tolist()
    again, held2 = holdout_split(indices, fraction=0.2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(held, held2))
    _, other = holdout_split(indices, fraction=0.2, seed=8)
    assert not np.array_equal(other[0], held[0])
    # a client's split depends on its own rows only
    _, alone = holdout_split(indices[:1], fraction=0.2, seed=7)
    assert np.array_equal(alone[0], held[0])
