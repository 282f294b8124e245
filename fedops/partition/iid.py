"""IID baseline: a uniformly random split into near-equal client sizes."""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedops.partition.base import PARTITIONERS, Partition, Partitioner, iid_assignment


@PARTITIONERS.register("iid")
class IIDPartitioner(Partitioner):
    """Shuffle the sample indices and cut them into ``num_clients`` parts whose sizes differ by
    at most one (the IID setting of McMahan et al., 2017, "Communication-Efficient Learning of
    Deep Networks from Decentralized Data")."""

    name: Literal["iid"] = "iid"

    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        return Partition.from_assignment(iid_assignment(labels.size, num_clients, rng), num_clients)
