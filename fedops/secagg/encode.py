"""What a client feeds into secure aggregation, and how the server reads the unmasked sum.

Pure functions. Every encoded vector is the update followed by one extra coordinate, quantised
to fixed point in Z_M (``fedops.secagg.quantize``):

* **weighted FedAvg** (:func:`encode_weighted`): ``[w * clip_coord(u), w * clip]`` with
  ``w = n_i / n_max``; the server divides the summed update by the summed weight
  (:func:`decode_weighted`), which gives the sample-weighted mean of the survivors.
* **client-level DP** (:func:`encode_dp`, DP-FedAvg composed with SecAgg): the client clips its
  own update to L2 norm ``C - h`` (:func:`dp_clip_bound`) *before* masking, so the server never needs an individual update;
  the extra coordinate carries ``clip * 1[||u|| <= C]`` only when adaptive clipping needs the
  count (otherwise 0, so the server learns nothing beyond the sum). The server adds the Gaussian
  noise to the unmasked sum (:class:`fedops.privacy.DPFedAvg.noised_average`).

Sensitivity under quantisation. Rounding to the grid moves each coordinate by at most
``0.5 / scale``, i.e. the vector by at most ``h = 0.5 * sqrt(d) / scale`` in L2. A client
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
    """``[w * clip_coord(u), w * clip]`` quantised; ``weight`` in [0, 1] (``n_i / n_max``, or FairFed's
    weight over the total; 0 contributes nothing)."""
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1] (relative to the largest possible weight), got {weight!r}")
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


def dp_clip_bound(*, clip_norm: float, dim: int, scale: float) -> float:
    """``C - h``: the L2 norm a client clips its (projected) update to before :func:`encode_dp`, so
    that the quantised vector it masks has norm ``<= C``. Refuses ``C <= h``."""
    headroom = quantisation_headroom(dim=dim, scale=scale)
    if not clip_norm > headroom:
        raise ValueError(
            f"DP clip norm C = {clip_norm!r} is not above the quantisation headroom "
            f"0.5*sqrt(d)/scale = {headroom:.3g} (d = {dim}, secagg.scale = {scale}): raise secagg.scale"
        )
    return clip_norm - headroom


def encode_dp(clipped: np.ndarray, *, count: bool, clip: float, scale: float, bits: int) -> np.ndarray:
    """``[clip_coord(u'), clip * count]`` quantised, for an update ``u'`` the client already clipped
    to L2 norm :func:`dp_clip_bound` (the clipping is the uplink's DP clip step, one
    implementation for every path). ``count`` is the bit ``1[||u|| <= C]`` when adaptive clipping
    needs it, else False (the coordinate is then 0 and the server learns nothing beyond the sum)."""
    x = _as_vector(clipped)
    v = np.append(np.clip(x, -clip, clip), clip if count else 0.0)
    return quantize(v, clip=clip, scale=scale, bits=bits)


def decode_dp(total: np.ndarray, *, n: int, clip: float, scale: float, bits: int) -> tuple[np.ndarray, int]:
    """(sum of the ``n`` clipped updates as float64, count of those with ``||u|| <= C``)."""
    s = dequantize_sum(total, n=n, scale=scale, bits=bits)
    return s[:-1], int(round(s[-1] / clip))


__all__ = ["decode_dp", "decode_weighted", "dp_clip_bound", "encode_dp", "encode_weighted", "quantisation_headroom"]
