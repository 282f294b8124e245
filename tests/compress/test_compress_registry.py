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
