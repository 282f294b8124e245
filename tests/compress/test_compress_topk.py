"""Top-k: exactly the k largest magnitudes (ties to the lower index), and error feedback."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.compress import CODECS
from fedops.compress.base import CodecContext
from fedops.types import ParamLayout, TensorSlot
from fedops.compress.topk import topk_indices


def flat_layout(d):
    return ParamLayout((TensorSlot("w", (d,), 0, d),))


def reference_topk(values, k):
    """Sort by (-|v|, index): the k first, i.e. largest magnitudes with ties to the lower index."""
    order = sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))
    return sorted(order[:k])


def test_round_trip_and_payload_size(ctx_for):
    d, k = 100, 10
    codec = CODECS.build({"name": "topk", "k": k, "value_bits": 32})
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    ctx = ctx_for(d)
    payload, state = codec.encode(x, ctx=ctx)
    assert state is None
    assert len(payload) == 14 + 13 + k * 4  # header + bitmap ceil(100/8) (< 4k) + float32 values
    half = CODECS.build({"name": "topk", "k": k})
    half_payload, _ = half.encode(x, ctx=ctx)
    assert len(half_payload) == 14 + 13 + k * 2  # default float16 values
    sent = half.decode(half_payload, ctx=ctx)
    assert torch.allclose(sent, x * (sent != 0), rtol=2**-11)
    big = CODECS.build({"name": "topk", "k": 2, "value_bits": 32})
    assert len(big.encode(x, ctx=ctx)[0]) == 14 + 2 * 4 + 2 * 4  # uint32 indices when smaller than the bitmap
    out = codec.decode(payload, ctx=ctx)
    kept = reference_topk(x.tolist(), k)
    mask = torch.zeros(d, dtype=torch.bool)
    mask[kept] = True
    assert torch.equal(out[mask], x[mask])  # exact on the kept coordinates
    assert (out[~mask] == 0).all()


@pytest.mark.parametrize("fraction, d, k", [(0.1, 1000, 100), (0.01, 50, 1), (1.0, 7, 7), (0.5, 9, 4)])
def test_k_from_fraction(fraction, d, k):
    # k = max(1, round(fraction * d)) (Python's round: 4.5 -> 4)
    assert CODECS.build({"name": "topk", "fraction": fraction}).count(d) == k


def test_k_is_capped_at_dim(ctx_for):
    codec = CODECS.build({"name": "topk", "k": 50, "value_bits": 32})
    x = torch.randn(20)
    payload, _ = codec.encode(x, ctx=ctx_for(20))
    assert len(payload) == 14 + 3 + 4 * 20
    assert torch.equal(codec.decode(payload, ctx=ctx_for(20)), x)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(st.integers(-3, 3).map(float),
                              st.floats(allow_nan=False, allow_infinity=False, width=32)), min_size=1, max_size=60),
    data=st.data(),
)
def test_keeps_exactly_the_k_largest_magnitudes(values, data):
    """Property against a sorting reference; the small integers make ties (and +-0) common."""
    k = data.draw(st.integers(1, len(values)))
    a = np.abs(np.asarray(values, dtype=np.float32))
    idx = topk_indices(a, k)
    assert idx.tolist() == reference_topk(np.asarray(values, dtype=np.float32).tolist(), k)
    # and through the codec: exact values on those coordinates, zeros elsewhere
    x = torch.tensor(values, dtype=torch.float32)
    ctx = CodecContext(round_idx=1, client_id=0, seed=0, layout=flat_layout(len(values)))
    codec = CODECS.build({"name": "topk", "k": k, "value_bits": 32})
    out = codec.decode(codec.encode(x, ctx=ctx)[0], ctx=ctx)
    expected = torch.zeros_like(x)
    expected[idx] = x[idx]
    assert torch.equal(out, expected)


def test_ties_go_to_the_lower_index(ctx_for):
    codec = CODECS.build({"name": "topk", "k": 3})
    x = torch.tensor([1.0, -2.0, 2.0, 0.5, -2.0, 2.0])
    out = codec.decode(codec.encode(x, ctx=ctx_for(6))[0], ctx=ctx_for(6))
    assert out.tolist() == [0.0, -2.0, 2.0, 0.0, -2.0, 0.0]


def test_bad_payload_fields_are_refused(ctx_for):
    codec = CODECS.build({"name": "topk", "k": 3})
    ctx = ctx_for(100)
    payload, _ = codec.encode(torch.arange(100.0), ctx=ctx)  # indices 97, 98, 99 as a uint32 list
    with pytest.raises(ValueError, match=r"declares k=3, expected 4"):
        CODECS.build({"name": "topk", "k": 4}).decode(payload, ctx=ctx)
    with pytest.raises(ValueError, match=r"declares 16-bit values, expected 32"):
        CODECS.build({"name": "topk", "k": 3, "value_bits": 32}).decode(payload, ctx=ctx)
    idx = np.frombuffer(payload[14:26], "<u4").copy()
    idx[2] = 100
    with pytest.raises(ValueError, match=r"index 100 out of range for dim 100"):
        codec.decode(payload[:14] + idx.tobytes() + payload[26:], ctx=ctx)
    idx[2] = 98
    with pytest.raises(ValueError, match="not strictly increasing"):
        codec.decode(payload[:14] + idx.tobytes() + payload[26:], ctx=ctx)
    small = ctx_for(10)
    payload, _ = codec.encode(torch.arange(10.0), ctx=small)  # a 2-byte bitmap
    bitmap = bytearray(payload)
    bitmap[14] |= 0x01  # a fourth bit
    with pytest.raises(ValueError, match="4 bits set, expected k=3"):
        codec.decode(bytes(bitmap), ctx=small)
    with pytest.raises(ValueError, match="non-finite"):
        codec.encode(torch.tensor([1.0, float("inf")] + [0.0] * 8), ctx=small)


def test_stateful_reflects_error_feedback(ctx_for):
    plain = CODECS.build({"name": "topk", "k": 2})
    ef = CODECS.build({"name": "topk", "k": 2, "error_feedback": True})
    assert plain.stateful is False and ef.stateful is True
    with pytest.raises(ValueError, match="error_feedback is off"):
        plain.encode(torch.ones(5), ctx=ctx_for(5), state=torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        ef.encode(torch.ones(5), ctx=ctx_for(5), state=torch.zeros(4))


def test_error_feedback_state_crosses_the_round_boundary(ctx_for):
    codec = CODECS.build({"name": "topk", "k": 1, "error_feedback": True})
    d1 = torch.tensor([3.0, 2.0, 0.0])
    p1, r1 = codec.encode(d1, ctx=ctx_for(3, round_idx=1), state=None)  # first round: no residual
    assert codec.decode(p1, ctx=ctx_for(3)).tolist() == [3.0, 0.0, 0.0]
    assert r1.tolist() == [0.0, 2.0, 0.0]
    d2 = torch.tensor([0.0, 0.0, 1.5])
    fresh, _ = codec.encode(d2, ctx=ctx_for(3, round_idx=2), state=None)
    p2, r2 = codec.encode(d2, ctx=ctx_for(3, round_idx=2), state=r1)
    assert codec.decode(fresh, ctx=ctx_for(3)).tolist() == [0.0, 0.0, 1.5]
    assert codec.decode(p2, ctx=ctx_for(3)).tolist() == [0.0, 2.0, 0.0]  # the residual wins
    assert r2.tolist() == [0.0, 0.0, 1.5]
    assert r1.tolist() == [0.0, 2.0, 0.0]  # the caller's state is not modified


def test_error_feedback_conserves_mass_per_client(ctx_for):
    """Over R rounds: sum of what the server decoded + the final residual == sum of the raw deltas."""
    d, rounds = 500, 6
    codec = CODECS.build({"name": "topk", "fraction": 0.05, "error_feedback": True})
    gen = torch.Generator().manual_seed(1)
    for client in range(3):
        state, sent, raw = None, torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        for r in range(1, rounds + 1):
            delta = torch.randn(d, generator=gen)
            ctx = ctx_for(d, round_idx=r, client_id=client)
            payload, state = codec.encode(delta, ctx=ctx, state=state)
            sent += codec.decode(payload, ctx=ctx).double()
            raw += delta.double()
            assert len(payload) == 14 + 63 + 2 * 25  # bitmap of 500 bits, 25 float16 values
        assert torch.allclose(sent + state.double(), raw, atol=1e-5)
        assert state.abs().sum() > 0  # something is still held back
