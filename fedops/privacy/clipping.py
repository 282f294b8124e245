"""L2 clipping of stacked client updates ``[k, d]`` (pure functions, no state)."""

from __future__ import annotations

import math

from fedops.lazy import torch  # torch on first use: configs load without it


def check_updates(updates: torch.Tensor) -> None:
    """A non-empty, finite, floating ``[k, d]`` stack (ValueError otherwise)."""
    if not isinstance(updates, torch.Tensor):
        raise ValueError(f"updates must be a torch.Tensor, got {type(updates).__name__}")
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty [k, d] stack, got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be floating point, got dtype {updates.dtype}")
    if not bool(torch.isfinite(updates).all()):
        raise ValueError("updates contain non-finite values (nan or inf)")


def check_max_norm(max_norm: float) -> float:
    """A clip norm ``C`` in (0, inf] (``inf`` disables clipping)."""
    try:
        c = float(max_norm)
    except (TypeError, ValueError):
        raise ValueError(f"max_norm must be a number in (0, inf], got {max_norm!r}") from None
    if math.isnan(c) or c <= 0:
        raise ValueError(f"max_norm must be in (0, inf], got {max_norm!r}")
    return c


def clip_by_norm(updates: torch.Tensor, *, max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each row ``u_i`` by ``min(1, C / ||u_i||_2)``.

    Returns ``(clipped, norms)`` where ``norms`` are the original L2 norms ``[k]`` (same dtype as
    ``updates``).  Rows already inside the ball (``||u_i|| <= C``) are returned bit-for-bit
    unchanged; ``max_norm=inf`` returns an unchanged copy.  The scale factor is computed in
    float64, so clipped norms are ``<= C`` up to the input dtype's rounding.
    """
    check_updates(updates)
    c = check_max_norm(max_norm)
    norms64 = torch.linalg.vector_norm(updates.to(torch.float64), ord=2, dim=1)
    norms = norms64.to(updates.dtype)
    if math.isinf(c):
        return updates.clone(), norms
    outside = norms64 > c
    factor = torch.where(outside, c / norms64.clamp_min(torch.finfo(torch.float64).tiny), 1.0)
    scaled = (updates.to(torch.float64) * factor[:, None]).to(updates.dtype)
    clipped = torch.where(outside[:, None], scaled, updates)
    return clipped, norms
