"""fp16: float16 values behind the 8-byte header."""

import torch

from fedops.compress import CODECS


def test_round_trip_within_half_precision(ctx_for):
    """Relative error <= 2**-11 (half an ulp of a 10-bit mantissa) for normal values, plus
    2**-25 absolute for subnormals (|x| < 2**-14)."""
    codec = CODECS.build({"name": "fp16"})
    x = torch.randn(5000, generator=torch.Generator().manual_seed(0)) * torch.logspace(-6, 3, 5000)
    ctx = ctx_for(5000)
    payload, state = codec.encode(x, ctx=ctx)
    assert state is None
    assert len(payload) == 8 + 2 * 5000
    out = codec.decode(payload, ctx=ctx)
    assert out.dtype == torch.float32
    assert ((out - x).abs() <= x.abs() * 2**-11 + 2**-25).all()


def test_out_of_range_values_saturate(ctx_for):
    codec = CODECS.build("fp16")
    x = torch.tensor([1e6, -1e6, float("inf"), -float("inf"), 65504.0, 1.0, float("nan")])
    out = codec.decode(codec.encode(x, ctx=ctx_for(7))[0], ctx=ctx_for(7))
    assert out[:6].tolist() == [65504.0, -65504.0, 65504.0, -65504.0, 65504.0, 1.0]
    assert torch.isnan(out[6])
