"""FedAvg aggregation: the sample-weighted mean of client updates (McMahan et al. 2017, Alg. 1)."""

from __future__ import annotations

from typing import Literal

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.aggregate.base import AGGREGATORS, Aggregator, check_stack


BLOCK = 16384
"""Columns per block of the float64 arithmetic over a ``[k, d]`` stack: a block's float64 copy
stays in cache instead of a whole float64 copy of the stack (5-10x faster for d ~ 10^5)."""


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i u_i / sum_i w_i, accumulated in float64 so client order does not matter."""
    check_stack(updates, weights)
    w = weights.to(device=updates.device, dtype=torch.float64)
    total = w.sum()
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    for lo in range(0, updates.shape[1], BLOCK):
        out[lo:lo + BLOCK] = (w @ updates[:, lo:lo + BLOCK].to(torch.float64) / total).to(updates.dtype)
    return out


@AGGREGATORS.register("fedavg")
class FedAvg(Aggregator):
    name: Literal["fedavg"] = "fedavg"
    weighted: bool = True

    def aggregate(self, updates, *, weights):
        w = weights if self.weighted else torch.ones_like(weights)
        return weighted_mean(updates, w), {}
