"""Client encodings for secure aggregation: weighted FedAvg, and DP clipping before masking."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedops.secagg import dequantize_sum, secure_sum
from fedops.secagg.encode import (
    decode_dp,
    decode_weighted,
    dp_clip_bound,
    encode_dp,
    encode_weighted,
    quantisation_headroom,
)

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


def test_headroom_hand_computed():
    assert quantisation_headroom(dim=100, scale=10.0) == pytest.approx(0.5 * 10 / 10)
    assert quantisation_headroom(dim=0, scale=1.0) == 0.0


def _clip(x, bound):
    n = np.linalg.norm(x)
    return x * min(1.0, bound / n) if n > 0 else x


@settings(max_examples=200, deadline=None)
@given(x=arrays(np.float64, st.integers(1, 200), elements=finite), c=st.floats(0.01, 5.0),
       scale=st.sampled_from([2.0**8, 2.0**12, 2.0**16]), bits=st.sampled_from([32, 64]),
       send=st.booleans())
def test_dp_encoding_of_a_vector_clipped_to_c_minus_h_has_norm_at_most_c(x, c, scale, bits, send):
    if c <= quantisation_headroom(dim=x.size, scale=scale):
        with pytest.raises(ValueError, match="headroom"):
            dp_clip_bound(clip_norm=c, dim=x.size, scale=scale)
        return
    bound = dp_clip_bound(clip_norm=c, dim=x.size, scale=scale)
    q = encode_dp(_clip(x, bound), count=send, clip=1.0, scale=scale, bits=bits)
    v = dequantize_sum(q, n=1, scale=scale, bits=bits)
    assert np.linalg.norm(v[:-1]) <= c * (1 + 1e-12)  # what is actually summed has sensitivity C
    assert v[-1] == pytest.approx(1.0 if send else 0.0, abs=0.5 / scale)


def test_dp_clip_bound_and_count_coordinate_by_hand():
    scale, c = 2.0**20, 1.0
    h = quantisation_headroom(dim=2, scale=scale)
    assert dp_clip_bound(clip_norm=c, dim=2, scale=scale) == c - h
    q = encode_dp(np.array([0.3, -0.4]), count=True, clip=1.0, scale=scale, bits=64)
    np.testing.assert_allclose(dequantize_sum(q, n=1, scale=scale, bits=64), [0.3, -0.4, 1.0], atol=0.5 / scale)
    q = encode_dp(np.array([0.3, -0.4]), count=False, clip=1.0, scale=scale, bits=64)
    assert dequantize_sum(q, n=1, scale=scale, bits=64)[-1] == 0.0


def test_dp_sum_through_the_protocol_decodes_sum_and_count():
    rng = np.random.default_rng(3)
    scale, c, d, n = 2.0**16, 0.5, 40, 12
    xs = [rng.normal(0, 0.1 * (1 + i % 3), size=d) for i in range(n)]
    bound = dp_clip_bound(clip_norm=c, dim=d, scale=scale)
    inputs = {i: encode_dp(_clip(x, bound), count=bool(np.linalg.norm(x) <= c), clip=1.0, scale=scale, bits=32)
              for i, x in enumerate(xs)}
    res = secure_sum(inputs, bits=32, threshold=6, k=None, seed=0)
    total, count = decode_dp(res.sum, n=n, clip=1.0, scale=scale, bits=32)
    ref = sum(_clip(x, bound) for x in xs)
    assert np.all(np.abs(total - ref) <= n * 0.5 / scale + 1e-12)
    assert count == sum(np.linalg.norm(x) <= c for x in xs)


@settings(max_examples=100, deadline=None)
@given(xs=st.lists(arrays(np.float64, 7, elements=st.floats(-2, 2)), min_size=1, max_size=6),
       ns=st.lists(st.integers(1, 100), min_size=6, max_size=6))
def test_weighted_encoding_decodes_the_weighted_mean(xs, ns):
    scale, clip = 2.0**20, 1.0
    weights = [n / max(ns[: len(xs)]) for n in ns[: len(xs)]]
    total = np.zeros(8, dtype=np.uint64)
    for x, w in zip(xs, weights):
        total += encode_weighted(x, weight=w, clip=clip, scale=scale, bits=64)[0]
    got = decode_weighted(total, n=len(xs), clip=clip, scale=scale, bits=64)
    ref = sum(w * np.clip(x, -clip, clip) for x, w in zip(xs, weights)) / sum(weights)
    # each rounded coordinate is off by <= 0.5/scale in the numerator and in the weight sum
    bound = len(xs) * 0.5 / scale * (1 + np.abs(ref)) / (sum(weights) - len(xs) * 0.5 / scale / clip)
    assert np.all(np.abs(got - ref) <= bound + 1e-12)


def test_bad_inputs_are_refused_with_the_value():
    with pytest.raises(ValueError, match="weight must be in"):
        encode_weighted(np.zeros(3), weight=-0.1, clip=1.0, scale=8.0, bits=32)
    with pytest.raises(ValueError, match="weight must be in"):
        encode_weighted(np.zeros(3), weight=1.5, clip=1.0, scale=8.0, bits=32)
    # FairFed can clamp a client's weight to 0: it then contributes nothing
    assert not encode_weighted(np.ones(3), weight=0.0, clip=1.0, scale=8.0, bits=32)[0].any()
    with pytest.raises(ValueError, match="1-D"):
        encode_dp(np.zeros((2, 2)), count=False, clip=1.0, scale=8.0, bits=32)
    with pytest.raises(ValueError, match="NaN"):
        encode_weighted(np.array([math.nan]), weight=1.0, clip=1.0, scale=8.0, bits=32)
    with pytest.raises(ValueError, match="non-positive weight sum"):
        decode_weighted(np.zeros(3, dtype=np.uint64), n=1, clip=1.0, scale=8.0, bits=32)
