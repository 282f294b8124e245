"""Server optimisers applied to the aggregated update Delta (Reddi et al. 2021, Alg. 2).

fedavg:  x <- x + lr * Delta                       (lr = 1 is plain FedAvg)
fedavgm: v <- beta v + Delta;  x <- x + lr * v      (Hsu et al. 2019)
fedadam: m <- b1 m + (1-b1) Delta;  v <- b2 v + (1-b2) Delta^2;  x <- x + lr m / (sqrt(v) + tau)
"""

from __future__ import annotations

from typing import Literal

from fedops.lazy import torch  # torch on first use: configs load without it
from pydantic import Field

from fedops.aggregate.base import SERVER_OPTIMIZERS, ServerOptimizer


@SERVER_OPTIMIZERS.register("fedavg")
class FedAvgServer(ServerOptimizer):
    name: Literal["fedavg"] = "fedavg"
    lr: float = Field(1.0, gt=0)

    def step(self, params, update, state):
        return params + self.lr * update


@SERVER_OPTIMIZERS.register("fedavgm")
class FedAvgM(ServerOptimizer):
    name: Literal["fedavgm"] = "fedavgm"
    lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)

    def init_state(self, params):
        return {"velocity": torch.zeros_like(params)}

    def step(self, params, update, state):
        v = state["velocity"].mul_(self.momentum).add_(update)
        return params + self.lr * v


@SERVER_OPTIMIZERS.register("fedadam")
class FedAdam(ServerOptimizer):
    name: Literal["fedadam"] = "fedadam"
    lr: float = Field(0.01, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)

    def init_state(self, params):
        return {"m": torch.zeros_like(params), "v": torch.zeros_like(params)}

    def step(self, params, update, state):
        m = state["m"].mul_(self.beta1).add_(update, alpha=1 - self.beta1)
        v = state["v"].mul_(self.beta2).addcmul_(update, update, value=1 - self.beta2)
        return params + self.lr * m / (v.sqrt() + self.tau)
