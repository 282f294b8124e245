"""Half precision: each coordinate travels as an IEEE float16.

Payload: the 8-byte :mod:`~fedops.compress.wire` header, then ``dim`` little-endian float16
values, so ``8 + 2*dim`` bytes. Values beyond the float16 range (|x| > 65504) saturate to
+-65504 rather than becoming infinite; NaN stays NaN. Relative error per coordinate is at most
2**-11 in the normal range (|x| >= 2**-14); smaller values lose relative precision (subnormals,
absolute error <= 2**-25).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.compress import wire
from fedops.compress.base import CODECS, Codec

FP16_MAX = 65504.0


@CODECS.register("fp16")
class Float16(Codec):
    name: Literal["fp16"] = "fp16"
    secagg_compatible: ClassVar[bool] = False

    def encode(self, delta, *, ctx, state=None):
        # torch's float32 -> float16 conversion is vectorised (F16C); NumPy's is ~10x slower
        x = torch.from_numpy(wire.f32(delta, ctx.dim, "fp16: delta"))
        values = x.clamp(-FP16_MAX, FP16_MAX).to(torch.float16)  # saturate; NaN stays NaN
        return wire.header(wire.TAG_FP16, ctx.dim) + values.numpy().tobytes(), None

    def decode(self, payload, *, ctx):
        r = wire.Reader(payload, tag=wire.TAG_FP16, dim=ctx.dim)
        values = r.array("<f2", ctx.dim, "float16 values")
        r.end()
        return torch.from_numpy(values.copy()).to(torch.float32)  # the view into the payload is read-only
