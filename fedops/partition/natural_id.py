"""Natural partition: one client per distinct value of a group/id column."""

from __future__ import annotations

from typing import Literal

import numpy as np

from pydantic import Field

from fedops.partition.base import PARTITIONERS, Partition, Partitioner


@PARTITIONERS.register("natural_id")
class NaturalIdPartitioner(Partitioner):
    """One client per distinct value of ``groups`` (e.g. a hospital, user or writer id in tabular
    data, as LEAF's FEMNIST is split by writer: Caldas et al., 2018, "LEAF: A Benchmark for
    Federated Settings").  Clients are ordered by sorted group value; ``client_meta[i]`` is
    ``{"group": str(value)}``.  Deterministic: ``rng`` is not used.

    ``column`` names a categorical column of a table data set to group by (e.g. Adult's
    ``education``, as q-FFL's experiments group by it); without it the data set's own group ids
    are used.
    """

    name: Literal["natural_id"] = "natural_id"
    column: str | None = Field(None, min_length=1)

    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        if groups is None:
            raise ValueError("natural_id needs a groups array (one group id per sample)")
        try:
            values, assignment = np.unique(groups, return_inverse=True)
        except TypeError as exc:
            raise ValueError(f"natural_id: group values must be mutually comparable ({exc})") from None
        if values.size != num_clients:
            raise ValueError(
                f"natural_id: num_clients={num_clients} but groups has {values.size} distinct "
                f"values; they must be equal"
            )
        meta = tuple({"group": str(v)} for v in values.tolist())
        return Partition.from_assignment(assignment.reshape(-1), num_clients, meta)
