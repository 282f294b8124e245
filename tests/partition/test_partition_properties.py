"""Hypothesis property tests: iid and dirichlet cover every index exactly once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.partition import partition_labels

label_arrays = st.lists(st.integers(0, 9), min_size=1, max_size=300).map(np.array)


def _assert_cover(part, n):
    flat = np.concatenate(part.indices)
    assert flat.size == n
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))
    for idx in part.indices:
        assert np.all(np.diff(idx) > 0)


@settings(max_examples=60, deadline=None)
@given(labels=label_arrays, data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_iid_exact_cover_and_near_equal(labels, data, seed):
    k = data.draw(st.integers(1, labels.size), label="num_clients")
    part = partition_labels({"name": "iid"}, labels, num_clients=k, seed=seed)
    _assert_cover(part, labels.size)
    sizes = part.sizes()
    assert sizes.max() - sizes.min() <= 1


@settings(max_examples=60, deadline=None)
@given(
    labels=label_arrays,
    data=st.data(),
    alpha=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_exact_cover_without_min_size(labels, data, alpha, seed):
    k = data.draw(st.integers(1, labels.size), label="num_clients")
    spec = {"name": "dirichlet", "alpha": alpha, "min_size": 0}
    part = partition_labels(spec, labels, num_clients=k, seed=seed)
    assert part.num_clients == k
    _assert_cover(part, labels.size)


@settings(max_examples=60, deadline=None)
@given(
    labels=label_arrays,
    data=st.data(),
    alpha=st.floats(1e-2, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_min_size_holds_or_is_refused_by_name(labels, data, alpha, seed):
    k = data.draw(st.integers(1, max(1, labels.size // 5)), label="num_clients")
    min_size = data.draw(st.integers(1, labels.size // k), label="min_size")
    spec = {"name": "dirichlet", "alpha": alpha, "min_size": min_size, "max_tries": 200}
    try:
        part = partition_labels(spec, labels, num_clients=k, seed=seed)
    except ValueError as exc:  # the only allowed failure: no draw met min_size
        assert f"min_size={min_size}" in str(exc) and "alpha=" in str(exc)
        return
    _assert_cover(part, labels.size)
    assert part.sizes().min() >= min_size


@settings(max_examples=30, deadline=None)
@given(
    num_clients=st.integers(1, 40),
    per_client=st.integers(30, 60),
    alpha=st.floats(0.5, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_min_size_reached_with_ample_data(num_clients, per_client, alpha, seed):
    labels = np.random.default_rng(seed).integers(0, 10, num_clients * per_client)
    spec = {"name": "dirichlet", "alpha": alpha, "min_size": 5}
    part = partition_labels(spec, labels, num_clients=num_clients, seed=seed)
    _assert_cover(part, labels.size)
    assert part.sizes().min() >= 5


@pytest.mark.parametrize("key", ["iid", "dirichlet"])
def test_large_problem_is_fast(key):
    """60,000 labels over 1,000 clients: well under a second (vectorised numpy)."""
    import time

    labels = np.random.default_rng(0).integers(0, 10, 60_000)
    spec = {"name": key} if key == "iid" else {"name": key, "alpha": 0.5}
    start = time.perf_counter()
    part = partition_labels(spec, labels, num_clients=1_000, seed=0)
    elapsed = time.perf_counter() - start
    _assert_cover(part, labels.size)
    assert elapsed < 1.0, f"{key} took {elapsed:.2f}s"
