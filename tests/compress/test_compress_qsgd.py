"""QSGD: stochastic unbiased quantisation with tightly packed codes."""

import math

import numpy as np
import pytest
import torch

from fedops.compress import CODECS
from fedops.compress.qsgd import levels


def _vec(d, seed=0):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 3, 4, 7, 8, 11, 16])
def test_round_trip_error_and_payload_size(bits, ctx_for):
    """Each coordinate lands on one of the two levels around it: |Q(v)_i - v_i| <= ||v|| / s."""
    d = 1001
    codec = CODECS.build({"name": "qsgd", "bits": bits})
    x = _vec(d)
    ctx = ctx_for(d)
    payload, state = codec.encode(x, ctx=ctx)
    assert state is None
    # 16-byte header, one float32 norm, d codes of `bits` bits
    assert len(payload) == 16 + 4 + math.ceil(d * bits / 8)
    out = codec.decode(payload, ctx=ctx)
    s = levels(bits)
    assert s == 2 ** (bits - 1) - 1
    assert ((out - x).abs() <= x.norm() / s * (1 + 1e-5)).all()
    assert (out * x >= 0).all()  # signs never flip
    # the decoded values are multiples of ||v|| / s
    lv = out.double() / x.norm().double() * s
    assert torch.allclose(lv, lv.round(), atol=1e-3)


def test_bits8_is_about_four_times_smaller(ctx_for):
    d = 100_000
    payload, _ = CODECS.build({"name": "qsgd", "bits": 8}).encode(_vec(d), ctx=ctx_for(d))
    assert len(payload) == 16 + 4 + d
    assert 4 * d / len(payload) >= 3.9


def test_one_bit_uses_a_level_bitmap_and_signs_of_the_non_zeros(ctx_for):
    d = 1000
    codec = CODECS.build({"name": "qsgd", "bits": 1})
    x = _vec(d)
    ctx = ctx_for(d)
    payload, _ = codec.encode(x, ctx=ctx)
    out = codec.decode(payload, ctx=ctx)
    nnz = int((out != 0).sum())
    assert len(payload) == 16 + 4 + math.ceil(d / 8) + math.ceil(nnz / 8)
    nz = out != 0
    assert torch.allclose(out[nz].abs(), x.norm().expand(nnz))
    assert (torch.sign(out[nz]) == torch.sign(x[nz])).all()


def test_buckets_carry_their_own_norms(ctx_for):
    d, bs = 25, 10
    codec = CODECS.build({"name": "qsgd", "bits": 4, "bucket_size": bs})
    x = _vec(d)
    x[10:20] *= 1000  # a loud middle bucket must not swamp the others
    ctx = ctx_for(d)
    payload, _ = codec.encode(x, ctx=ctx)
    assert len(payload) == 16 + 4 * 3 + math.ceil(d * 4 / 8)
    out = codec.decode(payload, ctx=ctx)
    for lo in range(0, d, bs):
        part = slice(lo, lo + bs)
        assert ((out[part] - x[part]).abs() <= x[part].norm() / 7 * (1 + 1e-5)).all()


def test_zero_vector_and_determinism(ctx_for):
    codec = CODECS.build({"name": "qsgd", "bits": 4})
    ctx = ctx_for(50)
    assert torch.equal(codec.decode(codec.encode(torch.zeros(50), ctx=ctx)[0], ctx=ctx), torch.zeros(50))
    x = _vec(50)
    a = codec.encode(x, ctx=ctx)[0]
    assert a == codec.encode(x, ctx=ctx)[0]  # same (seed, round, client): same draw
    assert a != codec.encode(x, ctx=ctx_for(50, client_id=1))[0]
    assert a != codec.encode(x, ctx=ctx_for(50, round_idx=2))[0]
    assert a != codec.encode(x, ctx=ctx_for(50, seed=1))[0]


@pytest.mark.parametrize("scale", [1e-44, 1e-30, 1e30])
def test_tiny_and_huge_norms(scale, ctx_for):
    codec = CODECS.build({"name": "qsgd", "bits": 4})
    x = torch.tensor([1.0, -0.5, 0.0, 0.25]) * scale
    ctx = ctx_for(4)
    out = codec.decode(codec.encode(x, ctx=ctx)[0], ctx=ctx)
    assert torch.isfinite(out).all()
    norm = float(x.double().norm())  # float32 squares would underflow
    assert ((out.double() - x.double()).abs() <= norm / 7 * (1 + 1e-5) + 1e-45).all()


def test_non_finite_deltas_and_bad_payload_fields_are_refused(ctx_for):
    codec = CODECS.build({"name": "qsgd", "bits": 8})
    ctx = ctx_for(10)
    with pytest.raises(ValueError, match="non-finite"):
        codec.encode(torch.tensor([1.0] * 9 + [float("nan")]), ctx=ctx)
    payload, _ = codec.encode(_vec(10), ctx=ctx)
    with pytest.raises(ValueError, match=r"bits=8, this run is configured with bits=4"):
        CODECS.build({"name": "qsgd", "bits": 4}).decode(payload, ctx=ctx)
    with pytest.raises(ValueError, match=r"bucket_size=0, expected 5"):
        CODECS.build({"name": "qsgd", "bits": 8, "bucket_size": 5}).decode(payload, ctx=ctx)
    negative_norm = payload[:16] + np.float32(-1).tobytes() + payload[20:]
    with pytest.raises(ValueError, match="negative or non-finite bucket norm"):
        codec.decode(negative_norm, ctx=ctx)


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
def test_unbiased_within_the_variance_bound(bits, ctx_for):
    """E[Q(v)] = v. Alistarh et al., Lemma 3.1: E||Q(v) - v||^2 <= B = min(d/s^2, sqrt(d)/s) ||v||^2.

    Over N independent draws (N clients x rounds, each its own stream) we check
    (1) the empirical mean of ||Q(v) - v||^2 is at most B (10% slack for the finite sample), and
    (2) the mean decode is close to v: E||mean - v||^2 = E||Q(v) - v||^2 / N <= B / N, so by
    Markov's inequality ||mean - v||^2 <= 4 B / N fails with probability <= 1/4 for an arbitrary
    seed (the streams here are fixed, so the test is deterministic), and we also require every
    coordinate's error to be under 6 standard deviations, Var(Q_i) <= ||v||^2 / (4 s^2).
    """
    d, n = 32, 4000
    s = levels(bits)
    codec = CODECS.build({"name": "qsgd", "bits": bits})
    v = _vec(d, seed=3).double()
    x = v.float()
    total = torch.zeros(d, dtype=torch.float64)
    sq_err = 0.0
    for i in range(n):
        ctx = ctx_for(d, round_idx=i // 100, client_id=i % 100, seed=5)
        q = codec.decode(codec.encode(x, ctx=ctx)[0], ctx=ctx).double()
        total += q
        sq_err += float(((q - v) ** 2).sum())
    bound = min(d / s**2, math.sqrt(d) / s) * float(v.norm()) ** 2
    assert sq_err / n <= 1.1 * bound
    mean = total / n
    assert float(((mean - v) ** 2).sum()) <= 4 * bound / n
    assert ((mean - v).abs() <= 6 * float(v.norm()) / (2 * s) / math.sqrt(n)).all()
