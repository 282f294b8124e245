"""Random-k: indices shared by the round, only values on the wire, linear (secagg)."""

import numpy as np
import pytest
import torch

from fedops.compress import CODECS


def _support(out):
    return torch.nonzero(out).squeeze(1).tolist()


def test_round_trip_and_payload_size(ctx_for):
    d, k = 100, 10
    codec = CODECS.build({"name": "randk", "k": k})
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    ctx = ctx_for(d)
    payload, state = codec.encode(x, ctx=ctx)
    assert state is None
    assert len(payload) == 16 + 4 * k  # header (dim, k, round) + float32 values, no indices
    out = codec.decode(payload, ctx=ctx)
    idx = codec.indices(ctx)
    assert len(idx) == k and len(set(idx.tolist())) == k and (np.diff(idx) > 0).all()
    mask = torch.zeros(d, dtype=torch.bool)
    mask[torch.from_numpy(idx.copy())] = True
    assert torch.equal(out[mask], x[mask])
    assert (out[~mask] == 0).all()


def test_clients_of_a_round_share_indices_rounds_differ(ctx_for):
    d = 1000
    codec = CODECS.build({"name": "randk", "fraction": 0.05})
    x = torch.randn(d) + 10  # no zeros, so the support is the index set
    outs = {}
    for r in (1, 2):
        for c in (0, 7):
            ctx = ctx_for(d, round_idx=r, client_id=c)
            outs[r, c] = _support(codec.decode(codec.encode(x, ctx=ctx)[0], ctx=ctx))
    assert outs[1, 0] == outs[1, 7] and len(outs[1, 0]) == 50
    assert outs[2, 0] == outs[2, 7]
    assert outs[1, 0] != outs[2, 0]
    assert codec.indices(ctx_for(d, seed=1)).tolist() != codec.indices(ctx_for(d, seed=0)).tolist()


def test_message_from_another_round_is_refused(ctx_for):
    codec = CODECS.build({"name": "randk", "k": 3})
    payload, _ = codec.encode(torch.randn(10), ctx=ctx_for(10, round_idx=4))
    with pytest.raises(ValueError, match="encoded for round 4, this is round 5"):
        codec.decode(payload, ctx=ctx_for(10, round_idx=5))
    with pytest.raises(ValueError, match=r"declares k=3, expected 2"):
        CODECS.build({"name": "randk", "k": 2}).decode(payload, ctx=ctx_for(10, round_idx=4))


@pytest.mark.parametrize("unbiased", [False, True])
def test_lift_of_summed_projections_equals_sum_of_decodes(unbiased, ctx_for):
    d = 300
    codec = CODECS.build({"name": "randk", "fraction": 0.1, "unbiased": unbiased})
    assert codec.secagg_compatible
    gen = torch.Generator().manual_seed(2)
    updates = [torch.randn(d, generator=gen) for _ in range(4)]
    ctxs = [ctx_for(d, round_idx=3, client_id=c) for c in range(4)]
    decoded = sum(codec.decode(codec.encode(u, ctx=c)[0], ctx=c) for u, c in zip(updates, ctxs))
    projected = sum(codec.project(u, ctx=c) for u, c in zip(updates, ctxs))
    assert projected.shape == (30,)
    assert torch.allclose(codec.lift(projected, ctx=ctx_for(d, round_idx=3, client_id=None)), decoded, atol=1e-6)


def test_unbiased_scaling(ctx_for):
    """unbiased: values scaled by d/k; the mean over many rounds approaches v. Per coordinate
    Var = v_i^2 (d/k - 1), so the mean of N rounds is within 6 |v_i| sqrt((d/k - 1) / N)."""
    d, k, n = 20, 5, 4000
    codec = CODECS.build({"name": "randk", "k": k, "unbiased": True})
    v = torch.linspace(-2, 2, d)
    ctx = ctx_for(d)
    out = codec.decode(codec.encode(v, ctx=ctx)[0], ctx=ctx)
    idx = torch.from_numpy(codec.indices(ctx).copy())
    assert torch.allclose(out[idx], v[idx] * d / k)
    total = torch.zeros(d, dtype=torch.float64)
    for r in range(n):
        c = ctx_for(d, round_idx=r)
        total += codec.decode(codec.encode(v, ctx=c)[0], ctx=c).double()
    assert ((total / n - v.double()).abs() <= 6 * v.double().abs() * ((d / k - 1) / n) ** 0.5 + 1e-9).all()
