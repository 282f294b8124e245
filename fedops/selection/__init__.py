"""Client selection plug-ins: which clients train in a round."""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import numpy as np

from fedops.registry import PluginModel, Registry

SELECTORS = Registry("client selector")


class Selector(PluginModel):
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


__all__ = ["SELECTORS", "Selector", "UniformSelector"]
