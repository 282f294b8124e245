"""The round object and its loop, in process: resume from a checkpoint equals an uninterrupted
run; observers see started/failed/finished with the right status; a client whose upload fails is
dropped, not fatal; the release policy filters a round's record; the sequential executor retries;
MLflow's observer writes a round on its own thread and the loop waits for it before the next
checkpoint (real MLflow store)."""

import math
import threading

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from fedops.client.runtime import ClientRuntime
from fedops.config import parse_config
from fedops.round import (
    CheckpointStore,
    FederatedRun,
    MapResult,
    ReleasePolicy,
    SequentialExecutor,
    World,
    run_training,
)
from fedops.paths import Paths
from fedops.round.executor import Job
from fedops.tracking.mlflow_tracker import RunTracker
from fedops.tracking.observer import SENTINEL, MlflowObserver

TINY = {"data": {"name": "synthetic", "num_train": 120, "num_test": 40, "num_classes": 4, "image_size": 8},
        "partition": {"num_clients": 6}, "model": {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "client": {"epochs": 1, "batch_size": 10, "lr": 0.2}, "server": {"rounds": 5, "fraction": 0.5},
        "execution": {"max_workers": 2}}


def _world(cfg, runtime_cls=ClientRuntime):
    from fedops.evaluation import TestSet

    g = torch.Generator().manual_seed(0)
    runtime = runtime_cls(config=cfg, x_train=torch.randn(120, 1, 8, 8, generator=g),
                          y_train=torch.randint(0, 4, (120,), generator=g),
                          partition_indices=[np.arange(i * 20, (i + 1) * 20) for i in range(6)], client_meta=[],
                          input_shape=(1, 8, 8), num_classes=4)
    return World(runtime=runtime, testset=TestSet(torch.randn(40, 1, 8, 8, generator=g),
                                                  torch.randint(0, 4, (40,), generator=g), num_classes=4))


class Recorder:
    def __init__(self):
        self.events = []

    def abandoned(self, extras):
        self.events.append(("abandoned",))

    def started(self, run, *, resumed_from):
        self.events.append(("started", resumed_from))
        run.extras.setdefault("attempts", 0)
        run.extras["attempts"] += 1

    def round_done(self, run, record):
        self.events.append(("round", record.round))

    def finished(self, run, result):
        self.events.append(("finished", result.rounds))

    def failed(self, run, *, status, error):
        self.events.append(("failed", status))


class InterruptAt(SequentialExecutor):
    """Ctrl-C arrives while round ``at``'s clients train."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def map(self, job, items, *, round_idx, shared, cost=None):
        if job.name == "train-client" and round_idx == self.at:
            raise KeyboardInterrupt
        return super().map(job, items, round_idx=round_idx, shared=shared)


@pytest.mark.parametrize("overrides", [
    {}, {"server": {"rounds": 5, "fraction": 0.5, "optimizer": {"name": "fedadam", "lr": 0.05}}},
    {"transport": {"codec": {"name": "topk", "fraction": 0.2, "error_feedback": True}}},
    {"server": {"rounds": 5, "fraction": 0.5, "selector": "poisson", "min_clients": 1},
     "privacy": {"mode": "central", "noise_multiplier": 0.6, "clip_norm": 0.5, "adaptive_clipping": True,
                 "clip_count_stddev": 1.0, "randomness": "seeded"}},
], ids=["fedavg", "fedadam", "topk-ef", "dp-adaptive"])
def test_an_interrupted_run_resumes_to_the_bytes_of_an_uninterrupted_one(tmp_path, overrides):
    cfg = parse_config({**TINY, **overrides})
    world = _world(cfg)
    reference = run_training(FederatedRun(cfg, world), SequentialExecutor())
    store = CheckpointStore(tmp_path / "ck", key="k")
    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        run_training(FederatedRun(cfg, world), InterruptAt(4), checkpoints=store, observers=[first])
    assert first.events == [("started", None), ("round", 1), ("round", 2), ("round", 3), ("failed", "KILLED")]
    assert store.load()[1]["round"] == 3
    second = Recorder()
    resumed = run_training(FederatedRun(cfg, world), SequentialExecutor(), checkpoints=store, observers=[second])
    assert second.events == [("started", 3), ("round", 4), ("round", 5), ("finished", 5)]
    assert resumed.digest == reference.digest and resumed.resumed_from == 3
    assert resumed.extras["attempts"] == 2  # observers' facts survive the restart
    assert [h["round"] for h in resumed.history] == [1, 2, 3, 4, 5]
    if "privacy" in overrides:
        assert [h["privacy/epsilon"] for h in resumed.history] == [h["privacy/epsilon"] for h in reference.history]
    # finished: the same store starts a new run; fresh discards an unfinished one
    again = Recorder()
    run_training(FederatedRun(cfg, world), SequentialExecutor(), checkpoints=store, observers=[again])
    assert again.events[0] == ("started", None)


def test_fresh_discards_an_unfinished_checkpoint(tmp_path):
    cfg = parse_config(TINY)
    world = _world(cfg)
    store = CheckpointStore(tmp_path / "ck", key="k")
    with pytest.raises(KeyboardInterrupt):
        run_training(FederatedRun(cfg, world), InterruptAt(2), checkpoints=store)
    rec = Recorder()
    run_training(FederatedRun(cfg, world), SequentialExecutor(), checkpoints=store, observers=[rec], fresh=True)
    assert rec.events[:2] == [("abandoned",), ("started", None)]


def test_the_privacy_budget_stops_the_loop_and_is_not_run_past_on_resume(tmp_path):
    cfg = parse_config({**TINY, "server": {"rounds": 20, "fraction": 0.5, "selector": "poisson", "min_clients": 1},
                        "privacy": {"mode": "central", "noise_multiplier": 2.0, "target_epsilon": 3.0,
                                    "clip_norm": 1.0, "randomness": "seeded"}})
    result = run_training(FederatedRun(cfg, _world(cfg)), SequentialExecutor())
    assert result.stopped.startswith("privacy budget") and 1 <= result.rounds < 20
    assert result.epsilon <= 3.0 and result.history[-1]["privacy/epsilon"] == result.epsilon


class NaNClient(ClientRuntime):
    """Client 0 returns a non-finite update (a real client can send anything)."""

    def train(self, *, round_idx, client_id, global_params):
        update = super().train(round_idx=round_idx, client_id=client_id, global_params=global_params)
        if client_id == 0:
            from dataclasses import replace

            return replace(update, delta=torch.full_like(update.delta, float("nan")))
        return update


@pytest.mark.parametrize("secagg", [False, True])
def test_a_client_with_a_non_finite_update_is_left_out_and_the_round_goes_on(secagg):
    sections = {"server": {"rounds": 1, "fraction": 1.0}}
    if secagg:
        sections["secagg"] = {"enabled": True, "scale": 2.0**16}
    cfg = parse_config({**TINY, **sections})
    run = FederatedRun(cfg, _world(cfg, NaNClient))
    run.run_round(1, SequentialExecutor(), evaluate=False)
    rows = {r["client_id"]: r for r in run.last_outcome.rows}
    if secagg:  # it cannot even put its update into fixed point: it drops out
        assert rows[0]["status"] == "dropped" and "upload failed" in rows[0]["reason"] and "NaN" in rows[0]["reason"]
    else:  # the server's validation rejects it
        assert rows[0]["status"] == "rejected" and "non-finite" in rows[0]["reason"]
    assert all(rows[c]["status"] == "ok" for c in range(1, 6)) and torch.isfinite(run.params).all()


def test_release_policy_filters_metrics_and_the_client_table():
    raw = {"train/loss": 0.7, "clients/selected": 3.0, "comm/bytes_up": 10.0, "update/norm": 0.2,
           "privacy/epsilon": 1.5, "privacy/clip_norm": 0.5, "privacy/fraction_clipped": 0.3,
           "privacy/mean_update_norm": 0.9, "aggregate/mean_trust": 0.1, "secagg/survivors": 3.0,
           "secagg/time_s": 0.4, "time/round_s": 1.0, "test/accuracy": 0.8, "new/feature": 1.0}
    rows = [{"round": 1, "client_id": 4, "status": "ok", "reason": "", "bytes_up": 10, "update_norm": 0.3,
             "train_loss": 0.6, "num_samples": 20, "wall_time_s": 0.1, "krum_score": 2.0}]
    full, secure, dp = ReleasePolicy("full"), ReleasePolicy("secure"), ReleasePolicy("central_dp")
    assert full.metrics(raw) == raw and full.client_table(rows) == rows
    assert set(secure.metrics(raw)) == {"clients/selected", "comm/bytes_up", "update/norm", "secagg/survivors",
                                        "secagg/time_s", "time/round_s", "test/accuracy"}
    assert secure.client_table(rows) == [{"round": 1, "client_id": 4, "status": "ok", "reason": "", "bytes_up": 10,
                                          "wall_time_s": 0.1}]
    assert set(dp.metrics(raw)) == {"update/norm", "privacy/epsilon", "privacy/clip_norm", "secagg/time_s",
                                    "time/round_s", "test/accuracy"}
    assert dp.client_table(rows) is None
    assert full.per_client_artifacts and not secure.per_client_artifacts and not dp.per_client_artifacts
    for key, mode in (({}, "full"), ({"secagg": {"enabled": True}}, "secure"),
                      ({"server": {"selector": "poisson"}, "privacy": {"mode": "central", "noise_multiplier": 1.0}},
                       "central_dp")):
        assert ReleasePolicy.from_config(parse_config(key)).mode == mode


def _flaky(item, *, round_idx, calls):
    calls.append(item)
    if item == "bad" or (item == "flaky" and calls.count("flaky") == 1):
        raise RuntimeError(f"item {item} failed\nsecond line")
    return item.upper()


def test_sequential_executor_retries_and_reports_the_last_failure_on_one_line():
    calls = []
    out = SequentialExecutor(retries=1).map(Job("t", "x", _flaky), ["ok", "flaky", "bad"], round_idx=1,
                                             shared={"calls": calls})
    assert isinstance(out, MapResult) and out.results == {"ok": "OK", "flaky": "FLAKY"}
    assert out.failures == {"bad": "RuntimeError: item bad failed second line"}
    assert calls == ["ok", "flaky", "flaky", "bad", "bad"]
    with pytest.raises(ValueError, match="retries must be >= 0"):
        SequentialExecutor(retries=-1)


def test_evaluation_sums_do_not_depend_on_the_shards():
    cfg = parse_config(TINY)
    world = _world(cfg)
    one = FederatedRun(parse_config({**TINY, "execution": {"max_workers": 1}}), world)
    three = FederatedRun(parse_config({**TINY, "execution": {"max_workers": 3}}), world)
    a = one._evaluate(1, SequentialExecutor(), world.runtime)
    b = three._evaluate(1, SequentialExecutor(), world.runtime)
    assert a["test/accuracy"] == b["test/accuracy"] and math.isclose(a["test/loss"], b["test/loss"], rel_tol=1e-6)


# --- MLflow's writer thread: a round is written while the next trains, and is tracked before the next checkpoint

TRACKED = {**TINY, "tracking": {"register_model": False}}


def _steps(observer: MlflowObserver) -> list[int]:
    history = MlflowClient(observer.tracking_uri).get_metric_history(observer.tracker.run_id, SENTINEL)
    return sorted(m.step for m in history)


class WatchedStore(CheckpointStore):
    """Records, at each round's checkpoint, which rounds MLflow already holds."""

    def __init__(self, *args, observer: MlflowObserver, **kwargs):
        super().__init__(*args, **kwargs)
        self.observer, self.seen = observer, []

    def save(self, state, *, round_idx, finished=False):
        if round_idx > 0 and not finished:
            self.seen.append((round_idx, _steps(self.observer)))
        return super().save(state, round_idx=round_idx, finished=finished)


def test_rounds_are_written_off_the_loop_and_tracked_before_the_next_checkpoint(tmp_path, monkeypatch):
    cfg = parse_config(TRACKED)
    observer = MlflowObserver(config=cfg, paths=Paths.at(tmp_path), checkpoint_dir=tmp_path / "ck")
    writers = []
    log_metrics = RunTracker.log_metrics

    def spy(self, metrics, **kwargs):
        writers.append(threading.current_thread().name)
        return log_metrics(self, metrics, **kwargs)

    monkeypatch.setattr(RunTracker, "log_metrics", spy)
    store = WatchedStore(tmp_path / "ck", key="k", observer=observer)
    result = run_training(FederatedRun(cfg, _world(cfg)), SequentialExecutor(), checkpoints=store,
                          observers=[observer])
    assert result.rounds == 5
    # when round r is checkpointed, rounds 1..r-1 are in MLflow (round r-1's writes were waited for)
    assert store.seen == [(r, list(range(1, r))) for r in range(1, 6)]
    assert _steps(observer) == [1, 2, 3, 4, 5]
    assert len(writers) == 5 and all(w.startswith("fedops-mlflow") for w in writers)  # off the loop's thread
    assert MlflowClient(observer.tracking_uri).get_run(observer.tracker.run_id).info.status == "FINISHED"
    assert observer._writer is None  # the thread is gone with the run


def test_a_failed_write_fails_the_job_at_the_next_checkpoint_and_resume_logs_the_round(tmp_path, monkeypatch):
    cfg = parse_config(TRACKED)
    world = _world(cfg)
    store = CheckpointStore(tmp_path / "ck", key="k")
    first = MlflowObserver(config=cfg, paths=Paths.at(tmp_path), checkpoint_dir=tmp_path / "ck")
    log_metrics = RunTracker.log_metrics

    def broken(self, metrics, *, step, **kwargs):
        if step == 2:
            raise OSError("disk full (test)")
        return log_metrics(self, metrics, step=step, **kwargs)

    monkeypatch.setattr(RunTracker, "log_metrics", broken)
    with pytest.raises(OSError, match="disk full"):
        run_training(FederatedRun(cfg, world), SequentialExecutor(), checkpoints=store, observers=[first])
    assert store.load()[1]["round"] == 2  # round 3 trained, but was not checkpointed over an untracked round 2
    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["fedops.last_complete_round"] == "2"
    assert _steps(first) == [1]
    monkeypatch.setattr(RunTracker, "log_metrics", log_metrics)
    second = MlflowObserver(config=cfg, paths=Paths.at(tmp_path), checkpoint_dir=tmp_path / "ck")
    resumed = run_training(FederatedRun(cfg, world), SequentialExecutor(), checkpoints=store, observers=[second])
    assert resumed.resumed_from == 2 and second.tracker.run_id == first.tracker.run_id
    assert _steps(second) == [1, 2, 3, 4, 5]  # round 2 caught up first, every step once
    reference = run_training(FederatedRun(cfg, world), SequentialExecutor())
    assert resumed.digest == reference.digest
