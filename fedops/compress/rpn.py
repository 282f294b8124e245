"""RPN: Residual Pooling Network (Huang et al., ECAI 2020).

A client's residual ``R = M_t - M_{t-1}`` (the delta) is reduced by mean-pooling every
convolution kernel spatially: a kernel tensor of shape ``[out, in, *spatial]`` (3-D conv1d, 4-D
conv2d, 5-D conv3d: any layout slot with at least 3 dimensions whose trailing ``shape[2:]`` holds
more than one value) becomes ``[out, in]``, each kernel replaced by its mean. Every other tensor
(biases, linear weights, 1x1 convolutions, normalisation parameters and buffers) travels as is.
The slot is recognised by shape alone, so a non-convolution tensor of 3+ dimensions (a
positional embedding, say) would be pooled too: RPN is meant for CNNs.

``lift`` broadcasts each pooled value back over its kernel's positions, and ``pool(lift(p)) == p``
exactly (the means are taken in float64: ``n`` equal float32 values sum exactly and divide back
exactly). The server averages the pooled residuals and broadcasts the pooled aggregate
(:meth:`RPN.encode_download`); every client recovers the global model as
``M_0 + sum_t lift(aggregate_t)`` (the paper's Lemma 2), which is what the server holds.

On the 1,199,882-parameter MNIST CNN (2,080 3x3 kernels) the upload carries 1,183,242 floats.

Payload, upload and download alike (after the 8-byte common header)::

    uint32 pooled_size                                -> 12-byte header
    float32 pooled[pooled_size]                       slots in layout order

so ``12 + 4 * pooled_size`` bytes. The per-filter threshold selection of the paper is not
implemented.

Pooling is linear and the same for every client, so RPN runs under secure aggregation:
``project = pool`` and ``lift = lift``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
import torch

from fedops.compress import wire
from fedops.compress.base import CODECS, Codec
from fedops.types import ParamLayout

_FIELDS = "I"


@dataclass(frozen=True)
class _Piece:
    src: int  # offset in the dense vector
    numel: int  # values in the dense vector
    dst: int  # offset in the pooled vector
    ksize: int  # values per kernel (1: copied as is)

    @property
    def out(self) -> int:
        return self.numel // self.ksize


@dataclass(frozen=True)
class _Plan:
    dim: int
    size: int
    pieces: tuple[_Piece, ...]


def kernel_size(shape: tuple[int, ...]) -> int:
    """Values per pooled kernel for a tensor of ``shape``; 1 when the tensor is sent as is."""
    return math.prod(shape[2:]) if len(shape) >= 3 else 1


@lru_cache(maxsize=32)
def _plan(layout: ParamLayout) -> _Plan:
    pieces: list[_Piece] = []
    dst = 0
    for slot in layout.slots:
        ks = kernel_size(slot.shape)
        if ks <= 1 or slot.numel == 0:
            ks = 1
            last = pieces[-1] if pieces else None
            if last is not None and last.ksize == 1 and last.src + last.numel == slot.offset:
                # merge runs of consecutive copied tensors into one slice
                pieces[-1] = _Piece(last.src, last.numel + slot.numel, last.dst, 1)
                dst += slot.numel
                continue
        pieces.append(_Piece(slot.offset, slot.numel, dst, ks))
        dst += slot.numel // ks
    return _Plan(layout.size, dst, tuple(pieces))


def pooled_size(layout: ParamLayout) -> int:
    """The number of floats a pooled residual carries."""
    return _plan(layout).size


def pool(vector: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
    """Mean-pool every convolution kernel of the flat ``vector``; other tensors pass unchanged."""
    plan = _plan(layout)
    x = wire.f32(vector, plan.dim, "rpn: dense vector")
    out = np.empty(plan.size, np.float32)
    for p in plan.pieces:
        src = x[p.src : p.src + p.numel]
        if p.ksize == 1:
            out[p.dst : p.dst + p.numel] = src
        else:
            out[p.dst : p.dst + p.out] = src.reshape(p.out, p.ksize).sum(axis=1, dtype=np.float64) / p.ksize
    return torch.from_numpy(out)


def lift(reduced: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
    """Broadcast each pooled kernel value over its kernel's positions (right inverse of pool)."""
    plan = _plan(layout)
    r = wire.f32(reduced, plan.size, "rpn: pooled vector")
    out = np.empty(plan.dim, np.float32)
    for p in plan.pieces:
        if p.ksize == 1:
            out[p.src : p.src + p.numel] = r[p.dst : p.dst + p.numel]
        else:
            out[p.src : p.src + p.numel].reshape(p.out, p.ksize)[:] = r[p.dst : p.dst + p.out, None]
    return torch.from_numpy(out)


@CODECS.register("rpn")
class RPN(Codec):
    name: Literal["rpn"] = "rpn"
    secagg_compatible: ClassVar[bool] = True

    def _pack(self, vector: torch.Tensor, ctx) -> bytes:
        pooled = pool(vector, ctx.layout)
        return wire.header(wire.TAG_RPN, ctx.dim, _FIELDS, pooled.numel()) + pooled.numpy().astype("<f4", copy=False).tobytes()

    def _unpack(self, payload: bytes, ctx) -> torch.Tensor:
        r = wire.Reader(payload, tag=wire.TAG_RPN, dim=ctx.dim, fields=_FIELDS)
        (m,) = r.fields
        want = pooled_size(ctx.layout)
        if m != want:
            raise ValueError(f"rpn payload declares {m} pooled values, the layout pools to {want}")
        values = r.array("<f4", m, "pooled values")
        r.end()
        return lift(values, ctx.layout)

    def encode(self, delta, *, ctx, state=None):
        return self._pack(delta, ctx), None

    def decode(self, payload, *, ctx):
        return self._unpack(payload, ctx)

    def encode_download(self, global_delta, *, ctx):
        return self._pack(global_delta, ctx)

    def decode_download(self, payload, *, ctx):
        return self._unpack(payload, ctx)

    def project(self, delta, *, ctx):
        return pool(delta, ctx.layout)

    def lift(self, reduced, *, ctx):
        return lift(reduced, ctx.layout)
