"""The identity codec: the delta travels as raw little-endian float32, 4 bytes per coordinate
and no header (the length is known from the model layout). In this one-process simulation the
payload is a read-only view of the delta's own memory, not a copy of it."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.compress.base import CODECS, Codec


def float32_payload(x: torch.Tensor) -> memoryview:
    """``x`` as little-endian float32 bytes, read-only. A contiguous float32 CPU tensor is not
    copied: the payload is a view of its memory and keeps it alive (the uplink hands its vector
    over and nothing writes it after encoding). On W2 that is one copy of every update a round
    (80 MB) neither made nor kept beside the deltas."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False).reshape(-1)
    view = arr.view(np.uint8)
    view.flags.writeable = False
    return memoryview(view)


def _float32_view(payload: bytes, *, dim: int, what: str) -> np.ndarray:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what} must be bytes, got {type(payload).__name__}")
    if len(payload) != 4 * dim:
        raise ValueError(f"wrong length: {what} has {len(payload)} bytes, expected {4 * dim} (float32 x {dim})")
    return np.frombuffer(payload, dtype="<f4")


def float32_from(payload: bytes, *, dim: int, what: str = "payload") -> torch.Tensor:
    return torch.from_numpy(_float32_view(payload, dim=dim, what=what).copy())


@CODECS.register("none")
class NoCompression(Codec):
    name: Literal["none"] = "none"
    secagg_compatible: ClassVar[bool] = True  # the identity is linear

    def encode(self, delta, *, ctx, state=None):
        return float32_payload(delta), None

    def decode(self, payload, *, ctx):
        return float32_from(payload, dim=ctx.dim)

    def decode_into(self, payload, *, ctx, out):
        if out.dtype != torch.float32 or out.device.type != "cpu" or out.numel() != ctx.dim:
            return super().decode_into(payload, ctx=ctx, out=out)
        out.numpy()[...] = _float32_view(payload, dim=ctx.dim, what="payload")  # one copy, no temporary

    def project(self, delta, *, ctx):
        return delta.detach().to(torch.float32)

    def lift(self, reduced, *, ctx):
        return reduced
