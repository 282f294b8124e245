"""Upload codecs: encode a client's flat delta into a wire payload whose size is counted exactly.

A codec is a plug-in with ``encode(delta, *, client_id) -> (payload, nbytes)`` and
``decode(payload) -> delta``; codecs with state across rounds (error feedback) keep it per client.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from fedops.registry import PluginModel, Registry

CODECS = Registry("codec")


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Codec(PluginModel):
    #: whether decoded payloads can be summed coordinate-wise under secure-aggregation masks
    secagg_compatible: bool = False

    @abstractmethod
    def encode(self, delta: torch.Tensor, *, client_id: int) -> tuple[dict[str, Any], int]: ...

    @abstractmethod
    def decode(self, payload: dict[str, Any]) -> torch.Tensor: ...
