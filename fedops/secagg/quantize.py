"""Fixed-point quantisation of float vectors into the ring Z_M, M = 2**bits.

Pure functions. A float vector ``x`` is clipped to ``[-clip, clip]``, scaled by ``scale``,
rounded to the nearest integer and mapped into Z_M (negative values wrap around), stored as
``uint64``. For ``bits=64`` arithmetic mod M is native uint64 wraparound; for ``bits=32`` the
values are reduced mod 2**32 (still stored as uint64; sums may be taken in uint64 and reduced
at the end, since 2**32 divides 2**64).

Error bound. Rounding moves each coordinate by at most ``0.5/scale``, so for ``n`` summed
vectors, per coordinate::

    |dequantize_sum(sum of quantised) - sum of clipped floats| <= n * 0.5 / scale

and the clipping error ``sum_u |x_u - clip(x_u)|`` comes on top (zero when every
``|x_u| <= clip``).

Overflow. Every quantised coordinate lies in ``[-R, R]`` with ``R = rint(clip * scale)`` (rounding
is monotone, and ``clip * scale`` is the product ``quantize`` itself computes), so a sum of ``n``
vectors lies in ``[-n R, n R]``. The signed representative in ``(-M/2, M/2]`` recovers every such
sum exactly if and only if ``n R < M/2`` (a sum of ``-M/2`` would read as ``+M/2``):
``check_overflow`` refuses other parameters. Checking ``n * clip * scale`` instead misses the
rounding: clip 0.3, scale 65,536, 32 bits and n = 109,226 pass that test, yet a sum at the clip
bound wraps to its negative.
"""

from __future__ import annotations

import numpy as np

_ALLOWED_BITS = (32, 64)


def _check_bits(bits: int) -> None:
    if bits not in _ALLOWED_BITS:
        raise ValueError(f"bits must be 32 or 64, got {bits}")


def modulus(bits: int) -> int:
    """M = 2**bits."""
    _check_bits(bits)
    return 1 << bits


def reduce(v: np.ndarray, *, bits: int) -> np.ndarray:
    """Reduce a uint64 array mod 2**bits (no-op for 64 bits)."""
    _check_bits(bits)
    v = np.asarray(v, dtype=np.uint64)
    if bits == 32:
        return v & np.uint64(0xFFFFFFFF)
    return v


def largest_level(*, clip: float, scale: float) -> int:
    """``R = rint(clip * scale)``: the largest magnitude a quantised coordinate can take."""
    return int(np.rint(np.float64(clip) * np.float64(scale)))


def check_overflow(*, n: int, clip: float, scale: float, bits: int) -> None:
    """Raise ValueError unless a sum of ``n`` quantised vectors decodes without wrapping."""
    _check_bits(bits)
    if n < 1 or not 0 < clip < float("inf") or not 0 < scale < float("inf") or not np.isfinite(clip * scale):
        raise ValueError(f"need n >= 1 and finite clip > 0, scale > 0; got n={n}, clip={clip}, scale={scale}")
    half = 1 << (bits - 1)
    step = largest_level(clip=clip, scale=scale)
    if n * step >= half:
        raise ValueError(
            f"quantised sum may overflow: n * rint(clip * scale) = {n} * rint({clip} * {scale}) = {n} * {step} = "
            f"{n * step} >= M/2 = 2**{bits - 1} = {half}; lower scale or clip, or use more bits"
        )


def quantize(x: np.ndarray, *, clip: float, scale: float, bits: int) -> np.ndarray:
    """Clip to [-clip, clip], round x*scale to the nearest integer, map into Z_{2**bits} (uint64)."""
    check_overflow(n=1, clip=clip, scale=scale, bits=bits)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("quantize: input contains NaN or infinity")
    q = np.rint(np.clip(x, -clip, clip) * scale).astype(np.int64)
    return reduce(q.view(np.uint64), bits=bits)


def dequantize_sum(s: np.ndarray, *, n: int, scale: float, bits: int) -> np.ndarray:
    """Decode a sum of ``n`` quantised vectors: signed representative in (-M/2, M/2], divided by scale.

    ``n`` is the number of summed vectors; it is validated (n >= 1) and fixes the error bound
    ``n * 0.5 / scale`` documented in the module docstring.
    """
    _check_bits(bits)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    s = reduce(np.asarray(s, dtype=np.uint64), bits=bits)
    half = np.uint64(1 << (bits - 1))
    if bits == 64:
        signed = s.view(np.int64).astype(np.float64)
    else:
        signed = s.astype(np.int64).astype(np.float64)
        signed = np.where(s > half, signed - float(1 << 32), signed)
    # (-M/2, M/2]: the value M/2 itself stays positive.
    signed = np.where(s == half, float(1 << (bits - 1)), signed)
    return signed / scale
