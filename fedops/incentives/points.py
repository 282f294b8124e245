"""A task's reward budget split into incentive points (pure).

Every participant first gets ``floor`` points (a participation floor); the rest of the budget is
split by a scheme: ``equal``; ``data_size`` (in proportion to the samples each contributed);
``contribution`` (in proportion to each client's cumulative contribution, negative values counting
as 0; if no client has a positive one, equally). The points sum to the budget.
"""

from __future__ import annotations

import math
from typing import Mapping

SCHEMES = ("equal", "data_size", "contribution")


def split_points(*, budget: float, scheme: str, participants: Mapping[int, float] | list[int],
                 sizes: Mapping[int, float] | None = None, contributions: Mapping[int, float] | None = None,
                 floor: float = 0.0) -> dict[int, float]:
    """Points per participant. ``participants`` are client ids (a list, or a mapping whose keys are
    used); ``sizes`` / ``contributions`` are needed by their schemes."""
    ids = sorted(int(c) for c in participants)
    if scheme not in SCHEMES:
        raise ValueError(f"incentive scheme {scheme!r} unknown; known: {', '.join(SCHEMES)}")
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"incentive budget must be a finite number >= 0, got {budget}")
    if not (math.isfinite(floor) and floor >= 0):
        raise ValueError(f"incentive floor must be a finite number >= 0, got {floor}")
    if not ids:
        return {}
    if floor * len(ids) > budget:
        raise ValueError(f"incentive floor {floor} for {len(ids)} participants ({floor * len(ids)} points) is "
                         f"more than the budget {budget}")
    rest = budget - floor * len(ids)
    if scheme == "equal":
        share = dict.fromkeys(ids, 1.0)
    else:
        source = sizes if scheme == "data_size" else contributions
        name = "sizes" if scheme == "data_size" else "contributions"
        if source is None or any(c not in source for c in ids):
            missing = [c for c in ids if source is None or c not in source]
            raise ValueError(f"incentive scheme {scheme!r} needs {name} of every participant; missing for {missing}")
        values = {c: float(source[c]) for c in ids}
        bad = [c for c, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"incentive scheme {scheme!r}: {name} of clients {bad} are not finite")
        if scheme == "data_size" and any(v < 0 for v in values.values()):
            raise ValueError(f"incentive scheme 'data_size': sizes must be >= 0, got {values}")
        share = {c: max(0.0, v) for c, v in values.items()}
        if sum(share.values()) <= 0:
            share = dict.fromkeys(ids, 1.0)
    total = sum(share.values())
    return {c: floor + rest * share[c] / total for c in ids}
