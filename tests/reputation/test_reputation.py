"""The reputation ledger (a real SQLite database through SQLAlchemy) and the subjective-logic
opinion: hand-computed counts, fading, all-or-nothing rounds under a process kill, two runs that
see each other's events, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fedops.reputation import Ledger, LedgerError, LedgerEvent, ReputationParams, opinion


def test_opinion_on_hand_computed_counts():
    # 3 positive, 1 negative, one task: r = 3, s = 3 * 1 = 3, W = 2 -> b = d = 3/8, u = 2/8, T = 3/8 + 0.5 * 2/8
    o = opinion([("completed", 0)] * 3 + [("dropped", 0)])
    assert (o.belief, o.disbelief, o.uncertainty) == pytest.approx((3 / 8, 3 / 8, 2 / 8))
    assert o.reputation == pytest.approx(0.5)
    assert o.belief + o.disbelief + o.uncertainty == pytest.approx(1.0)
    fresh = opinion([])
    assert fresh.uncertainty == 1.0 and fresh.reputation == 0.5
    # fading: a negative one task old counts z = 0.5; contribution and points carry no evidence
    p = ReputationParams(eta=2.0, fading=0.5)
    o = opinion([("completed", 0), ("rejected", 1), ("contribution", 0), ("points", 0)], params=p)
    assert (o.positive, o.negative) == (1.0, 0.5)
    assert o.reputation == pytest.approx((1 + 0.5 * 2) / (1 + 1 + 2))  # (r + a W) / (r + s + W)


def test_negatives_weigh_more_and_bad_params_are_refused():
    assert opinion([("completed", 0), ("flagged", 0)]).reputation < 0.5
    with pytest.raises(ValueError, match="reputation.eta = 0.5 must be at least reputation.kappa = 1.0"):
        ReputationParams(eta=0.5)
    with pytest.raises(ValueError, match="age must be >= 0"):
        opinion([("completed", -1)])


def test_two_runs_on_one_ledger_see_each_others_events_and_older_tasks_fade(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = Ledger(url)
    first.record(task="task-a", run="run-1", round_idx=1,
                 events=[LedgerEvent("c1", "completed"), LedgerEvent("c2", "rejected", reason="missing values")])
    second = Ledger(url)  # another run (another process in a deployment) on the same database
    assert [e["client"] for e in second.events()] == ["c1", "c2"]
    second.record(task="task-b", run="run-2", round_idx=1, events=[LedgerEvent("c2", "completed")])
    assert [e["kind"] for e in first.events(client="c2")] == ["rejected", "completed"]
    p = ReputationParams(fading=0.5)
    c2 = first.opinions(["c2"], params=p)["c2"]
    assert (c2.positive, c2.negative) == (1.0, 0.5)  # task-a's rejection is one task old
    assert first.opinions(["nobody"])["nobody"].uncertainty == 1.0


def test_bad_events_write_nothing(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with pytest.raises(ValueError, match="ledger event kind 'cheated' unknown; known: completed"):
        ledger.record(task="t", run="r", round_idx=1, events=[LedgerEvent("c1", "completed"), LedgerEvent("c1", "cheated")])
    with pytest.raises(ValueError, match="'points' of client 'c1' needs a value"):
        ledger.record(task="t", run="r", round_idx=1, events=[LedgerEvent("c1", "points")])
    assert ledger.events() == []


def test_an_unreachable_ledger_is_refused_with_a_message(tmp_path):
    with pytest.raises(LedgerError, match="cannot be reached: OperationalError"):
        Ledger(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'ledger.db'}")
    with pytest.raises(LedgerError, match="cannot be reached") as err:
        Ledger("notadialect://user:secret@host/db")
    assert "secret" not in str(err.value)


def test_a_process_killed_inside_a_rounds_write_leaves_none_of_its_events(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    code = (
        "from fedops.reputation import Ledger, LedgerEvent\n"
        f"ledger = Ledger({url!r})\n"
        "for r in (1, 2):\n"
        "    ledger.record(task='t', run='r', round_idx=r, events=[LedgerEvent(f'c{i}', 'completed') for i in range(6)])\n"
    )
    env = {**os.environ, "FEDOPS_FAILPOINTS": "ledger.write@2"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rounds = [e["round"] for e in Ledger(url).events()]
    assert rounds == [1] * 6  # round 1 whole, nothing of round 2 (half of it was inserted when killed)


def test_evidence_of_many_clients_reads_the_ledger_in_chunks_and_matches_one_by_one(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    events = [LedgerEvent(str(c), "completed" if c % 3 else "dropped") for c in range(0, 1200, 7)]
    ledger.record(task="t1", run="r1", round_idx=1, events=events)
    ledger.record(task="t2", run="r2", round_idx=1, events=[LedgerEvent("700", "rejected"), LedgerEvent("5", "completed")])
    ids = [str(c) for c in range(1200)]
    many = ledger.evidence(ids, current_task="t3")
    assert many == {c: ledger.evidence([c], current_task="t3")[c] for c in ids}
    assert many["700"] == pytest.approx((0.8 ** 2, 0.8))  # t1 two tasks old, t2 one
    assert many["5"] == (0.8, 0.0) and many["1"] == (0.0, 0.0)
