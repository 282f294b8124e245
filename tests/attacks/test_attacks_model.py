"""Model attacks on hand-computed cases: sign_flip, gaussian, free_rider, alie, ipm."""

import math
from statistics import NormalDist

import pytest
import torch

from fedops.attacks import ATTACKS, RoundView, alie_z_max

GEN = torch.Generator


def gen(seed=0):
    return GEN().manual_seed(seed)


def view(d=3, benign=None, n=10, f=2):
    return RoundView(global_params=torch.zeros(d), benign=benign, num_selected=n, num_malicious=f)


BENIGN = torch.tensor(
    [[1.0, 2.0, 0.0], [3.0, 2.0, -1.0], [2.0, 5.0, 1.0], [2.0, -1.0, 4.0]]
)  # mean [2, 2, 1]; sample var [2/3, 6, 14/3]
MU = torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)
SIGMA = torch.tensor([2 / 3, 6.0, 14 / 3], dtype=torch.float64).sqrt()


def craft(spec, own, v, seed=0):
    own_before, benign_before = own.clone(), None if v.benign is None else v.benign.clone()
    out = ATTACKS.build(spec).craft(own, view=v, generator=gen(seed))
    assert torch.equal(own, own_before), "own update mutated"
    if v.benign is not None:
        assert torch.equal(v.benign, benign_before), "benign stack mutated"
    assert out.shape == own.shape and out.dtype == own.dtype
    return out


def test_none_is_honest():
    own = torch.tensor([1.0, -2.0, 3.0])
    assert torch.equal(craft("none", own, view()), own)


def test_sign_flip():
    own = torch.tensor([1.0, -2.0, 0.5])
    assert torch.equal(craft("sign_flip", own, view()), torch.tensor([-1.0, 2.0, -0.5]))
    assert torch.equal(craft({"name": "sign_flip", "scale": 4.0}, own, view()), torch.tensor([-4.0, 8.0, -2.0]))


def test_free_rider_sends_zeros():
    own = torch.tensor([1.0, -2.0, 0.5, 7.0])
    assert torch.equal(craft("free_rider", own, view(d=4)), torch.zeros(4))


def test_ipm():
    own = torch.tensor([9.0, 9.0, 9.0])
    out = craft({"name": "ipm", "epsilon": 0.5}, own, view(benign=BENIGN))
    assert torch.allclose(out, torch.tensor([-1.0, -1.0, -0.5]))
    out = craft({"name": "ipm", "epsilon": 2.0}, own, view(benign=BENIGN))
    assert torch.allclose(out, torch.tensor([-4.0, -4.0, -2.0]))


def test_alie_explicit_z():
    out = craft({"name": "alie", "z": 1.5}, torch.zeros(3), view(benign=BENIGN))
    assert torch.allclose(out.double(), MU - 1.5 * SIGMA, atol=1e-6)


def test_alie_z_max_formula_n10_f2():
    s = math.floor(10 / 2 + 1) - 2
    assert s == 4
    z = NormalDist().inv_cdf((10 - 4) / 10)
    assert alie_z_max(10, 2) == pytest.approx(z)
    out = craft("alie", torch.zeros(3), view(benign=BENIGN, n=10, f=2))
    assert torch.allclose(out.double(), MU - z * SIGMA, atol=1e-6)


def test_alie_z_max_clamped_in_degenerate_cohorts():
    # attackers hold a majority: p = (n - s)/n >= 1 -> clamped to 1 - 1/(2n)
    assert alie_z_max(10, 6) == pytest.approx(NormalDist().inv_cdf(1 - 1 / 20))
    assert math.isfinite(alie_z_max(1, 1)) and math.isfinite(alie_z_max(2, 0))


def test_alie_single_benign_update_has_zero_sigma():
    b = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(craft({"name": "alie", "z": 1.0}, torch.zeros(3), view(benign=b)), b[0])


@pytest.mark.parametrize("key", ["alie", "ipm"])
def test_benign_required(key):
    assert ATTACKS.get(key).needs_benign
    with pytest.raises(ValueError, match="honest updates"):
        ATTACKS.build(key).craft(torch.zeros(3), view=view(), generator=gen())


def test_gaussian_std_and_determinism():
    d = 100_000
    own = torch.full((d,), 5.0)
    state = torch.get_rng_state()
    out = craft({"name": "gaussian", "std": 0.3}, own, view(d=d), seed=7)
    assert torch.equal(torch.get_rng_state(), state), "global RNG touched"
    assert abs(float(out.std()) / 0.3 - 1) < 0.02
    assert abs(float(out.mean())) < 0.01  # ignores its own update
    torch.manual_seed(123)  # global seeding must not matter
    assert torch.equal(out, craft({"name": "gaussian", "std": 0.3}, own, view(d=d), seed=7))
    assert not torch.equal(out, craft({"name": "gaussian", "std": 0.3}, own, view(d=d), seed=8))
    assert not ATTACKS.get("gaussian").needs_benign


def test_backdoor_boost():
    own = torch.tensor([1.0, -2.0, 0.5])
    assert torch.allclose(craft("backdoor", own, view(n=10, f=2)), own * 5)
    assert torch.allclose(craft({"name": "backdoor", "boost": 3.0}, own, view(n=10, f=2)), own * 3)


def test_round_view_and_shape_checks():
    with pytest.raises(ValueError, match="num_malicious"):
        view(n=3, f=4)
    with pytest.raises(ValueError, match="num_malicious"):
        view(n=3, f=0)
    with pytest.raises(ValueError, match="benign"):
        view(benign=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="own update"):
        ATTACKS.build("sign_flip").craft(torch.zeros(4), view=view(), generator=gen())
