"""Explicit randomness: every stream derives from (run seed, *keys) such as (round, client).

No global seeding anywhere: a round can be replayed alone, and a resumed run draws exactly what
an uninterrupted run draws.
"""

from __future__ import annotations

import numpy as np
from fedops.lazy import torch  # torch on first use: configs load without it


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by ``(seed, *keys)`` (NumPy SeedSequence mixing)."""
    if any(k < 0 for k in (seed, *keys)):
        raise ValueError(f"seed keys must be non-negative integers, got {(seed, *keys)}")
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def numpy_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


# Stream names: the second key of every derived stream, so streams never collide.
STREAM_SELECTION = 1
STREAM_CLIENT = 2
STREAM_MODEL_INIT = 3
STREAM_DROPOUT = 4
STREAM_BASELINE = 5
STREAM_DP_NOISE = 6
STREAM_SECAGG = 7
STREAM_CODEC = 8
STREAM_ATTACK = 9
STREAM_ROOT = 10
STREAM_BAD_DATA = 11
STREAM_HOLDOUT = 12
STREAM_DEVICES = 13
STREAM_CONTRIBUTION = 14
