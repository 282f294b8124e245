"""The identity codec: the delta travels as float32 (4 bytes per coordinate)."""

from typing import Literal

import torch

from fedops.compress.base import CODECS, Codec, tensor_bytes


@CODECS.register("none")
class NoCompression(Codec):
    name: Literal["none"] = "none"

    def encode(self, delta, *, client_id):
        values = delta.detach().to(torch.float32).contiguous()
        return {"values": values}, tensor_bytes(values)

    def decode(self, payload):
        return payload["values"]
