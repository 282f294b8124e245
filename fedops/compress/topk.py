"""Top-k sparsification, optionally with error feedback.

The client sends the ``k`` coordinates of largest magnitude: ``k = max(1, round(fraction * dim))``
or ``min(k, dim)``. Exactly ``k`` are kept. Ties at the threshold magnitude are broken towards the
lower index (the kept set is every coordinate with ``|a_i| > t`` plus the lowest-index
coordinates with ``|a_i| == t``, ``t`` being the k-th largest magnitude), so the choice is a
deterministic function of the input.

Payload (after the 8-byte common header)::

    uint32 k, uint8 value_bits (16 or 32), uint8 index format   -> 14-byte header
    indices: a bitmap of ceil(dim/8) bytes (bit i set = coordinate i sent, LSB first) when that
             is smaller than 4k bytes, else uint32 indices[k], strictly increasing, < dim
    values[k]: float16 (default) or float32, in index order

so ``14 + min(ceil(dim/8), 4k) + k*value_bits/8`` bytes: at 10% density a bitmap costs 1.25 bits
per sent value where a uint32 index costs 32, and with float16 values top-10% sends ~12x fewer
bytes than float32. Decode checks that ``k`` is the configured count for this ``dim``, that the
indices are strictly increasing and in range (a bitmap with exactly ``k`` bits set), and that the
length matches.

Error feedback (``error_feedback = True``, Stich et al. 2018 / Seide et al. 2014): the client's
codec state is its residual ``r`` (float32 ``[dim]``; ``None`` on its first round). It compresses
``a = delta + r``, sends ``topk(a)`` and keeps ``a - decode(sent)`` as the next residual (so the
float16 rounding of the sent values is fed back too), and over any number of rounds
``sum(decoded) + residual == sum(deltas)``. :attr:`TopK.stateful` is a property:
``True`` only with error feedback; without it the state stays ``None`` (passing one is an error).

Top-k is not linear in the update, so it cannot run under secure aggregation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from fedops.lazy import torch  # torch on first use: configs load without it
from pydantic import Field, model_validator

from fedops.compress import wire
from fedops.compress.base import CODECS, Codec

_FIELDS = "IBB"
_LIST, _BITMAP = 0, 1


class _CountMixin:
    """``fraction`` xor ``k``: how many coordinates travel."""

    def _check_count(self):
        if (self.fraction is None) == (self.k is None):
            raise ValueError(
                f"{self.name}: give exactly one of 'fraction' and 'k' "
                f"(got fraction={self.fraction!r}, k={self.k!r})"
            )
        return self

    def count(self, dim: int) -> int:
        """The number of coordinates sent for a vector of ``dim``."""
        if dim <= 0:
            return 0
        k = max(1, round(self.fraction * dim)) if self.fraction is not None else self.k
        return min(k, dim)


def topk_indices(a: np.ndarray, k: int) -> np.ndarray:
    """Sorted (ascending) int64 indices of the ``k`` largest entries of ``a`` (non-negative,
    finite), ties at the k-th value broken towards the lower index."""
    d = a.size
    if k >= d:
        return np.arange(d)
    if k <= 0:
        return np.zeros(0, np.int64)
    t = np.partition(a, d - k)[d - k]  # the k-th largest value
    above = np.flatnonzero(a > t)
    need = k - above.size
    ties = np.flatnonzero(a == t)[:need]
    idx = np.concatenate([above, ties])
    idx.sort()
    return idx


@CODECS.register("topk")
class TopK(_CountMixin, Codec):
    name: Literal["topk"] = "topk"
    fraction: float | None = Field(None, gt=0, le=1, description="share of coordinates sent")
    k: int | None = Field(None, ge=1, lt=2**32, description="number of coordinates sent")
    error_feedback: bool = False
    value_bits: Literal[16, 32] = 16

    _validate_count = model_validator(mode="after")(_CountMixin._check_count)

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return self.error_feedback

    def encode(self, delta, *, ctx, state=None):
        d = ctx.dim
        x = wire.f32(delta, d, "topk: delta")
        if self.error_feedback:
            if state is not None:
                if not isinstance(state, torch.Tensor) or tuple(state.shape) != (d,):
                    raise ValueError(f"topk: error-feedback state must be a float32 tensor of shape ({d},)")
                an = x + wire.f32(state, d, "topk: error-feedback state")
            else:
                an = x.copy()
        else:
            if state is not None:
                raise ValueError("topk: got a codec state, but error_feedback is off (stateless)")
            an = x
        mags = np.abs(an)
        if not np.isfinite(mags).all():
            raise ValueError("topk: cannot select from a delta with non-finite values")
        k = self.count(d)
        idx = topk_indices(mags, k)
        if self.value_bits == 16:  # beyond float16's range: clamp (error feedback keeps the excess)
            values = np.clip(an[idx], -65504.0, 65504.0).astype("<f2")
        else:
            values = an[idx].astype("<f4")
        if (d + 7) // 8 < 4 * k:
            mask = np.zeros(d, bool)
            mask[idx] = True
            fmt, index_bytes = _BITMAP, np.packbits(mask, bitorder="little").tobytes()
        else:
            fmt, index_bytes = _LIST, idx.astype("<u4").tobytes()
        payload = wire.header(wire.TAG_TOPK, d, _FIELDS, k, self.value_bits, fmt) + index_bytes + values.tobytes()
        if not self.error_feedback:
            return payload, None
        an[idx] -= values.astype(np.float32)  # an is our own array: the residual is what was not delivered
        return payload, torch.from_numpy(an)

    def decode(self, payload, *, ctx):
        d = ctx.dim
        r = wire.Reader(payload, tag=wire.TAG_TOPK, dim=d, fields=_FIELDS)
        k, bits, fmt = r.fields
        want = self.count(d)
        if k != want:
            raise ValueError(f"topk payload declares k={k}, expected {want} for dim {d}")
        if bits != self.value_bits:
            raise ValueError(f"topk payload declares {bits}-bit values, expected {self.value_bits}")
        if fmt == _BITMAP:
            bitmap = r.array("u1", (d + 7) // 8, "index bitmap")
            idx = np.flatnonzero(np.unpackbits(bitmap, count=d, bitorder="little"))
            if idx.size != k:
                raise ValueError(f"topk payload bitmap has {idx.size} bits set, expected k={k}")
        elif fmt == _LIST:
            idx = r.array("<u4", k, "indices")
        else:
            raise ValueError(f"topk payload has unknown index format {fmt}, expected {_LIST} (list) or {_BITMAP} (bitmap)")
        values = r.array("<f2" if bits == 16 else "<f4", k, "values").astype(np.float32)
        r.end()
        if k:
            if int(idx[-1]) >= d:
                raise ValueError(f"topk payload has index {int(idx[-1])} out of range for dim {d}")
            if k > 1 and not (np.diff(idx.astype(np.int64)) > 0).all():
                raise ValueError("topk payload indices are not strictly increasing (duplicates or unsorted)")
        out = np.zeros(d, np.float32)
        out[idx] = values
        return torch.from_numpy(out)
