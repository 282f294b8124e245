"""A multilayer perceptron for tabular data (``hidden=()`` is logistic/softmax regression)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from fedops.lazy import nn  # torch on first use: configs load without it

from fedops.models.base import MODELS, ModelSpec


@MODELS.register("mlp")
class MLP(ModelSpec):
    name: Literal["mlp"] = "mlp"
    hidden: tuple[int, ...] = (32,)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def make(self, *, input_shape, num_classes):
        layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
        width = math.prod(input_shape)
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)
