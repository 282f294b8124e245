"""Codec registration, capability flags, and hyperparameter validation."""

import pytest
import torch
from pydantic import ValidationError

from fedops.compress import CODECS


def test_all_codecs_registered_with_their_flags():
    assert {"none", "fp16", "qsgd", "topk", "randk", "rpn"} <= set(CODECS.keys())
    flags = {key: CODECS.build(spec).secagg_compatible for key, spec in [
        ("fp16", "fp16"), ("qsgd", "qsgd"), ("topk", {"name": "topk", "k": 1}),
        ("randk", {"name": "randk", "k": 1}), ("rpn", "rpn")]}
    assert flags == {"fp16": False, "qsgd": False, "topk": False, "randk": True, "rpn": True}
    assert CODECS.build("qsgd").bits == 8 and CODECS.build("qsgd").bucket_size is None


@pytest.mark.parametrize("spec, match", [
    ({"name": "qsgd", "bits": 0}, "greater than or equal to 1"),
    ({"name": "qsgd", "bits": 17}, "less than or equal to 16"),
    ({"name": "qsgd", "bucket_size": 0}, "greater than or equal to 1"),
    ({"name": "topk", "fraction": 0}, "greater than 0"),
    ({"name": "topk", "fraction": 1.5}, "less than or equal to 1"),
    ({"name": "topk", "k": 0}, "greater than or equal to 1"),
    ({"name": "topk"}, "exactly one of 'fraction' and 'k'"),
    ({"name": "topk", "fraction": 0.1, "k": 5}, "exactly one of 'fraction' and 'k'"),
    ({"name": "randk", "fraction": 0}, "greater than 0"),
    ({"name": "randk", "fraction": 1.5}, "less than or equal to 1"),
    ({"name": "randk"}, "exactly one of 'fraction' and 'k'"),
    ({"name": "randk", "fraction": 0.1, "k": 5}, "exactly one of 'fraction' and 'k'"),
    ({"name": "fp16", "bits": 8}, "Extra inputs are not permitted"),
    ({"name": "rpn", "ratio": 2}, "Extra inputs are not permitted"),
])
def test_bad_hyperparameters_are_refused(spec, match):
    with pytest.raises(ValidationError, match=match):
        CODECS.build(spec)
    assert issubclass(ValidationError, ValueError)


@pytest.mark.parametrize("spec", ["fp16", "qsgd", {"name": "topk", "k": 1}])
def test_non_linear_codecs_have_no_projection(spec, ctx_for):
    codec = CODECS.build(spec)
    with pytest.raises(NotImplementedError, match="secure aggregation"):
        codec.project(torch.zeros(4), ctx=ctx_for(4))
    assert codec.encode_download(torch.zeros(4), ctx=ctx_for(4)) is None


@pytest.mark.parametrize("spec", ["none", "fp16", "qsgd", {"name": "topk", "k": 5}, {"name": "randk", "k": 5}])
def test_decode_into_a_stack_row_equals_decode(spec, ctx_for):
    """The server decodes each payload straight into its row of the round's stack: the row holds
    what ``decode`` returns (as float32), the other rows are untouched, and a payload of the wrong
    length is refused with the same ``ValueError`` as ``decode``'s, leaving the row to reuse."""
    codec, ctx = CODECS.build(spec), ctx_for(37)
    delta = torch.randn(37, generator=torch.Generator().manual_seed(5))
    payload, _ = codec.encode(delta, ctx=ctx)
    stack = torch.full((3, 37), 7.0)
    codec.decode_into(payload, ctx=ctx, out=stack[1])
    assert torch.equal(stack[1], codec.decode(payload, ctx=ctx).to(torch.float32))
    assert bool((stack[0] == 7.0).all()) and bool((stack[2] == 7.0).all())
    other, _ = codec.encode(torch.randn(36), ctx=ctx_for(36))
    with pytest.raises(ValueError):
        codec.decode(other, ctx=ctx)
    with pytest.raises(ValueError):
        codec.decode_into(other, ctx=ctx, out=stack[2])
