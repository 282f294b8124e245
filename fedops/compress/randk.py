"""Random-k sparsification with indices shared by the round.

The ``k`` indices (``k = max(1, round(fraction * dim))`` or ``min(k, dim)``) are a uniformly random
subset drawn from a generator seeded by ``(ctx.seed, ctx.round_idx)`` only: every client of a
round picks the same coordinates and the server regenerates them, so only the values travel.
:func:`round_indices` is cached per ``(seed, round, dim, k)`` (the server decodes many clients
of one round).

``unbiased = False`` (default): plain sparsification, decode puts the values back at their
indices and zeros elsewhere. ``unbiased = True``: the values are multiplied by ``dim / k`` on the
client, so that ``E[decode(encode(v))] = v`` over the round's random indices.

Payload (after the 8-byte common header)::

    uint32 k, uint32 round_idx                        -> 16-byte header
    float32 values[k]                                 (in increasing index order)

so ``16 + 4k`` bytes. The round is carried so that a message encoded for another round (hence
other indices) is refused rather than scattered to the wrong coordinates.

Linear and identical for every client of a round, so it runs under secure aggregation:
``project(v) = scale * v[indices]`` and ``lift(sum) = scatter(sum)``; ``decode(encode(v))`` is
exactly ``lift(project(v))``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
from fedops.lazy import torch  # torch on first use: configs load without it
from pydantic import Field, model_validator

from fedops.compress import wire
from fedops.compress.base import CODECS, Codec
from fedops.compress.topk import _CountMixin

_FIELDS = "II"


@lru_cache(maxsize=8)
def _round_indices(seed: int, round_idx: int, dim: int, k: int) -> np.ndarray:
    if k >= dim:
        idx = np.arange(dim)
    else:
        # numpy's choice without replacement (partial shuffle / set sampling) is a few ms for
        # 1.2M, a full torch.randperm of 1.2M costs ~20 ms
        rng = wire.codec_rng(seed, wire.TAG_RANDK, round_idx)
        idx = np.sort(rng.choice(dim, size=k, replace=False))
    idx.setflags(write=False)
    return idx


def round_indices(seed: int, round_idx: int, dim: int, k: int) -> np.ndarray:
    """The round's ``k`` sorted int64 indices into ``[0, dim)`` (a shared, read-only array)."""
    return _round_indices(int(seed), int(round_idx), int(dim), int(k))


@CODECS.register("randk")
class RandK(_CountMixin, Codec):
    name: Literal["randk"] = "randk"
    fraction: float | None = Field(None, gt=0, le=1, description="share of coordinates sent")
    k: int | None = Field(None, ge=1, lt=2**32, description="number of coordinates sent")
    unbiased: bool = Field(False, description="scale the values by dim / k (unbiased estimator)")
    secagg_compatible: ClassVar[bool] = True

    _validate_count = model_validator(mode="after")(_CountMixin._check_count)

    def indices(self, ctx) -> np.ndarray:
        return round_indices(ctx.seed, ctx.round_idx, ctx.dim, self.count(ctx.dim))

    def scale(self, dim: int) -> float:
        k = self.count(dim)
        return dim / k if self.unbiased and k else 1.0

    def project(self, delta, *, ctx):
        x = wire.f32(delta, ctx.dim, "randk: delta")
        values = x[self.indices(ctx)]
        if self.unbiased:
            values *= np.float32(self.scale(ctx.dim))
        return torch.from_numpy(values)

    def lift(self, reduced, *, ctx):
        k = self.count(ctx.dim)
        values = wire.f32(reduced, k, "randk: reduced vector")
        out = np.zeros(ctx.dim, np.float32)
        out[self.indices(ctx)] = values
        return torch.from_numpy(out)

    def encode(self, delta, *, ctx, state=None):
        values = self.project(delta, ctx=ctx)
        head = wire.header(wire.TAG_RANDK, ctx.dim, _FIELDS, values.numel(), ctx.round_idx)
        return head + values.numpy().tobytes(), None

    def decode(self, payload, *, ctx):
        d = ctx.dim
        r = wire.Reader(payload, tag=wire.TAG_RANDK, dim=d, fields=_FIELDS)
        k, round_idx = r.fields
        want = self.count(d)
        if k != want:
            raise ValueError(f"randk payload declares k={k}, expected {want} for dim {d}")
        if round_idx != ctx.round_idx:
            raise ValueError(f"randk payload was encoded for round {round_idx}, this is round {ctx.round_idx}")
        values = r.array("<f4", k, "values")
        r.end()
        return self.lift(values, ctx=ctx)
