"""CrowdFL's scores, FedCS's deadline rule, reputation exclusion and backups: hand cases."""

from __future__ import annotations

import pytest

from fedops.selection.crowd import cohort_with_backups, crowdfl_scores, exclude_below, fedcs_select, rank


def test_crowdfl_scores_on_crowdfls_four_devices():
    # free RAM and storage of CrowdFL's Table 2 devices; equal reputation, CPU weight 0
    devices = {0: {"cpu": 1, "ram": 113, "storage": 109, "reputation": 0.5},
               1: {"cpu": 1, "ram": 254, "storage": 193, "reputation": 0.5},
               2: {"cpu": 1, "ram": 186, "storage": 21, "reputation": 0.5},
               3: {"cpu": 1, "ram": 251, "storage": 23, "reputation": 0.5}}
    s = crowdfl_scores(devices, weights={"ram": 0.5, "storage": 0.3, "reputation": 0.2})
    # device 1: ram 1, storage 1, reputation (all equal) 1 -> 1.0; device 0: ram 0, storage (109-21)/172
    assert s[1] == pytest.approx(1.0)
    assert s[0] == pytest.approx(0.3 * 88 / 172 + 0.2)
    assert rank(s) == [1, 3, 2, 0]  # the weakest (0: least free RAM) ranks last


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="sum to 1, got 0.9"):
        crowdfl_scores({0: {"cpu": 1, "ram": 1, "storage": 1, "reputation": 1}}, weights={"cpu": 0.5, "ram": 0.4})
    with pytest.raises(ValueError, match="finite and >= 0"):
        crowdfl_scores({}, weights={"cpu": 1.5, "ram": -0.5})
    with pytest.raises(ValueError, match=r"\['gpu'\] unknown"):
        crowdfl_scores({}, weights={"gpu": 1.0})


def test_rank_ties_go_to_the_lower_id():
    assert rank({5: 0.5, 2: 0.5, 9: 0.7}) == [9, 2, 5]


def test_reputation_threshold_excludes_with_a_reason():
    kept, why = exclude_below({1: 0.8, 2: 0.31, 3: 0.5}, threshold=0.4)
    assert kept == [1, 3] and why == {2: "reputation 0.310 below threshold 0.4"}


def test_fedcs_keeps_as_many_clients_as_meet_the_deadline():
    compute = {1: 2.0, 2: 1.0, 3: 5.0, 4: 1.5}
    upload = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    # order 2 (ends 2.0), 4 (max(2, 1.5) + 1 = 3.0), 1 (max(3, 2) + 1 = 4.0), 3 would end at 6.0
    assert fedcs_select(compute_s=compute, upload_s=upload, deadline_s=4.0) == [1, 2, 4]
    assert fedcs_select(compute_s=compute, upload_s=upload, deadline_s=6.0) == [1, 2, 3, 4]
    assert fedcs_select(compute_s=compute, upload_s=upload, deadline_s=1.5) == []


def test_backups_are_promoted_in_rank_order_and_keep_the_cohort_size():
    ranked = [7, 3, 9, 1, 4, 8]
    cohort, promoted = cohort_with_backups(ranked, k=3, backups=2, dropped={3})
    assert cohort == [7, 9, 1] and promoted == [1]
    cohort, promoted = cohort_with_backups(ranked, k=3, backups=2, dropped={3, 9, 1})
    assert cohort == [7, 4] and promoted == [4]  # one backup dropped too: only one left to promote
    assert cohort_with_backups(ranked, k=3, backups=0, dropped={7}) == ([3, 9], [])
    with pytest.raises(ValueError, match="k must be >= 1"):
        cohort_with_backups(ranked, k=0, backups=1, dropped=set())
