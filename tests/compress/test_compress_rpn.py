"""RPN: spatial mean-pooling of convolution kernels, broadcast back on the other side."""

import math

import pytest
import torch

from fedops.compress import CODECS
from fedops.compress.base import CodecContext
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


# --- per-filter selection: unpooled_filters ---------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fedops.compress.rpn import conv_filters, filters_size, pooling_loss, select_filters, unpooled_counts  # noqa: E402

SELECT = _layout((2, 1, 2, 2), (2,), (4, 2, 3))


def test_unpooled_filters_by_hand(ctx_for):
    """Half of each convolution's filters go whole: those whose residual pooling changes most."""
    x = torch.tensor([
        1.0, 1.0, 1.0, 1.0,  0.0, 2.0, 0.0, 2.0,  # t0: filter 0 constant (loss 0), filter 1 loss 4
        5.0, 6.0,  # bias
        0, 0, 0, 1, 1, 1,  # t2 filter 0: loss 0
        0, 3, 0, 0, 0, 0,  # filter 1: loss 6
        1, 2, 3, 0, 0, 0,  # filter 2: loss 2
        0, 0, 6, 3, 0, 0,  # filter 3: loss 24 + 6 = 30
    ])
    assert conv_filters(SELECT) == 6 and unpooled_counts(SELECT, 0.5) == (1, 2)
    assert pooling_loss(x, SELECT).tolist() == [0.0, 4.0, 0.0, 6.0, 2.0, 30.0]
    mask = select_filters(x, SELECT, fraction=0.5)
    assert mask.tolist() == [False, True, False, True, False, True]
    assert filters_size(SELECT, mask) == 23  # 1 mean + 4 | 2 | 2 + 2 means + 2 x 6 values
    codec = CODECS.build({"name": "rpn", "unpooled_filters": 0.5})
    payload, state = codec.encode(x, ctx=ctx_for(SELECT))
    assert state is None
    assert len(payload) == 16 + 1 + 4 * 23  # header, one bitmap byte for 6 filters, the values
    out = codec.decode(payload, ctx=ctx_for(SELECT))
    expected = x.clone()
    expected[22:28] = torch.tensor([2.0, 2.0, 2.0, 0.0, 0.0, 0.0])  # filter 2 of t2 pooled
    assert torch.equal(out, expected)  # the others were constant already or went whole


def _reference_mask(x, layout, fraction):
    """A filter-by-filter loop over the tensors: the m largest pooling losses, ties to the lower index."""
    mask = []
    for slot in layout.slots:
        if len(slot.shape) < 3 or math.prod(slot.shape[2:]) <= 1:
            continue
        w = x[slot.offset: slot.offset + slot.numel].double().reshape(slot.shape[0], slot.shape[1], -1)
        losses = [float(((f - f.mean(dim=1, keepdim=True)) ** 2).sum()) for f in w]
        m = min(len(losses), max(1, round(fraction * len(losses))))
        keep = set(sorted(range(len(losses)), key=lambda i: (-losses[i], i))[:m])
        mask += [i in keep for i in range(len(losses))]
    return mask


def _exact_selection(x, layout, fraction, mask):
    """Per convolution tensor: the chosen filters, every filter's exact pooling loss (integer
    values: sum v^2 - (sum v)^2 / k as a Fraction) and how many to choose."""
    from fractions import Fraction

    out, start = [], 0
    for slot in layout.slots:
        if len(slot.shape) < 3 or math.prod(slot.shape[2:]) <= 1:
            continue
        w = x[slot.offset: slot.offset + slot.numel].reshape(slot.shape[0], slot.shape[1], -1)
        losses = [sum(sum(Fraction(int(v)) ** 2 for v in kern) - Fraction(int(sum(kern)) ** 2, len(kern))
                      for kern in f.tolist()) for f in w]
        m = min(len(losses), max(1, round(fraction * len(losses))))
        chosen = {i for i in range(len(losses)) if mask[start + i]}
        out.append((chosen, losses, m))
        start += len(losses)
    return out


@settings(max_examples=40, deadline=None)
@given(fraction=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_unpooled_filters_match_a_filter_by_filter_reference(fraction, seed, ties):
    layout = _layout((8, 3, 3, 3), (8,), (5, 8, 2, 2), (10, 7), (3, 2, 5), (4, 4, 1, 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(layout.size, generator=g)
    if ties:  # integer residuals: equal pooling losses are common
        x = torch.randint(-2, 3, (layout.size,), generator=g).float()
    mask = select_filters(x, layout, fraction=fraction)
    if not ties:
        assert mask.tolist() == _reference_mask(x, layout, fraction)
    else:  # exact ties: any m filters with the largest exact losses (float rounding may order equal ones)
        for chosen, losses, m in _exact_selection(x, layout, fraction, mask):
            assert len(chosen) == m
            rest = [loss for i, loss in enumerate(losses) if i not in chosen]
            assert not rest or min(losses[i] for i in chosen) >= max(rest)
    ctx = CodecContext(round_idx=1, client_id=0, seed=0, layout=layout)
    codec = CODECS.build({"name": "rpn", "unpooled_filters": fraction})
    payload, _ = codec.encode(x, ctx=ctx)
    assert len(payload) == 16 + (conv_filters(layout) + 7) // 8 + 4 * filters_size(layout, mask)
    out = codec.decode(payload, ctx=ctx)
    # whole filters and other tensors arrive exactly; pooled filters as their kernels' means
    pooled = lift(pool(x, layout), layout)
    start = 0
    exact = torch.ones(layout.size, dtype=torch.bool)
    for slot in layout.slots[:5:2]:  # the three pooled convolution tensors
        per_filter = slot.numel // slot.shape[0]
        for f in range(slot.shape[0]):
            if not mask[start + f]:
                exact[slot.offset + f * per_filter: slot.offset + (f + 1) * per_filter] = False
        start += slot.shape[0]
    assert torch.equal(out[exact], x[exact])
    assert torch.equal(out[~exact], pooled[~exact])


def test_all_filters_unpooled_is_lossless(ctx_for):
    x = torch.randn(MIXED.size)
    codec = CODECS.build({"name": "rpn", "unpooled_filters": 1.0})
    assert torch.equal(codec.decode(codec.encode(x, ctx=ctx_for(MIXED))[0], ctx=ctx_for(MIXED)), x)


def test_mnist_cnn_with_a_quarter_of_the_filters_whole(ctx_for):
    model = MODELS.build({"name": "mnist_cnn"}).build(input_shape=(1, 28, 28), num_classes=10, seed=0)
    layout = ParamLayout.from_module(model)
    assert unpooled_counts(layout, 0.25) == (8, 16)
    payload, _ = CODECS.build({"name": "rpn", "unpooled_filters": 0.25}).encode(
        torch.randn(layout.size), ctx=ctx_for(layout))
    # 8 conv1 filters of 1 kernel and 16 conv2 filters of 32 kernels add 8 values per kernel
    assert len(payload) == 16 + 96 // 8 + 4 * (1_183_242 + 8 * (8 * 1 + 16 * 32))


def test_unpooled_filters_refusals(ctx_for):
    codec = CODECS.build({"name": "rpn", "unpooled_filters": 0.5})
    ctx = ctx_for(SELECT)
    assert not codec.secagg_compatible and CODECS.build("rpn").secagg_compatible
    with pytest.raises(NotImplementedError, match="each client picks its own filters"):
        codec.project(torch.zeros(SELECT.size), ctx=ctx)
    assert codec.encode_download(torch.zeros(SELECT.size), ctx=ctx) is None  # the model goes as float32
    plain, _ = CODECS.build("rpn").encode(torch.zeros(SELECT.size), ctx=ctx)
    with pytest.raises(ValueError, match=r"codec tag 5 \(rpn\), expected 6 \(rpn with unpooled filters\)"):
        codec.decode(plain, ctx=ctx)
    payload, _ = codec.encode(torch.arange(float(SELECT.size)), ctx=ctx)
    bitmap = payload[16]
    assert bitmap & 0b11 == 0b01  # equal losses in t0 (arange): the lower filter goes whole
    with pytest.raises(ValueError, match="declares 3 whole filters, its bitmap has 4"):
        codec.decode(payload[:16] + bytes([bitmap | 0b10]) + payload[17:], ctx=ctx)
    t2_bit = next(b for b in range(2, 6) if bitmap >> b & 1)
    with pytest.raises(ValueError, match="sends 2 whole filters of convolution tensor 0, expected 1"):
        codec.decode(payload[:16] + bytes([(bitmap | 0b10) & ~(1 << t2_bit)]) + payload[17:], ctx=ctx)
    with pytest.raises(ValueError, match="beyond the layout's 6 filters"):
        codec.decode(payload[:16] + bytes([payload[16] | 0b1000000]) + payload[17:], ctx=ctx)
    bad = torch.zeros(SELECT.size)
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        codec.encode(bad, ctx=ctx)
