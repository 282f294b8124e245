"""Codecs on the wire: a client's flat update becomes ``bytes``, and the server decodes them.

A codec is a plug-in (its fields are its hyperparameters; the config names it by key):

* ``encode(delta, *, ctx, state) -> (payload, state)``: the client side. ``payload`` is the
  exact serialised message (values, indices, scales, header), so the bytes on the wire are
  ``len(payload)``. ``state`` is the client's own codec state across rounds (error feedback's
  residual), ``None`` for stateless codecs; the caller keeps it per client and hands it back
  next round.
* ``decode(payload, *, ctx) -> delta``: the server side, a dense float32 ``[d]`` vector.
* ``encode_download(global_delta, *, ctx)`` / ``decode_download``: where the method defines a
  compressed download (RPN sends the pooled aggregate back), else ``None`` and the global model
  travels as float32.
* ``project(delta, *, ctx)`` / ``lift(reduced, *, ctx)``: for codecs whose encoding is a linear
  map that every client of a round applies identically (``secagg_compatible``): the reduced
  vectors can then be summed under secure-aggregation masks, and ``lift`` maps the sum back.

``ctx`` carries what both sides know: the round, the client (``None`` on broadcast), a seed
shared by the round (random-k regenerates its indices from it) and the model's parameter layout
(RPN finds the convolution kernels through it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.registry import PluginModel, Registry
from fedops.types import ParamLayout

CODECS = Registry("codec", entry_points="fedops.codecs")


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass(frozen=True)
class CodecContext:
    """What the encoding and the decoding side share for one message."""

    round_idx: int
    client_id: int | None
    seed: int
    layout: ParamLayout

    @property
    def dim(self) -> int:
        return self.layout.size


class Codec(PluginModel):
    #: decoded payloads can be summed coordinate-wise under secure-aggregation masks
    secagg_compatible: ClassVar[bool] = False
    #: the client keeps state across rounds (passed to and returned from ``encode``)
    stateful: ClassVar[bool] = False

    def encode(self, delta: torch.Tensor, *, ctx: CodecContext, state: Any = None) -> tuple[bytes, Any]:
        raise NotImplementedError

    def decode(self, payload: bytes, *, ctx: CodecContext) -> torch.Tensor:
        raise NotImplementedError

    def decode_into(self, payload: bytes, *, ctx: CodecContext, out: torch.Tensor) -> None:
        """Decode straight into ``out`` (a float32 row of the server's ``[k, d]`` stack), so the
        round's updates are copied once. The same errors as :meth:`decode`; a payload that decodes
        to the wrong length raises ``ValueError``."""
        delta = self.decode(payload, ctx=ctx)
        if delta.ndim != 1 or delta.numel() != out.numel():
            raise ValueError(f"wrong length: decoded to shape {tuple(delta.shape)}, expected ({out.numel()},)")
        if not delta.is_floating_point():
            raise ValueError(f"wrong dtype: decoded to {delta.dtype}, expected floating point")
        out.copy_(delta)

    def encode_download(self, global_delta: torch.Tensor, *, ctx: CodecContext) -> bytes | None:
        """The broadcast of the round's global change, or ``None``: the model goes as float32."""
        return None

    def decode_download(self, payload: bytes, *, ctx: CodecContext) -> torch.Tensor:
        raise NotImplementedError(f"codec {self.name!r} has no compressed download")

    def project(self, delta: torch.Tensor, *, ctx: CodecContext) -> torch.Tensor:
        raise NotImplementedError(f"codec {self.name!r} cannot run under secure aggregation")

    def lift(self, reduced: torch.Tensor, *, ctx: CodecContext) -> torch.Tensor:
        raise NotImplementedError(f"codec {self.name!r} cannot run under secure aggregation")
