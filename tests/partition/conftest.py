"""Shared fixtures for the partitioner tests."""

from __future__ import annotations

import numpy as np
import pytest

NUM_CLASSES = 10


@pytest.fixture
def balanced_labels() -> np.ndarray:
    """1,000 labels, 100 per class, in a shuffled order (fixed seed)."""
    return np.random.default_rng(12345).permutation(np.repeat(np.arange(NUM_CLASSES), 100))


def assert_exact_cover(partition, n: int) -> None:
    """Every index in ``range(n)`` appears in exactly one client, each array sorted int64.

    Plain function (used by the hypothesis tests); the ``exact_cover`` fixture returns it.
    """
    for idx in partition.indices:
        assert idx.dtype == np.int64 and idx.ndim == 1
        assert np.all(np.diff(idx) > 0), "indices must be sorted and unique within a client"
    flat = np.concatenate(partition.indices)
    assert flat.size == n
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))
    assert partition.sizes().sum() == n


@pytest.fixture
def exact_cover():
    return assert_exact_cover
