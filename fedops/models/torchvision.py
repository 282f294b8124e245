"""Any torchvision classification model by name (random init; no weights are downloaded).

Single-channel input is repeated to the three channels the torchvision models expect.
"""

from __future__ import annotations

from typing import Literal

from fedops.lazy import nn  # torch on first use: configs load without it

from fedops.models.base import MODELS, ModelSpec, require_image


def _repeat_channels(channels: int):
    """A module repeating single-channel input to ``channels`` (defined on use: torch loads late)."""

    class RepeatChannels(nn.Module):
        def forward(self, x):
            return x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x

    return RepeatChannels()


@MODELS.register("torchvision")
class TorchvisionModel(ModelSpec):
    name: Literal["torchvision"] = "torchvision"
    arch: str = "resnet18"

    def make(self, *, input_shape, num_classes):
        import torchvision.models as tvm

        c, _, _ = require_image(self.name, input_shape)
        known = tvm.list_models(module=tvm)
        if self.arch not in known:
            raise ValueError(f"unknown torchvision arch {self.arch!r}; known: {', '.join(known)}")
        net = tvm.get_model(self.arch, weights=None, num_classes=num_classes)
        return nn.Sequential(_repeat_channels(3), net) if c == 1 else net
