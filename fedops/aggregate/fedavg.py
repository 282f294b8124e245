"""FedAvg aggregation: the sample-weighted mean of client updates (McMahan et al. 2017, Alg. 1)."""

from __future__ import annotations

from typing import Literal

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.aggregate.base import AGGREGATORS, Aggregator, check_stack


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i u_i / sum_i w_i, accumulated in float64 so client order does not matter."""
    check_stack(updates, weights)
    w = weights.to(torch.float64)
    return (w @ updates.to(torch.float64) / w.sum()).to(updates.dtype)


@AGGREGATORS.register("fedavg")
class FedAvg(Aggregator):
    name: Literal["fedavg"] = "fedavg"
    weighted: bool = True

    def aggregate(self, updates, *, weights):
        w = weights if self.weighted else torch.ones_like(weights)
        return weighted_mean(updates, w), {}
