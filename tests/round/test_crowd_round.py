"""The crowdsourcing hooks in the round: backups promoted in rank order within the round, the
virtual clock on hand-computed times, reputation from an earlier run's ledger events leaving a
client out, contribution scores that add up to the round's utility gain, points paid in full,
a run killed inside the ledger write resumes with every round recorded once, and the default
path unchanged (devices only add a clock)."""

import copy
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from fedops.config import parse_config
from fedops.incentives.devices import CROWDFL_TABLE2
from fedops.reputation import Ledger
from fedops.round import FederatedRun, SequentialExecutor, run_training
from test_round import TINY, _world


def _cfg(**sections):
    d = copy.deepcopy(TINY)
    for key, value in sections.items():
        d[key] = {**d.get(key, {}), **value}
    return parse_config(d)


class Tables:
    def __init__(self):
        self.records = []

    def abandoned(self, extras):
        pass

    def started(self, run, *, resumed_from):
        pass

    def round_done(self, run, record):
        self.records.append(record)

    def finished(self, run, result):
        pass

    def failed(self, run, *, status, error):
        pass


def _train(cfg, observers=()):
    run = FederatedRun(cfg, _world(cfg))
    return run, run_training(run, SequentialExecutor(), observers=list(observers))


def test_backups_are_promoted_in_rank_order_and_keep_the_cohort_whole():
    cfg = _cfg(server={"backups": 3}, simulation={"dropout_prob": 0.4})
    tables = Tables()
    _, result = _train(cfg, [tables])
    promoted_any = False
    for rec in tables.records:
        rows = {r["client_id"]: r for r in rec.client_table}
        ranks = {c: int(r["selection"].split("rank ")[1].split(";")[0]) for c, r in rows.items()}
        backups = sorted((c for c, r in rows.items() if "backup promoted" in r["selection"]), key=ranks.get)
        dropped = [c for c, r in rows.items() if r["status"] == "dropped"]
        ok = [c for c, r in rows.items() if r["status"] == "ok"]
        # backups are the ranks after the cohort's 3, taken in order, one per dropped client
        assert [ranks[c] for c in backups] == list(range(4, 4 + len(backups)))
        assert len(backups) == min(len(dropped), 3)
        assert len(ok) == min(3, len(rows) - len(dropped))
        assert rec.metrics["clients/backups_promoted"] == len(backups)
        promoted_any |= bool(backups)
    assert promoted_any


def test_devices_only_add_the_clock_and_the_clock_matches_hand_computed_times():
    base = _train(_cfg())[1]
    four = copy.deepcopy(TINY)
    cfg = _cfg(devices={"source": "table", "step_s": 0.5, "table": [
        {"cpu_cores": 2, "ram_mb": 100, "storage_mb": 10, "bandwidth_mbps": 8, "speed": s} for s in (1, 2, 1, 0.5, 1, 4)]})
    tables = Tables()
    _, result = _train(cfg, [tables])
    assert result.digest == base.digest  # the model bytes do not depend on the simulated devices
    rec = tables.records[0]
    ends = []
    for row in rec.client_table:
        c = row["client_id"]
        speed = (1, 2, 1, 0.5, 1, 4)[c]
        # 20 rows, batch 10, 1 epoch: 2 steps of 0.5 s at speed 1; bytes at 8 Mbit/s = 1e6 bytes/s
        expect = 2 * 0.5 / speed + (row["bytes_up"] + row["bytes_down"]) / 1e6
        assert row["sim_start_s"] == 0 and row["sim_end_s"] == pytest.approx(expect, abs=1e-6)
        ends.append(expect)
    assert rec.metrics["time/simulated_round_s"] == pytest.approx(max(ends), abs=1e-6)
    assert four == TINY


def test_crowdfl_table2_ranks_the_weakest_device_last():
    cfg = parse_config({**copy.deepcopy(TINY), "partition": {"num_clients": 4},
                        "server": {"rounds": 1, "fraction": 0.75,
                                   "selector": {"name": "crowdfl", "weights": {"cpu": 0.34, "ram": 0.33, "storage": 0.33}}},
                        "devices": {"source": "crowdfl_table2"}})
    assert [p.ram_mb for p in CROWDFL_TABLE2] == [113, 254, 186, 251]
    assert [p.storage_mb for p in CROWDFL_TABLE2] == [109, 193, 21, 23]
    world = _world(parse_config({**copy.deepcopy(TINY), "partition": {"num_clients": 6}}))
    rt = world.runtime
    from fedops.client.runtime import ClientRuntime
    from fedops.round import World

    runtime = ClientRuntime(config=cfg, x_train=rt.x_train, y_train=rt.y_train, partition_indices=rt.partition_indices[:4],
                            client_meta=[], input_shape=rt.input_shape, num_classes=rt.num_classes)
    run = FederatedRun(cfg, World(runtime=runtime, testset=world.testset))
    tables = Tables()
    run_training(run, SequentialExecutor(), observers=[tables])
    assert sorted(r["client_id"] for r in tables.records[0].client_table) == [1, 2, 3]  # device 0 left out


def test_an_earlier_runs_dropouts_lower_reputation_and_leave_the_client_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = _cfg(reputation={"enabled": True, "ledger": url, "task": "task-1"}, simulation={"dropout_prob": 0.3})
    run1, _ = _train(first)
    book = Ledger(url)
    dropped = sorted({e["client"] for e in book.events() if e["kind"] == "dropped"})
    assert dropped, "the first task should have dropouts"
    second = _cfg(reputation={"enabled": True, "ledger": url, "task": "task-2"}, server={"min_reputation": 0.5})
    tables = Tables()
    run2, _ = _train(second, [tables])
    # task 2's prior: task 1's events, one task old (each counts 0.8)
    for c in range(6):
        pos = sum(e["kind"] == "completed" for e in book.events(client=str(c), task="task-1"))
        neg = sum(e["kind"] == "dropped" for e in book.events(client=str(c), task="task-1"))
        assert run2.crowd.prior[c] == pytest.approx((0.8 * pos, 0.8 * neg))
    expected = {c for c in range(6) if _faded_rep(run2, c) < 0.5}
    assert expected and {str(c) for c in expected} <= set(dropped)
    excluded = {r["client_id"] for r in tables.records[0].client_table if r["status"] == "excluded"}
    assert excluded == expected
    assert all("below threshold 0.5" in r["reason"] for r in tables.records[0].client_table if r["status"] == "excluded")
    assert {e["task"] for e in book.events()} == {"task-1", "task-2"}  # the two runs wrote to one ledger


def _faded_rep(run, c):
    from fedops.reputation import opinion_from_counts

    return opinion_from_counts(*run.crowd.prior[c], params=run.crowd.params).reputation


def test_contribution_scores_add_up_and_points_are_paid_in_full(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    cfg = _cfg(contribution={"enabled": True, "estimator": "exact_shapley", "validation_size": 40},
               reputation={"enabled": True, "ledger": url},
               incentives={"budget": 90, "scheme": "contribution", "floor": 2})
    tables = Tables()
    run, result = _train(cfg, [tables])
    step = run.crowd.contribution
    for rec in tables.records:
        values = {r["client_id"]: r["contribution"] for r in rec.client_table if "contribution" in r}
        assert len(values) == 3 and rec.metrics["contribution/evaluations"] == 8
    # efficiency on the last round: the values sum to v(N) - v(empty) of that round's game
    points = run.extras["incentives"]["points"]
    assert sum(points.values()) == pytest.approx(90) and min(points.values()) >= 2
    written = {e["client"]: e["value"] for e in Ledger(url).events() if e["kind"] == "points"}
    assert written == {str(c): p for c, p in points.items()}
    assert step.x.shape[0] == 40


def test_contribution_values_sum_to_the_rounds_utility_gain():
    cfg = _cfg(contribution={"enabled": True, "estimator": "exact_shapley", "validation_size": 40})
    run = FederatedRun(cfg, _world(cfg))
    before = run.params.clone()
    rec = run.run_round(1, SequentialExecutor(), evaluate=False)
    batch = run.server.last_batch
    step = run.crowd.contribution
    from fedops.aggregate.fedavg import weighted_mean
    import torch

    full = step.score(before + weighted_mean(torch.stack(batch.deltas), torch.tensor(batch.weights, dtype=torch.float64)))
    values = [r["contribution"] for r in rec.client_table if "contribution" in r]
    assert sum(values) == pytest.approx(full - step.score(before), abs=1e-9)


@pytest.mark.parametrize("point", ["ledger.write@3", "round.tracked@3"])
def test_a_killed_run_resumes_with_every_round_recorded_once(tmp_path, point):
    """Killed inside round 3's ledger write (none of its events), or after round 3 was recorded
    and tracked (all of them): the resumed run records each round once, under one run id."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ckpt = tmp_path / "ckpt"
    code = textwrap.dedent(f"""
        import copy, sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_round import TINY, _world
        from fedops.config import parse_config
        from fedops.round import CheckpointStore, FederatedRun, SequentialExecutor, run_training
        d = copy.deepcopy(TINY)
        d["reputation"] = {{"enabled": True, "ledger": {url!r}, "task": "t"}}
        d["simulation"] = {{"dropout_prob": 0.3}}
        cfg = parse_config(d)
        run = FederatedRun(cfg, _world(cfg))
        res = run_training(run, SequentialExecutor(), checkpoints=CheckpointStore({str(ckpt)!r}, key="k"))
        print(res.digest)
    """)
    env = {**os.environ, "FEDOPS_FAILPOINTS": point}
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    written = [1, 2] if point.startswith("ledger") else [1, 2, 3]  # a round's events: all or none
    assert sorted({e["round"] for e in Ledger(url).events()}) == written
    env.pop("FEDOPS_FAILPOINTS")
    resumed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = Ledger(url).events()
    per_round = {}
    for e in events:
        per_round.setdefault(e["round"], []).append((e["client"], e["kind"]))
    assert sorted(per_round) == [1, 2, 3, 4, 5]
    assert len({e["run"] for e in events}) == 1
    # the same events as an uninterrupted run on another ledger
    other = f"sqlite:///{tmp_path / 'other.db'}"
    cfg = _cfg(reputation={"enabled": True, "ledger": other, "task": "t"}, simulation={"dropout_prob": 0.3})
    _, result = _train(cfg)
    assert result.digest == resumed.stdout.strip().splitlines()[-1]
    again = {}
    for e in Ledger(other).events():
        again.setdefault(e["round"], []).append((e["client"], e["kind"]))
    assert again == per_round


def test_an_unreachable_ledger_stops_the_run_before_anything_is_written(tmp_path):
    from fedops.reputation import LedgerError

    cfg = _cfg(reputation={"enabled": True, "ledger": f"sqlite:///{tmp_path / 'missing' / 'dir' / 'l.db'}"})
    with pytest.raises(LedgerError, match="cannot be reached"):
        FederatedRun(cfg, _world(cfg))
    assert not (tmp_path / "missing").exists()


def test_fedcs_takes_the_clients_that_meet_the_deadline_on_the_virtual_clock():
    speeds = (1, 2, 1, 0.5, 4, 1)
    table = [{"cpu_cores": 2, "ram_mb": 100, "storage_mb": 10, "bandwidth_mbps": 8000, "speed": s} for s in speeds]
    # 2 steps of 0.5 s at speed 1: compute 1 s / speed; uploads (1072 bytes at 1e9 bytes/s) are ~1 us each
    cfg = _cfg(devices={"source": "table", "step_s": 0.5, "table": table},
               server={"selector": {"name": "fedcs", "deadline_s": 0.6}, "rounds": 1})
    tables = Tables()
    _train(cfg, [tables])
    rows = tables.records[0].client_table
    assert sorted(r["client_id"] for r in rows) == [1, 4]  # only speeds 2 and 4 finish within 0.6 s
    assert all("<= deadline 0.6 s" in r["selection"] for r in rows)
    assert tables.records[0].metrics["time/simulated_round_s"] <= 0.6


def test_fedcs_keeps_its_backups_out_of_the_cohort_when_few_clients_meet_the_deadline():
    speeds = (1, 2, 1, 0.5, 4, 1)
    table = [{"cpu_cores": 2, "ram_mb": 100, "storage_mb": 10, "bandwidth_mbps": 8000, "speed": s} for s in speeds]
    cfg = _cfg(devices={"source": "table", "step_s": 0.5, "table": table},
               server={"selector": {"name": "fedcs", "deadline_s": 0.6}, "rounds": 1, "backups": 2})
    run = FederatedRun(cfg, _world(cfg))
    candidates, excluded, context = run.crowd.selection_inputs()
    plan = run.server.plan(1, candidates=candidates, context=context, excluded=excluded)
    assert plan.selected == [1, 4]  # the two that fit, though 3 are wanted
    assert plan.backups == [0, 2]  # the next by expected time alone (1 s each; ties to the lower id)
