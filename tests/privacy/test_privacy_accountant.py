import opacus
import pytest
from opacus.accountants import RDPAccountant

from fedops.privacy import ACCOUNTANTS, PrivacyLedger, solve_noise_multiplier


@pytest.mark.parametrize("key, expected", [("rdp", 7.32911), ("prv", 6.77740)])
def test_epsilon_matches_opacus_pinned_points(key, expected):
    ledger = PrivacyLedger(key, delta=1e-5)
    for _ in range(2250):
        ledger.step(noise_multiplier=1.5, sample_rate=0.04)
    assert ledger.history == [(1.5, 0.04, 2250)]
    assert ledger.epsilon() == pytest.approx(expected, rel=1e-3)
    info = ledger.disclosure()
    assert info["accountant"] == key and info["opacus_version"] == opacus.__version__
    assert info["steps"] == 2250


@pytest.mark.parametrize("accountant, target, q, steps, slack", [("rdp", 3.0, 0.04, 500, 0.05), ("prv", 2.0, 0.1, 50, 0.1)])
def test_solved_noise_multiplier_meets_target(accountant, target, q, steps, slack):
    sigma = solve_noise_multiplier(target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps, accountant=accountant)
    ledger = PrivacyLedger(accountant, 1e-5)
    for _ in range(steps):
        ledger.step(noise_multiplier=sigma, sample_rate=q)
    assert target - slack <= ledger.epsilon() <= target


def test_would_exceed_flips_exactly_at_first_step_past_target():
    target, z, q, delta = 2.0, 1.5, 0.1, 1e-5
    reference = RDPAccountant()
    first_over = None
    for n in range(1, 10_000):
        reference.step(noise_multiplier=z, sample_rate=q)
        if reference.get_epsilon(delta) > target:
            first_over = n
            break
    assert first_over is not None and first_over > 5

    ledger = PrivacyLedger("rdp", delta)
    while not ledger.would_exceed(target, noise_multiplier=z, sample_rate=q):
        ledger.step(noise_multiplier=z, sample_rate=q)
        assert ledger.steps <= first_over
    # it stopped just before the first step whose epsilon would pass the target
    assert ledger.steps == first_over - 1
    assert ledger.epsilon() <= target
    history = ledger.history
    assert ledger.would_exceed(target, noise_multiplier=z, sample_rate=q)
    assert ledger.history == history  # asking does not spend
    assert ledger.epsilon_after(noise_multiplier=z, sample_rate=q) == pytest.approx(reference.get_epsilon(delta))


def test_zero_noise_is_infinite_epsilon_and_empty_is_zero():
    ledger = PrivacyLedger("prv", 1e-5)
    assert ledger.epsilon() == 0.0
    ledger.step(noise_multiplier=0.0, sample_rate=0.5)
    assert ledger.epsilon() == float("inf")


def test_registry_builds_plugins():
    assert ACCOUNTANTS.keys() == ["prv", "rdp"]
    prv = ACCOUNTANTS.build({"name": "prv", "eps_error": 0.05})
    assert prv.params() == {"eps_error": 0.05}
    assert PrivacyLedger(prv, 1e-6).disclosure()["accountant_params"] == {"eps_error": 0.05}


@pytest.mark.parametrize("delta", [1.0, 1.5, 0.0, -1e-5])
def test_bad_delta_named(delta):
    with pytest.raises(ValueError, match=f"delta.*{delta}"):
        PrivacyLedger("rdp", delta)
    with pytest.raises(ValueError, match=f"delta.*{delta}"):
        solve_noise_multiplier(target_epsilon=1.0, delta=delta, sample_rate=0.1, steps=10, accountant="rdp")


def test_bad_noise_and_sample_rate_named():
    ledger = PrivacyLedger("rdp", 1e-5)
    with pytest.raises(ValueError, match="noise_multiplier.*-0.5"):
        ledger.step(noise_multiplier=-0.5, sample_rate=0.1)
    with pytest.raises(ValueError, match="sample_rate.*1.5"):
        ledger.step(noise_multiplier=1.0, sample_rate=1.5)
    with pytest.raises(ValueError, match="sample_rate.*0.0"):
        ledger.would_exceed(1.0, noise_multiplier=1.0, sample_rate=0.0)
    assert ledger.history == []


def test_unknown_accountant_lists_known():
    with pytest.raises(ValueError, match=r"'gdpx'.*known: prv, rdp"):
        PrivacyLedger("gdpx", 1e-5)
    with pytest.raises(ValueError, match=r"'moments'.*known: prv, rdp"):
        solve_noise_multiplier(target_epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=10, accountant="moments")


def test_rdp_epsilon_equals_opacus_own_to_the_bit_over_mixed_histories():
    """The ledger's RDP epsilon reuses each (noise, rate)'s one-step curve; Opacus recomputes it
    for every history entry: the same floats, for run-length histories mixing several rates
    (local DP's clients: 1/L per client) and noise multipliers, in any order."""
    from hypothesis import given, settings, strategies as st

    steps = st.tuples(st.sampled_from([0.6, 1.0, 1.7]), st.sampled_from([1.0, 0.5, 1 / 3, 1 / 92, 0.01]),
                      st.integers(1, 40))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(steps, min_size=1, max_size=6), st.sampled_from([1e-5, 1e-3]))
    def check(history, delta):
        ledger, reference = PrivacyLedger("rdp", delta), RDPAccountant()
        for z, q, n in history:
            for _ in range(n):
                ledger.step(noise_multiplier=z, sample_rate=q)
                reference.step(noise_multiplier=z, sample_rate=q)
        assert ledger.history == [tuple(h) for h in reference.history]
        assert ledger.epsilon() == reference.get_epsilon(delta=delta)

    check()
