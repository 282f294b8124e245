"""QSGD: stochastic, unbiased quantisation (Alistarh et al., NeurIPS 2017).

With ``s = 2**(bits-1) - 1`` magnitude levels (``s = 1`` for ``bits = 1``), each coordinate of a
bucket ``v`` becomes the level ``l_i = floor(|v_i| / ||v|| * s + u_i)`` with ``u_i ~ U[0, 1)``,
and decodes to ``||v|| * sign(v_i) * l_i / s``. Since ``E[l_i] = |v_i| / ||v|| * s``, the decode is
unbiased: ``E[decode(encode(v))] = v``, and (Lemma 3.1)
``E||Q(v) - v||^2 <= min(d / s^2, sqrt(d) / s) * ||v||^2`` per bucket of ``d`` coordinates.
The uniforms come from a NumPy generator seeded by ``(ctx.seed, ctx.round_idx, ctx.client_id)``
(:func:`fedops.rng.numpy_rng`, codec stream key).

Buckets: ``bucket_size = None`` quantises the whole vector against one norm; otherwise the vector
is cut into ``ceil(dim / bucket_size)`` consecutive buckets, each with its own float32 norm.

Payload (after the 8-byte common header)::

    uint8 bits, 3 reserved bytes, uint32 bucket_size (0 = whole vector)    -> 16-byte header
    float32 norms[nb]                                                       nb = ceil(dim / bucket)
    codes

* ``bits >= 2``: one sign-and-magnitude code per coordinate, ``code = l + 2**(bits-1) * [v_i < 0]``,
  packed ``bits`` bits per coordinate (LSB-first stream, :func:`fedops.compress.wire.pack_uint`):
  ``ceil(dim * bits / 8)`` bytes (bits = 8: one byte per coordinate, bits = 4: two per byte).
* ``bits = 1``: ``s = 1``, the level is 0 or 1, and a sign is only needed where the level is 1.
  The codes are a level bitmap of ``ceil(dim / 8)`` bytes followed by the sign bits (1 = negative)
  of the ``nnz`` coordinates whose level is 1, in index order, ``ceil(nnz / 8)`` bytes, nnz being
  the bitmap's popcount. This is exactly QSGD with ``s = 1`` (unbiased, same variance bound) at
  about 1 bit per coordinate: ``E[nnz] = ||v||_1 / ||v|| <= sqrt(dim)``. The payload length
  depends on nnz.

Not secure-aggregation compatible: every client quantises against its own norm.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
from fedops.lazy import torch  # torch on first use: configs load without it
from pydantic import Field

from fedops.compress import wire
from fedops.compress.base import CODECS, Codec

_FIELDS = "B3xI"


def levels(bits: int) -> int:
    """The number ``s`` of non-zero magnitude levels for a bit width."""
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


@lru_cache(maxsize=16)
def _lut(bits: int) -> np.ndarray:
    """code -> signed level / s, as float32 (read-only)."""
    s = levels(bits)
    codes = np.arange(2**bits)
    table = ((codes & s) * np.where(codes >> (bits - 1), -1.0, 1.0) / s).astype(np.float32)
    table.setflags(write=False)
    return table


@CODECS.register("qsgd")
class QSGD(Codec):
    name: Literal["qsgd"] = "qsgd"
    bits: int = Field(8, ge=1, le=16, description="bits per coordinate (sign included); s = 2**(bits-1) - 1")
    bucket_size: int | None = Field(None, ge=1, lt=2**32, description="coordinates per norm; None = one bucket")
    secagg_compatible: ClassVar[bool] = False

    @property
    def s(self) -> int:
        return levels(self.bits)

    def _bucket(self, dim: int) -> tuple[int, int]:
        """(bucket length, number of buckets) for a vector of ``dim``."""
        bs = dim if self.bucket_size is None else min(self.bucket_size, max(dim, 1))
        return bs, (-(-dim // bs) if dim else 0)

    def encode(self, delta, *, ctx, state=None):
        d = ctx.dim
        x = wire.f32(delta, d, "qsgd: delta")
        bs, nb = self._bucket(d)
        s = self.s
        pad = nb * bs - d
        xb = (np.concatenate([x, np.zeros(pad, np.float32)]) if pad else x).reshape(nb, bs)
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", xb, xb, dtype=np.float64)).astype(np.float32)
        if not np.isfinite(norms).all():
            raise ValueError("qsgd: cannot quantise a delta with non-finite values (or whose norm overflows float32)")
        with np.errstate(divide="ignore"):
            inv = np.where(norms > 0, s / norms.astype(np.float64), 0.0)
        rng = wire.codec_rng(ctx.seed, wire.TAG_QSGD, ctx.round_idx, wire.client_key(ctx.client_id))
        if (inv <= np.finfo(np.float32).max).all():
            lev = np.abs(x)
            inv32 = inv.astype(np.float32)
            lev *= inv32[0] if nb == 1 else np.repeat(inv32, bs)[:d]
        else:  # a (sub)normal-tiny norm: s / ||v|| overflows float32, scale in float64
            lev = (np.abs(x.astype(np.float64)) * (inv[0] if nb == 1 else np.repeat(inv, bs)[:d])).astype(np.float32)
        lev += rng.random(d, dtype=np.float32)
        np.floor(lev, out=lev)
        np.minimum(lev, np.float32(s), out=lev)  # |v_i| <= ||v|| up to rounding
        head = wire.header(wire.TAG_QSGD, d, _FIELDS, self.bits, 0 if self.bucket_size is None else bs)
        norm_bytes = norms.astype("<f4", copy=False).tobytes()
        negative = np.signbit(x)
        if self.bits == 1:
            bitmap = lev.astype(np.uint8)
            nz = np.flatnonzero(bitmap)
            codes = (np.packbits(bitmap, bitorder="little").tobytes()
                     + np.packbits(negative[nz], bitorder="little").tobytes())
        else:
            code = lev.astype(np.uint8 if self.bits <= 8 else np.uint16)
            code |= negative.view(np.uint8).astype(code.dtype, copy=False) << code.dtype.type(self.bits - 1)
            codes = wire.pack_uint(code, self.bits)
        return head + norm_bytes + codes, None

    def decode(self, payload, *, ctx):
        d = ctx.dim
        r = wire.Reader(payload, tag=wire.TAG_QSGD, dim=d, fields=_FIELDS)
        bits, bucket = r.fields
        if bits != self.bits:
            raise ValueError(f"qsgd payload uses bits={bits}, this run is configured with bits={self.bits}")
        bs, nb = self._bucket(d)
        want = 0 if self.bucket_size is None else bs
        if bucket != want:
            raise ValueError(f"qsgd payload declares bucket_size={bucket}, expected {want} for dim {d}")
        norms = r.array("<f4", nb, "bucket norms")
        if not (np.isfinite(norms).all() and (norms >= 0).all()):
            raise ValueError("qsgd payload carries a negative or non-finite bucket norm")
        if bits == 1:
            bitmap = np.unpackbits(r.raw(wire.packed_size(d, 1), "level bitmap"), count=d, bitorder="little")
            nz = np.flatnonzero(bitmap)
            signs = np.unpackbits(r.raw(wire.packed_size(nz.size, 1), "sign bits"), count=nz.size,
                                  bitorder="little")
            r.end()
            out = np.zeros(d, np.float32)
            out[nz] = np.where(signs, np.float32(-1), np.float32(1))
        else:
            codes = wire.unpack_uint(r.raw(wire.packed_size(d, bits), "codes"), bits, d)
            r.end()
            out = _lut(bits)[codes]
        if nb == 1:
            out *= norms[0]
        elif nb > 1:
            out *= np.repeat(norms, bs)[:d]
        return torch.from_numpy(out)
