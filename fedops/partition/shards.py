"""Pathological non-IID split by label-sorted shards."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedops.partition.base import PARTITIONERS, Partition, Partitioner, near_equal_sizes


def shard_assignment(
    labels: np.ndarray, *, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> np.ndarray:
    """``assignment[i] = client of sample i`` for the pathological non-IID split of McMahan et al.
    (2017, "Communication-Efficient Learning of Deep Networks from Decentralized Data").

    Samples are sorted by label (stably, so ties keep index order), cut into
    ``num_clients * shards_per_client`` contiguous shards of near-equal size, and each client
    receives ``shards_per_client`` shards chosen uniformly at random without replacement.  A
    client holds at most ``shards_per_client`` classes when every class size is a multiple of the
    shard size; otherwise a shard may straddle a class boundary (as in the paper's MNIST setup).
    """
    n = labels.size
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise ValueError(
            f"shards: num_clients * shards_per_client = {num_shards} shards exceeds the "
            f"{n} samples (a shard would be empty)"
        )
    order = np.argsort(labels, kind="stable")
    shard_of_position = np.repeat(np.arange(num_shards), near_equal_sizes(n, num_shards))
    client_of_shard = np.empty(num_shards, dtype=np.int64)
    client_of_shard[rng.permutation(num_shards)] = np.arange(num_shards) // shards_per_client
    assignment = np.empty(n, dtype=np.int64)
    assignment[order] = client_of_shard[shard_of_position]
    return assignment


@PARTITIONERS.register("shards")
class ShardsPartitioner(Partitioner):
    """McMahan et al. (2017) shards: sort by label, give each client ``shards_per_client`` random
    shards.  See :func:`shard_assignment`."""

    name: Literal["shards"] = "shards"
    shards_per_client: int = Field(2, ge=1)

    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        assignment = shard_assignment(
            labels, num_clients=num_clients, shards_per_client=self.shards_per_client, rng=rng
        )
        return Partition.from_assignment(assignment, num_clients)
