"""Non-IID partitioners: pure functions from labels (and an explicit RNG) to index arrays.

Each partitioner module registers itself in :data:`PARTITIONERS` under its file name.
"""

from __future__ import annotations

import numpy as np

from fedops.partition import (  # noqa: F401  (imported so that each registers itself)
    dirichlet,
    feature_skew,
    iid,
    labels_per_client,
    natural_id,
    quantity,
    sensitive_dirichlet,
    shards,
)
from fedops.partition.base import PARTITIONERS, Partition, Partitioner
from fedops.partition.feature_skew import apply_feature_transform
from fedops.partition.manifest import (
    build_manifest,
    label_heatmap_figure,
    load_manifest,
    plot_label_heatmap,
    save_manifest,
)

__all__ = [
    "PARTITIONERS",
    "Partition",
    "Partitioner",
    "apply_feature_transform",
    "build_manifest",
    "load_manifest",
    "partition_labels",
    "label_heatmap_figure",
    "plot_label_heatmap",
    "save_manifest",
]


def partition_labels(
    spec: dict | Partitioner,
    labels: np.ndarray,
    *,
    num_clients: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> Partition:
    """Build the partitioner named by ``spec`` (``{"name": key, **params}`` or an instance) and
    split ``labels`` with ``numpy.random.default_rng(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    partitioner = PARTITIONERS.build(spec)
    return partitioner.split(
        labels, num_clients=num_clients, rng=np.random.default_rng(int(seed)), groups=groups
    )
