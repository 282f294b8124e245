"""Aggregation rules and server optimisers: two plug-in families.

An aggregation rule turns the round's stacked updates ``[k, d]`` (and per-client weights) into
one update ``[d]``; a server optimiser turns that update into new global parameters and is the
only state kept across rounds (moments), as in Reddi et al. 2021, "Adaptive Federated
Optimization".
"""

from __future__ import annotations

from abc import abstractmethod

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.registry import PluginModel, Registry

AGGREGATORS = Registry("aggregator", entry_points="fedops.aggregators")
SERVER_OPTIMIZERS = Registry("server optimizer", entry_points="fedops.server_optimizers")


def check_stack(updates: torch.Tensor, weights: torch.Tensor) -> None:
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty [k, d] stack, got shape {tuple(updates.shape)}")
    if weights.shape != (updates.shape[0],):
        raise ValueError(f"weights must have shape ({updates.shape[0]},), got {tuple(weights.shape)}")
    if bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights.tolist()}")


class Aggregator(PluginModel):
    """Needs individual updates (robust rules) or only their sum (compatible with SecAgg)."""

    needs_individual_updates: bool = False

    @abstractmethod
    def aggregate(self, updates: torch.Tensor, *, weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]: ...


class ServerOptimizer(PluginModel):
    """Stateless config; :meth:`init_state` makes the per-run state dict (moments)."""

    def init_state(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    @abstractmethod
    def step(
        self, params: torch.Tensor, update: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """New parameters from the aggregated update (mutates ``state``, not ``params``)."""
