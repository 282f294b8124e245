"""Feature-skew partitioner metadata and apply_feature_transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedops.partition import apply_feature_transform, partition_labels


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_noise_meta_ramps_from_zero_to_max():
    spec = {"name": "feature_skew", "kind": "noise", "max_noise_std": 0.4}
    part = partition_labels(spec, np.zeros(100, dtype=int), num_clients=5, seed=0)
    assert [m["noise_std"] for m in part.client_meta] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(set(m) == {"noise_std"} for m in part.client_meta)
    np.testing.assert_array_equal(part.sizes(), np.full(5, 20))


def test_rotation_meta_ramps_and_single_client_gets_zero():
    spec = {"name": "feature_skew", "kind": "rotation", "max_rotation_deg": 60}
    part = partition_labels(spec, np.zeros(30, dtype=int), num_clients=3, seed=0)
    assert part.client_meta == ({"rotation_deg": 0.0}, {"rotation_deg": 30.0}, {"rotation_deg": 60.0})
    one = partition_labels(spec, np.zeros(30, dtype=int), num_clients=1, seed=0)
    assert one.client_meta == ({"rotation_deg": 0.0},)


def test_noise_std_is_empirically_right_and_input_untouched():
    x = torch.zeros(200, 3, 8, 8)
    out = apply_feature_transform(x, {"noise_std": 0.5}, generator=_gen())
    noise = out - x
    assert noise.std().item() == pytest.approx(0.5, rel=0.02)
    assert abs(noise.mean().item()) < 0.01
    assert torch.count_nonzero(x) == 0  # no in-place change
    again = apply_feature_transform(x, {"noise_std": 0.5}, generator=_gen())
    torch.testing.assert_close(out, again)
    other = apply_feature_transform(x, {"noise_std": 0.5}, generator=_gen(1))
    assert not torch.equal(out, other)


def test_noise_works_on_non_image_batches():
    x = torch.ones(1000, 20, dtype=torch.float64)
    out = apply_feature_transform(x, {"noise_std": 2.0}, generator=_gen())
    assert out.dtype == torch.float64
    assert (out - x).std().item() == pytest.approx(2.0, rel=0.03)


@pytest.mark.parametrize("meta", [{}, {"group": "hospital-3"}, {"noise_std": 0.0}, {"rotation_deg": 0.0}])
def test_no_transform_returns_the_same_object(meta):
    x = torch.rand(2, 1, 5, 5)
    assert apply_feature_transform(x, meta, generator=_gen()) is x


def test_rotation_by_full_turn_is_identity():
    x = torch.rand(2, 3, 9, 9)
    assert apply_feature_transform(x, {"rotation_deg": 360.0}, generator=_gen()) is x


@pytest.mark.parametrize("size", [(6, 6), (7, 7)])
def test_rotation_by_90_matches_rot90(size):
    x = torch.rand(4, 3, *size)
    out = apply_feature_transform(x, {"rotation_deg": 90.0}, generator=_gen())
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    out = apply_feature_transform(x, {"rotation_deg": -90.0}, generator=_gen())
    torch.testing.assert_close(out, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotation_by_180_on_non_square_image_flips_both_axes():
    x = torch.rand(2, 1, 4, 6)
    out = apply_feature_transform(x, {"rotation_deg": 180.0}, generator=_gen())
    torch.testing.assert_close(out, torch.flip(x, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotation_is_rigid_on_non_square_image():
    x = torch.zeros(1, 1, 4, 6)
    x[0, 0, 2, 3] = 1.0  # offset (+0.5, +0.5) pixels from the centre (1.5, 2.5)
    out = apply_feature_transform(x, {"rotation_deg": 90.0}, generator=_gen())
    expected = torch.zeros_like(x)
    expected[0, 0, 1, 3] = 1.0  # rotated counter-clockwise to (+0.5, -0.5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_rotation_pads_with_zeros():
    x = torch.ones(1, 1, 8, 8)
    out = apply_feature_transform(x, {"rotation_deg": 45.0}, generator=_gen())
    assert out[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)  # corner comes from outside
    assert out[0, 0, 4, 4].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(5, 5), (3, 5, 5)])
@pytest.mark.parametrize("degrees", [30.0, 0.0])
def test_rotation_on_non_image_batch_raises(shape, degrees):
    with pytest.raises(ValueError, match=r"rotation needs a \[B, C, H, W\] image batch"):
        apply_feature_transform(torch.rand(*shape), {"rotation_deg": degrees}, generator=_gen())


def test_transforms_need_floating_point_input():
    with pytest.raises(ValueError, match="floating-point"):
        apply_feature_transform(torch.zeros(2, 3, dtype=torch.int64), {"noise_std": 0.1},
                                generator=_gen())


def test_negative_noise_std_refused():
    with pytest.raises(ValueError, match="noise_std must be a finite value >= 0, got -1.0"):
        apply_feature_transform(torch.zeros(2, 3), {"noise_std": -1.0}, generator=_gen())
