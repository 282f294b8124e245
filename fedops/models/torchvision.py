"""Any torchvision classification model by name (random init; no weights are downloaded).

Single-channel input is repeated to the three channels the torchvision models expect.
"""

from typing import Literal

from torch import nn

from fedops.models.base import MODELS, ModelSpec, require_image


class _RepeatChannels(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x


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
        return nn.Sequential(_RepeatChannels(3), net) if c == 1 else net
