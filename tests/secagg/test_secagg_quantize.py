import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedops.secagg.quantize import check_overflow, dequantize_sum, largest_level, quantize


@pytest.mark.parametrize("bits", [32, 64])
def test_overflow_check_refuses_at_half_modulus(bits):
    half = 2 ** (bits - 1)
    check_overflow(n=4, clip=1.0, scale=half / 8, bits=bits)
    with pytest.raises(ValueError, match=r"n \* rint\(clip \* scale\).*>= M/2") as exc:
        check_overflow(n=4, clip=1.0, scale=half / 4, bits=bits)
    assert "4" in str(exc.value) and str(half) in str(exc.value)
    with pytest.raises(ValueError):
        check_overflow(n=1000, clip=10.0, scale=2.0**bits, bits=bits)


def test_bits_must_be_32_or_64():
    with pytest.raises(ValueError, match="bits"):
        quantize(np.zeros(3), clip=1.0, scale=10.0, bits=16)


def test_negative_values_wrap_and_decode():
    for bits in (32, 64):
        q = quantize(np.array([-1.0, 0.0, 0.5, 2.0]), clip=1.0, scale=4.0, bits=bits)
        assert q.dtype == np.uint64
        assert int(q[0]) == 2**bits - 4 and int(q[1]) == 0 and int(q[2]) == 2 and int(q[3]) == 4  # clipped
        np.testing.assert_array_equal(dequantize_sum(q, n=1, scale=4.0, bits=bits), [-1.0, 0.0, 0.5, 1.0])


@pytest.mark.parametrize("bits", [32, 64])
def test_half_modulus_decodes_positive(bits):
    s = np.array([2 ** (bits - 1), 2 ** (bits - 1) + 1], dtype=np.uint64)
    out = dequantize_sum(s, n=1, scale=1.0, bits=bits)
    assert out[0] == 2.0 ** (bits - 1) and out[1] == -(2.0 ** (bits - 1)) + 1


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sampled_from([32, 64]),
    n=st.integers(1, 30),
    scale=st.sampled_from([1.0, 10.0, 2.0**10, 2.0**16]),
    data=st.data(),
)
def test_sum_round_trip_within_bound(bits, n, scale, data):
    clip = 3.0
    check_overflow(n=n, clip=clip, scale=scale, bits=bits)
    xs = [
        data.draw(arrays(np.float64, 7, elements=st.floats(-5, 5, allow_nan=False, allow_infinity=False)))
        for _ in range(n)
    ]
    acc = np.zeros(7, dtype=np.uint64)
    for x in xs:
        acc += quantize(x, clip=clip, scale=scale, bits=bits)
    if bits == 32:
        acc &= np.uint64(0xFFFFFFFF)
    got = dequantize_sum(acc, n=n, scale=scale, bits=bits)
    true = np.sum([np.clip(x, -clip, clip) for x in xs], axis=0)
    assert np.all(np.abs(got - true) <= n * 0.5 / scale + 1e-9 * max(1.0, np.abs(true).max()))


def test_nan_refused():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), clip=1.0, scale=1.0, bits=64)


def test_overflow_check_counts_rounding_at_the_boundary():
    """clip 0.3, scale 65,536, 32 bits, n = 109,226: n * clip * scale = 2,147,470,541 < 2**31, but
    each coordinate at the clip rounds up to 19,661, and 109,226 of them wrap to a negative sum."""
    n, clip, scale, bits = 109_226, 0.3, 65536.0, 32
    assert n * clip * scale < 2**31 and largest_level(clip=clip, scale=scale) == 19_661
    with pytest.raises(ValueError, match=r"109226 \* 19661 = 2147492386 >= M/2 = 2\*\*31"):
        check_overflow(n=n, clip=clip, scale=scale, bits=bits)
    # what the old test let through: the sum at the clip bound decodes with the wrong sign
    one = quantize(np.array([clip]), clip=clip, scale=scale, bits=bits)
    total = (one * np.uint64(n)) & np.uint64(0xFFFFFFFF)
    assert dequantize_sum(total, n=n, scale=scale, bits=bits)[0] < 0
    check_overflow(n=n - 1, clip=clip, scale=scale, bits=bits)  # 109,225 * 19,661 < 2**31: accepted


@settings(max_examples=300, deadline=None)
@given(bits=st.sampled_from([32, 64]), clip=st.floats(1e-3, 1e3), scale=st.floats(1.0, 2.0**40),
       n_exp=st.floats(0, 1), data=st.data())
def test_every_accepted_config_decodes_every_in_range_sum_exactly(bits, clip, scale, n_exp, data):
    """For every (n, clip, scale, bits) the check accepts, every sum of n quantised coordinates
    (each in [-R, R], R = rint(clip * scale)) decodes to exactly its value: no wrap-around."""
    r = largest_level(clip=clip, scale=scale)
    if r == 0 or r >= 2 ** (bits - 1):
        return
    n_max = (2 ** (bits - 1) - 1) // r  # the largest n with n * R < M/2
    if n_max < 1:
        with pytest.raises(ValueError):
            check_overflow(n=1, clip=clip, scale=scale, bits=bits)
        return
    n = max(1, min(n_max, int(n_max**n_exp)))
    check_overflow(n=n, clip=clip, scale=scale, bits=bits)  # accepted
    with pytest.raises(ValueError):
        check_overflow(n=n_max + 1, clip=clip, scale=scale, bits=bits)  # and the next n is refused
    bound = n * r
    sums = [bound, -bound, bound - 1, -bound + 1, 0, data.draw(st.integers(-bound, bound))]
    m = 1 << bits
    encoded = np.array([s % m for s in sums], dtype=np.uint64)
    decoded = dequantize_sum(encoded, n=n, scale=scale, bits=bits)
    assert decoded.tolist() == [np.float64(s) / scale for s in sums]


@pytest.mark.parametrize("bits", [32, 64])
def test_vectors_at_the_clip_bound_decode_exactly_for_the_largest_accepted_n(bits):
    clip, scale = 1.0, float(2 ** (bits - 1) // 3)  # R = scale, n = 2 is the most the check accepts
    n = (2 ** (bits - 1) - 1) // largest_level(clip=clip, scale=scale)
    check_overflow(n=n, clip=clip, scale=scale, bits=bits)
    for sign in (1.0, -1.0):
        acc = np.zeros(3, dtype=np.uint64)
        for _ in range(n):
            acc += quantize(np.full(3, sign * clip), clip=clip, scale=scale, bits=bits)
        if bits == 32:
            acc &= np.uint64(0xFFFFFFFF)
        assert dequantize_sum(acc, n=n, scale=scale, bits=bits).tolist() == [sign * n * clip] * 3
