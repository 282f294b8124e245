"""FairFed as an aggregation rule: FedAvg's weighted mean with FairFed's weights.

The weights themselves (:mod:`fedops.fairness.fairfed`) are state across rounds, updated every
round from the clients' group counts on the global model before the updates are uploaded; under
secure aggregation each client weights its own update and the counts travel through a secure
sum, so the server still sees only sums. ``beta = 0`` is FedAvg bit for bit.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fedops.aggregate.base import AGGREGATORS, Aggregator
from fedops.aggregate.fedavg import weighted_mean


@AGGREGATORS.register("fairfed")
class FairFed(Aggregator):
    """FairFed (Ezzeldin et al., AAAI 2023). ``beta``: the fairness budget (step size of the
    weight update); ``metric``: the group metric the weights chase, ``eod`` (equal opportunity
    difference) or ``spd`` (statistical parity difference). Needs a binary sensitive attribute
    and a binary label."""

    name: Literal["fairfed"] = "fairfed"
    beta: float = Field(1.0, ge=0, allow_inf_nan=False)
    metric: Literal["eod", "spd"] = "eod"

    needs_group_counts: ClassVar[bool] = True

    def aggregate(self, updates, *, weights):
        """``weights`` are this round's FairFed weights (the server step puts them in)."""
        return weighted_mean(updates, weights), {}
