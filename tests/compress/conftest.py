"""Shared fixtures for the codec tests: contexts over flat or model layouts."""

import pytest

from fedops.compress.base import CodecContext
from fedops.types import ParamLayout, TensorSlot


def flat_layout(dim: int) -> ParamLayout:
    return ParamLayout((TensorSlot("w", (dim,), 0, dim),))


@pytest.fixture
def ctx_for():
    """``ctx_for(dim_or_layout, round_idx=1, client_id=0, seed=0)``."""

    def make(layout, *, round_idx=1, client_id=0, seed=0):
        if isinstance(layout, int):
            layout = flat_layout(layout)
        return CodecContext(round_idx=round_idx, client_id=client_id, seed=seed, layout=layout)

    return make
