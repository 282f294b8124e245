"""Which clients are malicious: the simulator's ground truth, fixed for the whole run.

The server never sees this set; only the simulated clients in it run the attack.
"""

from __future__ import annotations

import math

from fedops.rng import numpy_rng

#: stream key of the malicious-set draw (``numpy_rng(seed, STREAM_MALICIOUS)``); chosen far from
#: the sequential stream keys of :mod:`fedops.rng` so the two never collide
STREAM_MALICIOUS = 101


def choose_malicious(num_clients: int, *, fraction: float, seed: int) -> frozenset[int]:
    """``round(fraction * num_clients)`` distinct client ids (Python ``round``: half to even),
    drawn without replacement with ``numpy_rng(seed, STREAM_MALICIOUS)``: the same for a given
    ``(num_clients, fraction, seed)``.

    ``fraction`` must be in ``[0, 1)`` and leave at least one honest client.
    """
    if num_clients < 0:
        raise ValueError(f"num_clients must be >= 0, got {num_clients}")
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 <= fraction < 1):
        raise ValueError(f"malicious fraction must be in [0, 1), got {fraction}")
    count = round(fraction * num_clients)
    if num_clients > 0 and count >= num_clients:
        raise ValueError(
            f"malicious fraction {fraction} of {num_clients} clients rounds to {count}: no honest client left"
        )
    if count == 0:
        return frozenset()
    ids = numpy_rng(seed, STREAM_MALICIOUS).choice(num_clients, size=count, replace=False)
    return frozenset(int(i) for i in ids)
