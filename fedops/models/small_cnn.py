"""A small CNN (two 3x3 conv blocks with max-pooling, one hidden fc layer), ~52k parameters on
1x28x28 input: fast enough to simulate hundreds of clients on a CPU."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from fedops.lazy import nn  # torch on first use: configs load without it

from fedops.models.base import MODELS, ModelSpec, require_image


@MODELS.register("small_cnn")
class SmallCNN(ModelSpec):
    name: Literal["small_cnn"] = "small_cnn"
    channels: tuple[int, int] = (8, 16)
    hidden: int = Field(64, ge=1)

    def make(self, *, input_shape, num_classes):
        c, h, w = require_image(self.name, input_shape)
        c1, c2 = self.channels
        return nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * (h // 4) * (w // 4), self.hidden), nn.ReLU(),
            nn.Linear(self.hidden, num_classes),
        )
