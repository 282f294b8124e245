"""Incentive points and simulated device time: hand cases, the budget is always paid out in full
(hypothesis), bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.incentives import DeviceProfile, client_time, draw_profiles, split_points


def test_schemes_on_hand_cases():
    assert split_points(budget=90, scheme="equal", participants=[4, 7, 9]) == {4: 30.0, 7: 30.0, 9: 30.0}
    assert split_points(budget=100, scheme="data_size", participants=[4, 7], sizes={4: 100, 7: 300}) == {4: 25.0, 7: 75.0}
    # floor 10 each, the remaining 70 by contribution; a negative contribution counts as 0
    pts = split_points(budget=100, scheme="contribution", participants=[1, 2, 3], contributions={1: 0.3, 2: 0.4, 3: -0.2},
                       floor=10)
    assert pts == pytest.approx({1: 10 + 30, 2: 10 + 40, 3: 10})
    # nobody contributed: equal
    assert split_points(budget=10, scheme="contribution", participants=[1, 2], contributions={1: -1, 2: 0}) == {1: 5.0, 2: 5.0}
    assert split_points(budget=10, scheme="equal", participants=[]) == {}


@settings(max_examples=200, deadline=None)
@given(values=st.dictionaries(st.integers(0, 10**6), st.floats(-10, 10, allow_nan=False), min_size=1, max_size=20),
       budget=st.floats(0, 1e6), floor_share=st.floats(0, 1), scheme=st.sampled_from(["equal", "contribution"]))
def test_the_budget_is_paid_out_in_full_and_nobody_gets_less_than_the_floor(values, budget, floor_share, scheme):
    floor = budget * floor_share / len(values)
    pts = split_points(budget=budget, scheme=scheme, participants=list(values), contributions=values, floor=floor)
    assert sum(pts.values()) == pytest.approx(budget, rel=1e-9, abs=1e-6)
    assert all(p >= floor - 1e-9 for p in pts.values())


def test_bad_incentive_input():
    with pytest.raises(ValueError, match="scheme 'lottery' unknown; known: equal, data_size, contribution"):
        split_points(budget=1, scheme="lottery", participants=[1])
    with pytest.raises(ValueError, match="floor 6 for 2 participants .* more than the budget 10"):
        split_points(budget=10, scheme="equal", participants=[1, 2], floor=6)
    with pytest.raises(ValueError, match=r"needs contributions of every participant; missing for \[2\]"):
        split_points(budget=10, scheme="contribution", participants=[1, 2], contributions={1: 1.0})
    with pytest.raises(ValueError, match="budget must be a finite number >= 0"):
        split_points(budget=-1, scheme="equal", participants=[1])


def test_device_time_on_a_hand_case():
    d = DeviceProfile(cpu_cores=4, ram_mb=254, storage_mb=193, bandwidth_mbps=8, speed=2.0)
    t = client_time(d, steps=100, step_s=0.02, bytes_up=1_000_000, bytes_down=2_000_000)
    assert t == pytest.approx({"compute_s": 1.0, "download_s": 2.0, "upload_s": 1.0, "total_s": 4.0})


def test_drawn_profiles_are_seeded_and_in_range():
    ranges = {"cpu_cores": (1, 8), "ram_mb": (100, 300), "storage_mb": (20, 200), "bandwidth_mbps": (1, 50),
              "speed": (0.5, 2.0), "dropout_prob": (0.2, 0.2)}
    a = draw_profiles(50, ranges=ranges, rng=np.random.default_rng(3))
    assert a == draw_profiles(50, ranges=ranges, rng=np.random.default_rng(3))
    assert all(100 <= p.ram_mb <= 300 and p.dropout_prob == 0.2 for p in a)
    with pytest.raises(ValueError, match=r"missing \['speed'\]"):
        draw_profiles(2, ranges={k: v for k, v in ranges.items() if k != "speed"}, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="bandwidth_mbps must be a finite number > 0, got 0"):
        DeviceProfile(cpu_cores=1, ram_mb=1, storage_mb=1, bandwidth_mbps=0, speed=1)
