"""Label skew by a per-class Dirichlet draw over clients."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedops.partition.base import PARTITIONERS, Partition, Partitioner


def dirichlet_assignment(
    labels: np.ndarray,
    *,
    num_clients: int,
    alpha: float,
    min_size: int,
    max_tries: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``assignment[i] = client of sample i`` under Dirichlet(alpha) label skew.

    For each class ``c`` (in increasing order) the class's indices are shuffled and cut among the
    clients in proportions ``p_c ~ Dir(alpha * 1_K)``, so each client's label distribution is
    skewed and smaller ``alpha`` means stronger skew (Hsu, Qi & Brown, 2019, "Measuring the
    Effects of Non-Identical Data Distribution for Federated Visual Classification",
    arXiv:1909.06335).  As in FedLab's ``hetero_dir_partition`` (and NIID-Bench, Li et al., 2021),
    clients that already hold ``>= N / K`` samples get no share of later classes, and the whole
    draw is repeated (from the same ``rng`` stream) until every client holds ``>= min_size``
    samples, at most ``max_tries`` times.
    """
    n = labels.size
    if min_size * num_clients > n:
        raise ValueError(
            f"dirichlet: min_size={min_size} is impossible with {num_clients} clients and only "
            f"{n} samples (needs min_size * num_clients <= {n})"
        )
    order = np.argsort(labels, kind="stable")
    class_sizes = np.bincount(labels)
    class_sizes = class_sizes[class_sizes > 0]
    class_members = np.split(order, np.cumsum(class_sizes)[:-1])
    cap = n / num_clients
    concentration = np.full(num_clients, alpha, dtype=np.float64)
    clients = np.arange(num_clients, dtype=np.int64)
    assignment = np.empty(n, dtype=np.int64)

    for _ in range(max_tries):
        sizes = np.zeros(num_clients, dtype=np.int64)
        ok = True
        for members in class_members:
            shuffled = rng.permutation(members)
            proportions = rng.dirichlet(concentration) * (sizes < cap)
            total = proportions.sum()
            if not np.isfinite(total) or total <= 0:  # every eligible share underflowed to 0
                ok = False
                break
            cuts = np.floor(np.cumsum(proportions / total) * members.size).astype(np.int64)
            cuts[-1] = members.size
            counts = np.diff(cuts, prepend=0)
            assignment[shuffled] = np.repeat(clients, counts)
            sizes += counts
        if ok and sizes.min() >= min_size:
            return assignment
    raise ValueError(
        f"dirichlet: no partition with every client >= min_size={min_size} samples found in "
        f"max_tries={max_tries} draws with alpha={alpha} and {num_clients} clients; raise alpha, "
        f"lower min_size or use fewer clients"
    )


@PARTITIONERS.register("dirichlet")
class DirichletPartitioner(Partitioner):
    """Dirichlet(alpha) label skew (Hsu et al., 2019; FedLab ``hetero_dir_partition``).

    See :func:`dirichlet_assignment`.  ``alpha -> inf`` approaches IID; ``alpha -> 0`` approaches
    one class per client.
    """

    name: Literal["dirichlet"] = "dirichlet"
    alpha: float = Field(0.5, gt=0, allow_inf_nan=False)
    min_size: int = Field(10, ge=0)
    max_tries: int = Field(1000, ge=1)

    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        assignment = dirichlet_assignment(
            labels,
            num_clients=num_clients,
            alpha=self.alpha,
            min_size=self.min_size,
            max_tries=self.max_tries,
            rng=rng,
        )
        return Partition.from_assignment(assignment, num_clients)
