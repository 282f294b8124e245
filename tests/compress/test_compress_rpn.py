"""RPN: spatial mean-pooling of convolution kernels, broadcast back on the other side."""

import pytest
import torch

from fedops.compress import CODECS
from fedops.compress.rpn import lift, pool, pooled_size
from fedops.models import MODELS
from fedops.types import ParamLayout, TensorSlot


def _layout(*shapes):
    slots, off = [], 0
    for i, shape in enumerate(shapes):
        n = 1
        for s in shape:
            n *= s
        slots.append(TensorSlot(f"t{i}.weight", tuple(shape), off, n))
        off += n
    return ParamLayout(tuple(slots))


MIXED = _layout((1, 1, 2, 2), (2, 1, 3, 3), (2,), (3, 2), (2, 2, 1, 1), (2, 1, 3), (4,))


def test_pooled_kernels_by_hand():
    x = torch.cat([
        torch.tensor([1.0, 2.0, 3.0, 4.0]),  # 2x2 kernel -> 2.5
        torch.arange(18.0),  # two 3x3 kernels 0..8, 9..17 -> 4, 13
        torch.tensor([-1.0, 1.0]),  # bias: as is
        torch.arange(6.0) * 10,  # linear: as is
        torch.tensor([5.0, 6.0, 7.0, 8.0]),  # 1x1 conv: as is
        torch.tensor([0.0, 3.0, 6.0, 1.0, 1.0, 4.0]),  # conv1d k=3 -> 3, 2
        torch.tensor([9.0, 8.0, 7.0, 6.0]),
    ])
    assert x.numel() == MIXED.size == 4 + 18 + 2 + 6 + 4 + 6 + 4
    p = pool(x, MIXED)
    expected = [2.5, 4.0, 13.0, -1.0, 1.0, 0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 5.0, 6.0, 7.0, 8.0, 3.0, 2.0,
                9.0, 8.0, 7.0, 6.0]
    assert p.tolist() == expected
    assert pooled_size(MIXED) == len(expected) == p.numel()
    up = lift(p, MIXED)
    assert up.shape == (MIXED.size,)
    assert MIXED.view(up, "t0.weight").tolist() == [[[[2.5, 2.5], [2.5, 2.5]]]]
    assert torch.equal(MIXED.view(up, "t1.weight")[1], torch.full((1, 3, 3), 13.0))
    assert torch.equal(MIXED.view(up, "t3.weight"), MIXED.view(x, "t3.weight"))
    assert MIXED.view(up, "t5.weight").tolist() == [[[3.0, 3.0, 3.0]], [[2.0, 2.0, 2.0]]]


def test_pool_of_lift_is_the_identity_exactly():
    layout = _layout((8, 3, 3, 3), (8,), (16, 8, 5, 5), (10, 7), (4, 2, 7))
    p = torch.randn(pooled_size(layout), generator=torch.Generator().manual_seed(0)) * 1e3
    assert torch.equal(pool(lift(p, layout), layout), p)


def test_round_trip_payload_and_download(ctx_for):
    codec = CODECS.build({"name": "rpn"})
    x = torch.randn(MIXED.size)
    ctx = ctx_for(MIXED)
    payload, state = codec.encode(x, ctx=ctx)
    assert state is None
    assert len(payload) == 12 + 4 * pooled_size(MIXED)
    assert torch.equal(codec.decode(payload, ctx=ctx), lift(pool(x, MIXED), MIXED))
    down = codec.encode_download(x, ctx=ctx_for(MIXED, client_id=None))
    assert down == payload
    assert torch.equal(codec.decode_download(down, ctx=ctx), codec.decode(payload, ctx=ctx))


def test_layout_mismatch_is_refused(ctx_for):
    codec = CODECS.build("rpn")
    payload, _ = codec.encode(torch.randn(MIXED.size), ctx=ctx_for(MIXED))
    flat = _layout((MIXED.size,))  # same dim, nothing to pool
    with pytest.raises(ValueError, match=rf"declares {pooled_size(MIXED)} pooled values, the layout pools to {MIXED.size}"):
        codec.decode(payload, ctx=ctx_for(flat))


def test_mnist_cnn_sends_1183242_floats(ctx_for):
    model = MODELS.build({"name": "mnist_cnn"}).build(input_shape=(1, 28, 28), num_classes=10, seed=0)
    layout = ParamLayout.from_module(model)
    assert layout.size == 1_199_882
    assert pooled_size(layout) == 1_183_242 == 1_199_882 - 2_080 * 8
    payload, _ = CODECS.build("rpn").encode(torch.zeros(layout.size), ctx=ctx_for(layout))
    assert len(payload) == 12 + 4 * 1_183_242


def test_secagg_lift_of_summed_projections(ctx_for):
    codec = CODECS.build("rpn")
    assert codec.secagg_compatible
    ctx = ctx_for(MIXED)
    us = [torch.randn(MIXED.size) for _ in range(3)]
    decoded = sum(codec.decode(codec.encode(u, ctx=ctx)[0], ctx=ctx) for u in us)
    assert torch.allclose(codec.lift(sum(codec.project(u, ctx=ctx) for u in us), ctx=ctx), decoded, atol=1e-6)


def test_lemma2_clients_recover_the_global_model(ctx_for):
    """3 rounds x 3 clients on a small CNN: the server keeps M_t = M_{t-1} + lift(mean pooled
    residual); each client rebuilds M_0 + sum_t lift(aggregate_t) from the pooled broadcasts."""
    model = MODELS.build({"name": "small_cnn"}).build(input_shape=(1, 28, 28), num_classes=10, seed=0)
    layout = ParamLayout.from_module(model)
    codec = CODECS.build("rpn")
    m0 = layout.flatten(model)
    server = m0.clone()
    broadcasts = []
    gen = torch.Generator().manual_seed(4)
    for r in range(1, 4):
        uploads = []
        for c in range(3):
            residual = torch.randn(layout.size, generator=gen) * 0.01
            uploads.append(codec.encode(residual, ctx=ctx_for(layout, round_idx=r, client_id=c))[0])
        server_ctx = ctx_for(layout, round_idx=r, client_id=None)
        decoded = torch.stack([codec.decode(p, ctx=server_ctx) for p in uploads])
        global_delta = decoded.mean(0)  # = lift(mean of the pooled residuals)
        assert torch.allclose(global_delta, lift(torch.stack([pool(d, layout) for d in decoded]).mean(0), layout),
                              atol=1e-7)
        server = server + global_delta
        broadcasts.append(codec.encode_download(global_delta, ctx=server_ctx))
    assert all(len(b) == 12 + 4 * pooled_size(layout) for b in broadcasts)
    for c in range(3):
        recovered = m0.clone()
        for r, b in enumerate(broadcasts, start=1):
            recovered = recovered + codec.decode_download(b, ctx=ctx_for(layout, round_idx=r, client_id=c))
        assert torch.allclose(recovered, server, atol=1e-7, rtol=0)
    # and the pooled coordinates of the recovered model follow the broadcast exactly
    assert not torch.equal(server, m0)
