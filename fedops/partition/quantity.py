"""Quantity skew: log-normal client sizes, IID labels."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedops.partition.base import PARTITIONERS, Partition, Partitioner


def lognormal_sizes(
    n: int, *, num_clients: int, sigma: float, min_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Client sizes summing to ``n``: ``min_size`` each plus the rest in proportion to
    ``w_i ~ LogNormal(0, sigma)`` (largest-remainder rounding), as FedLab's unbalanced split
    (``balance=False, unbalance_sgm=sigma``) draws them."""
    if min_size * num_clients > n:
        raise ValueError(
            f"quantity: min_size={min_size} is impossible with {num_clients} clients and only "
            f"{n} samples"
        )
    spare = n - min_size * num_clients
    weights = rng.lognormal(mean=0.0, sigma=sigma, size=num_clients)
    exact = weights / weights.sum() * spare
    extra = np.floor(exact).astype(np.int64)
    leftover = spare - int(extra.sum())
    if leftover:
        extra[np.argsort(extra - exact, kind="stable")[:leftover]] += 1  # largest remainders
    return extra + min_size


@PARTITIONERS.register("quantity")
class QuantityPartitioner(Partitioner):
    """Quantity skew: client sizes from :func:`lognormal_sizes` (larger ``sigma`` = more
    unequal), samples assigned uniformly at random, so label distributions stay IID (the
    "quantity skew" setting of Li et al., 2021, "Federated Learning on Non-IID Data Silos: An
    Experimental Study", with FedLab's log-normal sizes)."""

    name: Literal["quantity"] = "quantity"
    sigma: float = Field(1.0, gt=0, allow_inf_nan=False)
    min_size: int = Field(1, ge=0)

    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        sizes = lognormal_sizes(
            labels.size, num_clients=num_clients, sigma=self.sigma, min_size=self.min_size, rng=rng
        )
        assignment = np.empty(labels.size, dtype=np.int64)
        assignment[rng.permutation(labels.size)] = np.repeat(np.arange(num_clients), sizes)
        return Partition.from_assignment(assignment, num_clients)
