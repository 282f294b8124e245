"""The shared framing: header, bit packing, and the rejection of malformed payloads by every codec."""

import struct

import numpy as np
import pytest
import torch

from fedops.compress import CODECS, wire
from fedops.compress.base import CodecContext
from fedops.types import ParamLayout, TensorSlot

CONFIGS = [
    {"name": "fp16"},
    {"name": "qsgd", "bits": 8},
    {"name": "qsgd", "bits": 3, "bucket_size": 16},
    {"name": "qsgd", "bits": 1},
    {"name": "topk", "k": 7},
    {"name": "randk", "fraction": 0.25},
    {"name": "rpn"},
]
IDS = [",".join(f"{k}={v}" for k, v in c.items()) for c in CONFIGS]

# a layout with one 3x3 conv kernel tensor, so that RPN actually pools something
LAYOUT = ParamLayout((TensorSlot("conv.weight", (2, 2, 3, 3), 0, 36), TensorSlot("conv.bias", (2,), 36, 2),
                      TensorSlot("fc.weight", (3, 20), 38, 60)))
DIM = LAYOUT.size


def _ctx(layout=LAYOUT, round_idx=1):
    return CodecContext(round_idx=round_idx, client_id=4, seed=11, layout=layout)


def _payload(spec):
    x = torch.randn(DIM, generator=torch.Generator().manual_seed(0))
    payload, _ = CODECS.build(spec).encode(x, ctx=_ctx())
    return payload


def reference_pack(codes, bits):
    """Bit-by-bit LSB-first stream, the definition pack_uint implements."""
    acc = 0
    for i, c in enumerate(codes):
        acc |= int(c) << (i * bits)
    return acc.to_bytes((len(codes) * bits + 7) // 8, "little")


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_uint_matches_the_bit_stream_definition_and_round_trips(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 9, 61):
        codes = rng.integers(0, 2**bits, n).astype(np.uint16 if bits > 8 else np.uint8)
        packed = wire.pack_uint(codes, bits)
        assert packed == reference_pack(codes, bits)
        assert len(packed) == wire.packed_size(n, bits) == -(-n * bits // 8)
        back = wire.unpack_uint(np.frombuffer(packed, np.uint8), bits, n)
        np.testing.assert_array_equal(back, codes)


def test_header_layout():
    h = wire.header(wire.TAG_TOPK, 1000, "I", 10)
    assert len(h) == wire.header_size("I") == 12
    assert h[:2] == b"FZ" and h[2] == wire.TAG_TOPK and h[3] == wire.VERSION
    assert struct.unpack("<II", h[4:]) == (1000, 10)


@pytest.mark.parametrize("spec", CONFIGS, ids=IDS)
def test_every_codec_round_trips_through_its_own_payload(spec):
    codec = CODECS.build(spec)
    out = codec.decode(_payload(spec), ctx=_ctx())
    assert out.dtype == torch.float32 and out.shape == (DIM,)


@pytest.mark.parametrize("spec", CONFIGS, ids=IDS)
@pytest.mark.parametrize(
    "garble, match",
    [
        (lambda p: p[:-1], r"truncated|bytes"),
        (lambda p: p + b"\0", r"trailing"),
        (lambda p: p[:5], r"shorter than its"),
        (lambda p: b"", r"shorter than its"),
        (lambda p: b"XX" + p[2:], r"bad magic b'XX'"),
        (lambda p: p[:3] + bytes([9]) + p[4:], r"format version 9"),
        (lambda p: p[:2] + bytes([42]) + p[3:], r"codec tag 42"),
    ],
    ids=["truncated", "trailing", "short-header", "empty", "magic", "version", "tag"],
)
def test_garbled_payloads_are_refused_with_a_reason(spec, garble, match):
    codec = CODECS.build(spec)
    with pytest.raises(ValueError, match=match):
        codec.decode(garble(_payload(spec)), ctx=_ctx())


@pytest.mark.parametrize("spec", CONFIGS, ids=IDS)
def test_wrong_dimension_is_refused(spec):
    other = ParamLayout(LAYOUT.slots + (TensorSlot("extra", (5,), DIM, 5),))
    with pytest.raises(ValueError, match=rf"declares dim {DIM}, but the model has {DIM + 5}"):
        CODECS.build(spec).decode(_payload(spec), ctx=_ctx(other))


@pytest.mark.parametrize("spec", CONFIGS, ids=IDS)
def test_another_codecs_payload_is_refused(spec):
    foreign = {"name": "fp16"} if spec["name"] != "fp16" else {"name": "rpn"}
    with pytest.raises(ValueError, match=r"carries codec tag \d+ \(\w+\), expected"):
        CODECS.build(spec).decode(_payload(foreign), ctx=_ctx())


@pytest.mark.parametrize("spec", CONFIGS, ids=IDS)
def test_encode_checks_the_delta_length_and_leaves_it_untouched(spec):
    codec = CODECS.build(spec)
    with pytest.raises(ValueError, match=f"{DIM - 1} values, the layout has {DIM}"):
        codec.encode(torch.zeros(DIM - 1), ctx=_ctx())
    x = torch.randn(DIM)
    before = x.clone()
    codec.encode(x, ctx=_ctx())
    assert torch.equal(x, before)


def test_none_codec_still_works():
    codec = CODECS.build("none")
    x = torch.randn(DIM)
    payload, _ = codec.encode(x, ctx=_ctx())
    assert len(payload) == 4 * DIM and torch.equal(codec.decode(payload, ctx=_ctx()), x)


def test_none_codec_payload_is_a_read_only_view_of_the_update():
    codec = CODECS.build("none")
    x = torch.randn(DIM)
    payload, _ = codec.encode(x, ctx=_ctx())
    assert payload.readonly and bytes(payload) == x.numpy().astype("<f4").tobytes()
    assert np.shares_memory(np.frombuffer(payload, dtype=np.uint8), x.numpy())  # no copy of the update
    with pytest.raises(TypeError):
        payload[0] = 1
    # a float64 or strided vector is converted: the payload is its own float32 copy
    y = torch.randn(2 * DIM, dtype=torch.float64)[::2]
    p64, _ = codec.encode(y, ctx=_ctx())
    assert not np.shares_memory(np.frombuffer(p64, dtype=np.uint8), y.numpy())
    assert torch.equal(codec.decode(p64, ctx=_ctx()), y.float())
    # the server's decode copies it: the decoded vector is independent of the client's memory
    out = codec.decode(payload, ctx=_ctx())
    x.zero_()
    assert not torch.equal(out, x)
