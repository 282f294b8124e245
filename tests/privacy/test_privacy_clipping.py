import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.privacy import clip_by_norm


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 8),
    d=st.integers(1, 40),
    scale=st.floats(1e-3, 1e3),
    max_norm=st.floats(1e-3, 1e2),
    seed=st.integers(0, 2**31 - 1),
)
def test_clipped_norms_within_ball_and_inside_rows_unchanged(k, d, scale, max_norm, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(k, d, generator=g) * scale
    clipped, norms = clip_by_norm(u, max_norm=max_norm)
    assert clipped.shape == u.shape and clipped.dtype == u.dtype
    assert torch.allclose(norms, torch.linalg.vector_norm(u, dim=1))
    new_norms = torch.linalg.vector_norm(clipped.double(), dim=1)
    assert bool((new_norms <= max_norm * (1 + 1e-6)).all())
    inside = norms.double() <= max_norm
    assert torch.equal(clipped[inside], u[inside])
    # rows outside keep their direction and land on the sphere
    outside = ~inside
    if outside.any():
        assert torch.allclose(new_norms[outside], torch.full_like(new_norms[outside], max_norm), rtol=1e-5)
        cos = torch.nn.functional.cosine_similarity(clipped[outside].double(), u[outside].double(), dim=1)
        assert torch.allclose(cos, torch.ones_like(cos))


def test_hand_computed_case():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [0.0, -10.0]])
    clipped, norms = clip_by_norm(u, max_norm=1.0)
    assert torch.equal(norms, torch.tensor([5.0, 0.5, 0.0, 10.0]))
    expected = torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0], [0.0, -1.0]])
    assert torch.allclose(clipped, expected, atol=1e-7)
    assert torch.equal(clipped[1], u[1])  # inside the ball: bit-for-bit
    assert torch.equal(clipped[2], u[2])  # zero update stays zero


def test_infinite_norm_disables_clipping_and_input_not_mutated():
    u = torch.randn(4, 7) * 100
    before = u.clone()
    clipped, _ = clip_by_norm(u, max_norm=math.inf)
    assert torch.equal(clipped, u)
    clip_by_norm(u, max_norm=0.1)
    assert torch.equal(u, before)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_max_norm_named(bad):
    with pytest.raises(ValueError, match=f"max_norm.*{bad}"):
        clip_by_norm(torch.ones(2, 3), max_norm=bad)


def test_bad_updates():
    with pytest.raises(ValueError, match=r"\[k, d\].*\(3,\)"):
        clip_by_norm(torch.ones(3), max_norm=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        clip_by_norm(torch.tensor([[float("nan"), 1.0]]), max_norm=1.0)
    with pytest.raises(TypeError):
        clip_by_norm(torch.ones(2, 2), 1.0)  # keyword-only
