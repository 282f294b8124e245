import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedops.secagg.quantize import check_overflow, dequantize_sum, quantize


@pytest.mark.parametrize("bits", [32, 64])
def test_overflow_check_refuses_at_half_modulus(bits):
    half = 2 ** (bits - 1)
    check_overflow(n=4, clip=1.0, scale=half / 8, bits=bits)
    with pytest.raises(ValueError, match=r"n\*clip\*scale.*>= M/2") as exc:
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
