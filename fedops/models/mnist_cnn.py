"""The CNN of the PyTorch MNIST example: 1,199,882 parameters on 1x28x28 input.

conv 3x3 32 -> conv 3x3 64 -> max-pool 2 -> fc 9216->128 -> fc 128->10 (with the example's
dropout).  It is the model the RPN paper reports on.
"""

from __future__ import annotations

from typing import Literal

from fedops.lazy import nn  # torch on first use: configs load without it

from fedops.models.base import MODELS, ModelSpec, require_image


@MODELS.register("mnist_cnn")
class MnistCNN(ModelSpec):
    name: Literal["mnist_cnn"] = "mnist_cnn"
    dropout: bool = True

    def make(self, *, input_shape, num_classes):
        c, h, w = require_image(self.name, input_shape)
        flat = 64 * ((h - 4) // 2) * ((w - 4) // 2)
        return nn.Sequential(
            nn.Conv2d(c, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25 if self.dropout else 0.0),
            nn.Flatten(),
            nn.Linear(flat, 128), nn.ReLU(),
            nn.Dropout(0.5 if self.dropout else 0.0),
            nn.Linear(128, num_classes),
        )
