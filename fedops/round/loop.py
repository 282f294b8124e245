"""The one round loop: resume from a checkpoint, run rounds, checkpoint and report each, stop on
the privacy budget, finish. The Prefect flow, the in-process simulation and every benchmark run
training through :func:`run_training`; they differ in the executor and in the observers they
pass (MLflow and the work directory's outputs for the flow, nothing for a benchmark).

Order within a round, and why a killed run resumes cleanly:

1. the round runs (nothing written yet);
2. the new state is checkpointed atomically, with the round's released record in it;
3. observers report the record (MLflow logs it idempotently: the record carries its timestamp).
   An observer may write it while the next round trains: the loop calls its ``flush`` before it
   checkpoints the next round, so only the last checkpointed round can be missing.

A run killed before 2 repeats the round from the previous state (the same bytes); killed between
2 and 3, or before the next round's checkpoint, it resumes after the round and observers log the
record they missed first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from fedops import failpoints, malloc, progress
from fedops.io import sha256_bytes
from fedops.round.checkpoint import CheckpointError, CheckpointStore
from fedops.round.engine import FederatedRun, default_schedule
from fedops.round.executor import Executor
from fedops.round.release import RoundRecord


def params_digest(params: torch.Tensor) -> str:
    """sha256 of the model's flat float32 parameters: the run's fingerprint."""
    return sha256_bytes(params.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())


@dataclass
class TrainingResult:
    params: torch.Tensor
    rounds: int
    stopped: str | None
    history: list[dict[str, float]]
    epsilon: float | None
    digest: str
    resumed_from: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


class RunObserver(Protocol):
    """Something that follows a run: MLflow, the work directory's outputs, a progress bar."""

    def abandoned(self, extras: dict[str, Any]) -> None:
        """A previous, unfinished attempt is being discarded (``fresh``)."""

    def started(self, run: FederatedRun, *, resumed_from: int | None) -> None:
        """Before the first round of this attempt (``resumed_from``: the last complete round)."""

    def round_done(self, run: FederatedRun, record: RoundRecord) -> None:
        """The round is checkpointed. An observer may write the record later (optional ``flush()``
        waits for it: called before the next checkpoint); ``finished`` and ``failed`` write what is
        left."""

    def finished(self, run: FederatedRun, result: TrainingResult) -> None: ...

    def failed(self, run: FederatedRun, *, status: str, error: BaseException) -> None:
        """The attempt ends without finishing: ``status`` is FAILED, or KILLED when interrupted."""


def run_training(
    run: FederatedRun,
    executor: Executor,
    *,
    checkpoints: CheckpointStore | None = None,
    observers: tuple[RunObserver, ...] | list[RunObserver] = (),
    schedule: Callable[[int], bool] | None = None,
    stop_when: Callable[[RoundRecord], bool] | None = None,
    fresh: bool = False,
) -> TrainingResult:
    """Train ``run`` to ``server.rounds`` rounds (or its privacy budget, or ``stop_when``).

    With ``checkpoints``, an unfinished checkpoint of the same run is resumed unless ``fresh``;
    a finished one starts a new run. ``schedule(r)`` says whether round ``r`` is evaluated."""
    schedule = schedule or default_schedule(run.config)
    observers = (*run.observers(), *observers)
    if checkpoints is not None:
        checkpoints.acquire()
    try:
        resumed_from = _restore(run, checkpoints, observers, fresh=fresh)
        return _train(run, executor, checkpoints, observers, schedule, stop_when, resumed_from)
    finally:
        if checkpoints is not None:
            checkpoints.release()
        if malloc.retained():
            malloc.release()  # what the rounds kept for each other goes back to the system


def _flush(observers) -> None:
    for obs in observers:
        flush = getattr(obs, "flush", None)
        if flush is not None:
            flush()


def _restore(run: FederatedRun, checkpoints: CheckpointStore | None, observers, *, fresh: bool) -> int | None:
    if checkpoints is None:
        return None
    try:
        loaded = checkpoints.load()
    except CheckpointError:
        if not fresh:
            raise
        loaded = None
    if loaded is not None and (fresh or loaded[1].get("finished")):
        if not loaded[1].get("finished"):
            for obs in observers:
                obs.abandoned(dict(loaded[0].get("extras", {})))
        loaded = None
    if loaded is None:
        checkpoints.clear()
        return None
    run.load_state_dict(loaded[0])
    return run.round_idx


def _train(run, executor, checkpoints, observers, schedule, stop_when, resumed_from) -> TrainingResult:
    try:
        for obs in observers:
            obs.started(run, resumed_from=resumed_from)
        failpoints.hit("run.started")
        if checkpoints is not None and resumed_from is None:
            checkpoints.save(run.state_dict(), round_idx=0)  # the observers' ids survive a crash from here on
        progress.emit("start", rounds=run.rounds, resumed_from=resumed_from, extras=dict(run.extras))
        while run.round_idx < run.rounds:
            r = run.round_idx + 1
            reason = run.stop_reason()
            if reason:
                run.stopped = reason
                progress.emit("stopped", round=r, reason=reason)
                break
            record = run.run_round(r, executor, evaluate=schedule(r))
            if checkpoints is not None:
                _flush(observers)  # the previous round is tracked before this one is checkpointed
                checkpoints.save(run.state_dict(), round_idx=r)
            started = time.perf_counter()
            for obs in observers:
                obs.round_done(run, record)
            failpoints.hit("round.tracked", round_idx=r)
            progress.emit("round", round=r, rounds=run.rounds, metrics=record.metrics,
                          tracking_s=time.perf_counter() - started)
            if stop_when is not None and stop_when(record):
                break
        run.finish_task()
        result = TrainingResult(params=run.params.clone(), rounds=run.round_idx, stopped=run.stopped,
                                history=[dict(h) for h in run.history], epsilon=run.epsilon(),
                                digest=params_digest(run.params), resumed_from=resumed_from, extras=dict(run.extras))
        for obs in observers:
            obs.finished(run, result)
        if checkpoints is not None:  # the final state, with what the observers recorded at the end
            checkpoints.save(run.state_dict(), round_idx=run.round_idx, finished=True)
        progress.emit("end", ok=True)
        return result
    except BaseException as exc:
        # an interruption (Ctrl-C, SIGTERM as the orchestrator raises it) is not an Exception
        status = "FAILED" if isinstance(exc, Exception) else "KILLED"
        for obs in observers:
            try:
                obs.failed(run, status=status, error=exc)
            except Exception:  # reporting a failure must not hide it
                pass
        progress.emit("end", ok=False)
        raise
