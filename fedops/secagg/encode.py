"""What a client feeds into secure aggregation, and how the server reads the unmasked sum.

Pure functions. Every encoded vector is the update followed by one extra coordinate, quantised
to fixed point in Z_M (``fedops.secagg.quantize``):

* **weighted FedAvg** (:func:`encode_weighted`): ``[w * clip_coord(u), w * clip]`` with
  ``w = n_i / n_max``; the server divides the summed update by the summed weight
  (:func:`decode_weighted`), which gives the sample-weighted mean of the survivors.
* **client-level DP** (:func:`encode_dp`, DP-FedAvg composed with SecAgg): the client clips its
  own update to L2 norm ``C`` *before* masking, so the server never needs an individual update;
  the extra coordinate carries ``clip * 1[||u|| <= C]`` only when adaptive clipping needs the
  count (otherwise 0, so the server learns nothing beyond the sum). The server adds the Gaussian
  noise to the unmasked sum (:class:`fedops.privacy.DPFedAvg.noised_average`).

Sensitivity under quantisation. Rounding to the grid moves each coordinate by at most
``0.5 / scale``, i.e. the vector by at most ``h = 0.5 * sqrt(d) / scale`` in L2. :func:`encode_dp`
therefore clips to ``C - h`` before rounding, so the *quantised* update a client contributes has
norm ``<= C`` and the DP analysis with sensitivity ``C`` holds for what is actually summed. The
per-coordinate clip to ``[-clip, clip]`` that fixed point needs only shrinks the vector further.
"""

from __future__ import annotations

import math

import numpy as np

from fedops.secagg.quantize import dequantize_sum, quantize


def quantisation_headroom(*, dim: int, scale: float) -> float:
    """L2 distance rounding to the ``1/scale`` grid can add to a ``dim``-vector: ``0.5 sqrt(dim) / scale``."""
    if dim < 0 or scale <= 0:
        raise ValueError(f"need dim >= 0 and scale > 0, got dim={dim}, scale={scale}")
    return 0.5 * math.sqrt(dim) / scale


def _as_vector(delta: np.ndarray) -> np.ndarray:
    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"an update must be a 1-D vector, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the update contains NaN or infinity")
    return x


def encode_weighted(delta: np.ndarray, *, weight: float, clip: float, scale: float, bits: int) -> tuple[np.ndarray, dict[str, float]]:
    """``[w * clip_coord(u), w * clip]`` quantised; ``weight`` in (0, 1] (``n_i / n_max``)."""
    if not 0 < weight <= 1:
        raise ValueError(f"weight must be in (0, 1] (samples relative to the largest client), got {weight!r}")
    x = _as_vector(delta)
    clipped = int(np.count_nonzero(np.abs(x) > clip))
    v = np.append(np.clip(x, -clip, clip) * weight, weight * clip)
    return quantize(v, clip=clip, scale=scale, bits=bits), {"secagg_clipped_coordinates": clipped}


def decode_weighted(total: np.ndarray, *, n: int, clip: float, scale: float, bits: int) -> np.ndarray:
    """Sample-weighted mean of the ``n`` summed :func:`encode_weighted` vectors (float64)."""
    s = dequantize_sum(total, n=n, scale=scale, bits=bits)
    weight_sum = s[-1] / clip
    if not weight_sum > 0:
        raise ValueError(f"secure aggregation returned a non-positive weight sum {weight_sum}")
    return s[:-1] / weight_sum


def encode_dp(
    delta: np.ndarray, *, clip_norm: float, send_count: bool, clip: float, scale: float, bits: int,
    within: bool | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Clip ``u`` to L2 norm ``C - h`` (so the quantised vector has norm <= C), then
    ``[clip_coord(u'), clip * 1[||u|| <= C] if send_count else 0]`` quantised. ``within``
    overrides ``||u|| <= C`` when ``delta`` is already a clipped (or projected) update."""
    x = _as_vector(delta)
    headroom = quantisation_headroom(dim=x.size, scale=scale)
    if not clip_norm > headroom:
        raise ValueError(
            f"DP clip norm C = {clip_norm!r} is not above the quantisation headroom "
            f"0.5*sqrt(d)/scale = {headroom:.3g} (d = {x.size}, secagg.scale = {scale}): raise secagg.scale"
        )
    norm = float(np.linalg.norm(x))
    within = norm <= clip_norm if within is None else bool(within)
    bound = clip_norm - headroom
    if norm > bound:
        x = x * (bound / norm)
    v = np.append(np.clip(x, -clip, clip), clip if (send_count and within) else 0.0)
    info = {"update_norm_before_clip": norm, "dp_clipped": float(not within)}
    return quantize(v, clip=clip, scale=scale, bits=bits), info


def decode_dp(total: np.ndarray, *, n: int, clip: float, scale: float, bits: int) -> tuple[np.ndarray, int]:
    """(sum of the ``n`` clipped updates as float64, count of those with ``||u|| <= C``)."""
    s = dequantize_sum(total, n=n, scale=scale, bits=bits)
    return s[:-1], int(round(s[-1] / clip))


__all__ = ["decode_dp", "decode_weighted", "encode_dp", "encode_weighted", "quantisation_headroom"]
