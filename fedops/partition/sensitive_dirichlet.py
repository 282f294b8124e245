"""Skew of the sensitive attribute by a per-group Dirichlet draw over clients (FairFed's
heterogeneity)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from fedops.partition.base import PARTITIONERS, Partition, Partitioner
from fedops.partition.dirichlet import dirichlet_assignment


@PARTITIONERS.register("sensitive_dirichlet")
class SensitiveDirichletPartitioner(Partitioner):
    """Each group of the sensitive attribute is cut among the clients in proportions
    ``p_a ~ Dir(alpha * 1_K)`` (Ezzeldin et al., "FairFed: Enabling Group Fairness in Federated
    Learning", AAAI 2023, Sec. 5: heterogeneity over the sensitive attribute). The same draw as
    :func:`~fedops.partition.dirichlet.dirichlet_assignment`, with the group index in place of the
    label: small ``alpha`` gives clients dominated by one group, large ``alpha`` (e.g. 5000) the
    population's mix. ``groups`` is the data set's sensitive attribute (``data.sensitive``)."""

    name: Literal["sensitive_dirichlet"] = "sensitive_dirichlet"
    alpha: float = Field(0.5, gt=0, allow_inf_nan=False)
    min_size: int = Field(10, ge=0)
    max_tries: int = Field(1000, ge=1)

    uses_sensitive: ClassVar[bool] = True

    def _split(self, labels: np.ndarray, *, num_clients: int, rng: np.random.Generator,
               groups: np.ndarray | None) -> Partition:
        if groups is None:
            raise ValueError("sensitive_dirichlet needs the sensitive attribute's group of every sample "
                             "(a data set with data.sensitive)")
        try:
            _, codes = np.unique(groups, return_inverse=True)
        except TypeError as exc:
            raise ValueError(f"sensitive_dirichlet: group values must be mutually comparable ({exc})") from None
        assignment = dirichlet_assignment(codes.reshape(-1).astype(np.int64), num_clients=num_clients,
                                          alpha=self.alpha, min_size=self.min_size, max_tries=self.max_tries, rng=rng)
        return Partition.from_assignment(assignment, num_clients)
