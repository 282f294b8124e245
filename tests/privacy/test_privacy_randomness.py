"""Privacy randomness: the OS CSPRNG by default (fresh draws every time), a seeded research mode
that repeats exactly, and draws with the right distributions."""

import math

import numpy as np
import pytest
import torch

from fedops.privacy.randomness import PrivacyRandomness


def test_os_mode_never_repeats_and_seeded_mode_always_does():
    os_mode = PrivacyRandomness(seeded=False, seed=0)
    assert not np.array_equal(os_mode.uniform(64, 1, 2), os_mode.uniform(64, 1, 2))
    assert not torch.equal(os_mode.normal(64, 1, 2), PrivacyRandomness(seeded=False, seed=0).normal(64, 1, 2))
    a, b = PrivacyRandomness(seeded=True, seed=7), PrivacyRandomness(seeded=True, seed=7)
    assert torch.equal(a.normal(65, 6, 3), b.normal(65, 6, 3))
    assert not torch.equal(a.normal(65, 6, 3), a.normal(65, 6, 4))  # another stream
    assert not torch.equal(a.normal(65, 6, 3), PrivacyRandomness(seeded=True, seed=8).normal(65, 6, 3))
    assert a.source == "seeded (research mode)" and os_mode.source == "os-csprng"


def test_gaussian_source_draws_successive_streams():
    src = PrivacyRandomness(seeded=True, seed=1)
    noise = src.gaussian(6, 2)
    first, second = noise(10), noise(10)
    assert torch.equal(first, src.normal(10, 6, 2, 0)) and torch.equal(second, src.normal(10, 6, 2, 1))


def test_uniform_and_normal_distributions():
    from scipy import stats

    src = PrivacyRandomness(seeded=True, seed=3)
    u = src.uniform(200_000, 1)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = src.normal(200_001, 2).numpy()  # odd count: the last Box-Muller pair is cut
    assert z.shape == (200_001,) and np.isfinite(z).all()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert stats.kstest(PrivacyRandomness(seeded=False).normal(50_000).numpy(), "norm").pvalue > 1e-3


def test_hand_computed_box_muller_pair():
    src = PrivacyRandomness(seeded=True, seed=5)
    u = src.uniform(2, 9)
    r = math.sqrt(-2.0 * math.log1p(-u[0]))
    z = src.normal(2, 9)
    assert z.tolist() == pytest.approx([r * math.cos(2 * math.pi * u[1]), r * math.sin(2 * math.pi * u[1])], rel=1e-12)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        PrivacyRandomness(seeded=True, seed=-1)
    with pytest.raises(ValueError, match="count must be >= 0, got -2"):
        PrivacyRandomness(seeded=True).normal(-2)
    with pytest.raises(ValueError, match="stream keys must be >= 0"):
        PrivacyRandomness(seeded=True).uniform(1, -3)
