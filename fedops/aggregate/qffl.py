"""q-FFL's aggregation, q-FedAvg (Li, Sanjabi, Beirami & Smith, "Fair Resource Allocation in
Federated Learning", ICLR 2020, Alg. 2).

With ``F_k`` client k's loss on its training data at the global model ``w`` (before local
training), ``w_bar_k`` its locally trained model, ``L = 1 / lr`` (the local learning rate's
Lipschitz estimate):

    Delta_k = F_k^q * L (w - w_bar_k)
    h_k     = q F_k^(q-1) ||L (w - w_bar_k)||^2 + L F_k^q
    w      <- w - sum_k Delta_k / sum_k h_k

Larger ``q`` gives clients with a high loss more say; ``q = 0`` is FedAvg. Here the update
``u_k = w_bar_k - w`` is what travels, so the new model is ``w + sum_k a_k u_k / sum_k h'_k`` with
``a_k = p_k F_k^q`` and ``h'_k = p_k (q F_k^(q-1) L ||u_k||^2 + F_k^q)`` (both divided by ``L``;
``p_k`` is the client's sample count with ``weighted``, else 1). It is computed as FedAvg's weighted
mean with weights ``a_k`` times ``sum_k a_k / sum_k h'_k``, a factor that is exactly 1 at ``q = 0``:
q = 0 gives FedAvg bit for bit (``weighted`` as FedAvg's). ``F_k`` is offset by 1e-10 as in the
authors' code, so a zero loss stays usable.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fedops.aggregate.base import AGGREGATORS, Aggregator, check_stack
from fedops.aggregate.fedavg import weighted_mean
from fedops.lazy import torch  # torch on first use: configs load without it

EPS = 1e-10


def qffl_aggregate(updates: torch.Tensor, *, losses: torch.Tensor, weights: torch.Tensor, q: float,
                   lr: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The q-FedAvg update ``sum_k Delta_k / sum_k h_k`` (as a delta to add to ``w``) from the stacked
    updates ``[k, d]``, the losses ``F_k`` and the sample weights ``p_k``."""
    check_stack(updates, weights)
    if q < 0:
        raise ValueError(f"q-FFL needs q >= 0, got {q}")
    if lr <= 0:
        raise ValueError(f"q-FFL needs the local learning rate > 0, got {lr}")
    f = losses.to(torch.float64).reshape(-1)
    if f.shape[0] != updates.shape[0] or not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
        raise ValueError(f"q-FFL needs one finite non-negative loss per update, got {f.tolist()}")
    p = weights.to(torch.float64)
    f = f + EPS
    fq = torch.pow(f, q)
    a = p * fq
    h = p * fq
    if q != 0:
        sq = (updates.to(torch.float64) ** 2).sum(dim=1)
        h = h + p * q * torch.pow(f, q - 1) * (1.0 / lr) * sq
    factor = float(a.sum() / h.sum())
    mean = weighted_mean(updates, a if q != 0 else weights)
    out = mean if factor == 1.0 else (mean.to(torch.float64) * factor).to(updates.dtype)
    return out, {"qffl_step_factor": factor, "qffl_loss_max": float(f.max()), "qffl_loss_mean": float(f.mean())}


@AGGREGATORS.register("qffl")
class QFFL(Aggregator):
    """q-FedAvg (see the module docstring). ``q = 0`` equals ``fedavg`` (same ``weighted``)."""

    name: Literal["qffl"] = "qffl"
    q: float = Field(1.0, ge=0, allow_inf_nan=False)
    weighted: bool = True
    lipschitz: float | None = Field(None, gt=0, allow_inf_nan=False)
    """``L``, Alg. 2's Lipschitz estimate (an input of the algorithm); ``None`` = ``1 / client.lr``."""

    needs_losses: ClassVar[bool] = True

    def aggregate(self, updates, *, weights, losses=None, lr=None):
        if losses is None or lr is None:
            raise ValueError("q-FFL needs each client's loss before training and the local learning rate")
        w = weights if self.weighted else torch.ones_like(weights)
        step = lr if self.lipschitz is None else 1.0 / self.lipschitz
        return qffl_aggregate(updates, losses=losses, weights=w, q=self.q, lr=step)
