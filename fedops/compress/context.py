"""The codec context both sides of a message build from what they share: the run's seed, the
round, the client and the model layout (no extra state on the wire)."""

from __future__ import annotations

from fedops.compress.base import CodecContext
from fedops.rng import STREAM_CODEC, derive_seed
from fedops.types import ParamLayout, TensorSlot


def codec_context(*, seed: int, layout: ParamLayout, round_idx: int, client_id: int | None) -> CodecContext:
    """``ctx.seed`` is shared by every client of the run (random-k draws its round's indices from
    it and ``round_idx``); client-specific randomness adds ``client_id``."""
    return CodecContext(round_idx=round_idx, client_id=client_id, seed=derive_seed(seed, STREAM_CODEC),
                        layout=layout)


def flat_layout(dim: int) -> ParamLayout:
    """A layout with one flat tensor: for callers that have a vector but no model."""
    return ParamLayout((TensorSlot("flat", (dim,), 0, dim),))
