"""A round's coalition utilities by reconstruction, without retraining (as GTG-Shapley and
FedML's contribution scoring do): the model of coalition ``S`` is the global model plus the
sample-weighted mean of the round's updates of ``S``'s members (the empty coalition: the global
model as it was), and ``v(S)`` is what ``score`` says of that parameter vector (e.g. accuracy on the
server's validation set). Pure apart from ``score``.
"""

from __future__ import annotations

from typing import Callable, Mapping

from fedops.aggregate.fedavg import weighted_mean
from fedops.contribution.estimators import Utility
from fedops.lazy import torch  # torch on first use


def reconstruction_utility(*, params: "torch.Tensor", updates: Mapping[int, "torch.Tensor"],
                           weights: Mapping[int, float], score: Callable[["torch.Tensor"], float]) -> Utility:
    """:class:`Utility` over the clients in ``updates`` (ids as given: any integers)."""
    ids = sorted(int(c) for c in updates)
    missing = [c for c in ids if c not in weights]
    if missing:
        raise ValueError(f"contribution: no aggregation weight for clients {missing}")
    if any(not float(weights[c]) > 0 for c in ids):
        raise ValueError(f"contribution: aggregation weights must be > 0, got {[float(weights[c]) for c in ids]}")

    def v(coalition: frozenset[int]) -> float:
        if not coalition:
            return float(score(params))
        members = sorted(coalition)
        stack = torch.stack([updates[c] for c in members])
        w = torch.tensor([float(weights[c]) for c in members], dtype=torch.float64)
        return float(score(params + weighted_mean(stack, w)))

    return Utility(v, ids)
