"""Client selection plug-ins: which clients train in a round."""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import numpy as np

from fedops.registry import PluginModel, Registry

SELECTORS = Registry("client selector", entry_points="fedops.selectors")


class Selector(PluginModel):
    #: True when the realised cohort size is random (Poisson sampling)
    variable_cohort: bool = False

    @abstractmethod
    def select(self, *, num_clients: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """Sorted ids of the ``count`` clients that train this round."""


@SELECTORS.register("uniform")
class UniformSelector(Selector):
    """Uniform sampling without replacement (McMahan et al. 2017: a random fraction C)."""

    name: Literal["uniform"] = "uniform"

    def select(self, *, num_clients, count, rng):
        if not 1 <= count <= num_clients:
            raise ValueError(f"cannot select {count} of {num_clients} clients")
        return np.sort(rng.choice(num_clients, size=count, replace=False))


@SELECTORS.register("poisson")
class PoissonSelector(Selector):
    """Each client joins independently with probability q = fraction: the subsampling that
    DP accountants (Opacus RDP/PRV) analyse. ``count`` is only the expected cohort size."""

    name: Literal["poisson"] = "poisson"
    variable_cohort: bool = True

    def select(self, *, num_clients, count, rng):
        q = count / num_clients
        return np.flatnonzero(rng.random(num_clients) < q)


__all__ = ["SELECTORS", "Selector", "UniformSelector", "PoissonSelector"]
