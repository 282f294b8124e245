"""Any torchvision classification model by name (random init; no weights are downloaded).

Single-channel input is repeated to the three channels the torchvision models expect.
"""

from __future__ import annotations

from typing import Literal

from fedops.lazy import nn  # torch on first use: configs load without it

from fedops.models.base import MODELS, ModelSpec, require_image


@MODELS.register("torchvision")
class TorchvisionModel(ModelSpec):
    name: Literal["torchvision"] = "torchvision"
    arch: str = "resnet18"

    def make(self, *, input_shape, num_classes):
        import torchvision.models as tvm

        from fedops.models.layers import RepeatChannels

        c, _, _ = require_image(self.name, input_shape)
        known = tvm.list_models(module=tvm)
        if self.arch not in known:
            raise ValueError(f"unknown torchvision arch {self.arch!r}; known: {', '.join(known)}")
        net = tvm.get_model(self.arch, weights=None, num_classes=num_classes)
        return nn.Sequential(RepeatChannels(3), net) if c == 1 else net
