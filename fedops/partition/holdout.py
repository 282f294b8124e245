"""Each client's local held-out split, for client-level evaluation (pure)."""

from __future__ import annotations

import numpy as np

from fedops.rng import STREAM_HOLDOUT, numpy_rng


def holdout_split(indices: list[np.ndarray], *, fraction: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(train, held_out)`` index arrays per client: ``round(fraction * n_k)`` of client k's rows
    (at least 1 when it has 2 or more, and never all of them), drawn from the stream
    ``(seed, holdout, k)``, so a client's split depends on its own rows and the seed only."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    train, held = [], []
    for k, idx in enumerate(indices):
        idx = np.asarray(idx, dtype=np.int64)
        n = idx.size
        m = min(max(int(round(fraction * n)), 1 if n >= 2 else 0), max(n - 1, 0))
        perm = numpy_rng(seed, STREAM_HOLDOUT, k).permutation(n)
        held.append(np.sort(idx[perm[:m]]))
        train.append(np.sort(idx[perm[m:]]))
    return train, held
