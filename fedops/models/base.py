"""Model zoo interface: a plug-in builds an ``nn.Module`` for an input shape and class count."""

from __future__ import annotations

from abc import abstractmethod

from fedops.lazy import torch, nn  # torch on first use: configs load without it

from fedops.registry import PluginModel, Registry

MODELS = Registry("model", entry_points="fedops.models")


class ModelSpec(PluginModel):
    """A model family; fields are its architecture hyperparameters."""

    @abstractmethod
    def make(self, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module: ...

    def build(self, *, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
        """The model with weights initialised from ``seed`` alone (global RNG left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.make(input_shape=tuple(input_shape), num_classes=num_classes)


def require_image(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs image input (channels, height, width); got input shape {input_shape}"
        )
    return input_shape  # type: ignore[return-value]
