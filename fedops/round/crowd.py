"""The round's crowdsourcing hooks (CrowdFL, contribution, reputation, incentives), built from the
config when any of them is on; :class:`fedops.round.engine.FederatedRun` calls them at three
points of a round and once at the end of the task:

* before selection, :meth:`CrowdStep.selection_inputs`: the candidates (less the clients whose
  reputation is below ``server.min_reputation``, with the reason) and what the selector may read
  (device features, reputations, expected times on the virtual clock);
* after the server's update path, :meth:`CrowdStep.after_round`: the round's simulated time on
  the virtual clock (``time/simulated_round_s``, each client's start and end), contribution
  scores of the accepted updates (by reconstruction on the server's validation set), and this
  run's reputation evidence from the round's events;
* at the end, :meth:`CrowdStep.finish`: the reward budget split into points.

Its state (this run's evidence, cumulative contributions, the clock's total) is part of the run's
checkpoint. The ledger itself is written by :class:`LedgerObserver`, at the edge: each round's
events after the round's checkpoint, at most once per (run, round), so a killed and resumed run
records every round exactly once; a crash inside the write leaves none of the round's events.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedops.config import Config
from fedops.incentives.devices import client_time, dropout_draw, local_steps
from fedops.rng import STREAM_CONTRIBUTION, numpy_rng
from fedops.round.outputs import _Quiet
from fedops.selection import SelectionContext


def ledger_url(url: str, root: Path | None, *, create: bool = True) -> str:
    """A relative SQLite path in ``url`` made absolute under ``root`` (the work directory, created
    when missing and ``create``: the default ledger lives there)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if root is None or not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:" \
            or Path(u.database).is_absolute():
        return url
    path = Path(root) / u.database
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return u.set(database=str(path)).render_as_string(hide_password=False)


class ContributionStep:
    """Each round's contribution scores: the coalition game by reconstruction on the server's
    validation set (``contribution.validation_size`` rows of its test set, drawn once from the seed)."""

    def __init__(self, config: Config, world: Any, *, device: torch.device) -> None:
        self.config = config
        self.estimator = config.contribution.estimator
        rt = world.runtime
        self.layout = rt.layout
        self.model = rt.new_model(seed=0).to(device)
        self.device = device
        test = world.testset
        n = int(test.y.shape[0])
        pick = np.sort(numpy_rng(config.seed, STREAM_CONTRIBUTION).permutation(n)[: min(n, config.contribution.validation_size)])
        idx = torch.as_tensor(pick, dtype=torch.long)
        self.x, self.y = test.x[idx].to(device), test.y[idx].to(device)
        self.num_classes = test.num_classes

    def score(self, params: torch.Tensor) -> float:
        from fedops.evaluation import evaluation_sums, summarize

        self.layout.load_into(self.model, params.to(self.device))
        return summarize([evaluation_sums(self.model, self.x, self.y, num_classes=self.num_classes)])["accuracy"]

    def __call__(self, round_idx: int, *, params: torch.Tensor, batch: Any):
        from fedops.contribution.reconstruction import reconstruction_utility

        utility = reconstruction_utility(
            params=params.to(torch.float32), updates=dict(zip(batch.client_ids, batch.deltas)),
            weights=dict(zip(batch.client_ids, batch.weights)), score=self.score)
        return self.estimator.estimate(utility, rng=numpy_rng(self.config.seed, STREAM_CONTRIBUTION, round_idx))


class CrowdStep:
    """Devices and the virtual clock, selection inputs, contribution, reputation and points."""

    def __init__(self, config: Config, world: Any, *, run_id: str, device: torch.device, download_nbytes: int,
                 workdir: Path | None = None) -> None:
        self.config = config
        self.runtime = world.runtime
        self.profiles = self.runtime.device_profiles
        self.download_nbytes = download_nbytes
        self.upload_estimate = 4 * self.runtime.layout.size
        """Bytes a client is expected to upload (float32 update) when the selector estimates its time."""
        rep = config.reputation
        self.ledger = None
        self.task = rep.task or run_id
        self.prior: dict[int, tuple[float, float]] = {}
        if rep.enabled:
            from fedops.reputation import Ledger, ReputationParams

            self.params = ReputationParams(kappa=rep.kappa, eta=rep.eta, fading=rep.fading)
            self.ledger = Ledger(ledger_url(rep.ledger, workdir))  # unreachable: LedgerError, nothing written
            ids = list(range(self.runtime.num_clients))
            prior = self.ledger.evidence([self.name(c) for c in ids], params=self.params, current_task=self.task,
                                         exclude_run=run_id)
            self.prior = {c: prior[self.name(c)] for c in ids}
        self.contribution = ContributionStep(config, world, device=device) if config.contribution.enabled else None
        self.expected_times = self._expected_times()
        self.features = None if self.profiles is None else {
            c: {"cpu": p.cpu_cores, "ram": p.ram_mb, "storage": p.storage_mb} for c, p in enumerate(self.profiles)}
        # state across rounds
        self.evidence: dict[int, list[float]] = {}
        """This run's (positive, negative) event counts per client (age 0: the current task)."""
        self.contributions: list[dict[str, Any]] = []
        """Per round and client: ``{"round", "client_id", "value"}`` (the contribution table)."""
        self.simulated_total_s = 0.0
        self.completed: dict[int, int] = {}
        """Rounds each client completed (its update accepted) in this run."""

    def name(self, client: int) -> str:
        """The client's name in the ledger: ``reputation.client_ids[client]``, else its index."""
        ids = self.config.reputation.client_ids
        return ids[client] if ids else str(client)

    @classmethod
    def build(cls, config: Config, world: Any, **kwargs) -> "CrowdStep | None":
        on = (config.devices.enabled or config.contribution.enabled or config.reputation.enabled
              or config.incentives.budget > 0 or config.server.backups > 0)
        return cls(config, world, **kwargs) if on else None

    @property
    def cumulative(self) -> dict[int, float]:
        """Each client's contribution summed over the rounds so far."""
        out: dict[int, float] = {}
        for row in self.contributions:
            out[row["client_id"]] = out.get(row["client_id"], 0.0) + row["value"]
        return out

    # --- reputation ---------------------------------------------------------------------------
    def reputations(self) -> dict[int, float] | None:
        if self.ledger is None:
            return None
        from fedops.reputation import opinion_from_counts

        out = {}
        for c in range(self.runtime.num_clients):
            p_pos, p_neg = self.prior.get(c, (0.0, 0.0))
            pos, neg = self.evidence.get(c, (0.0, 0.0))
            out[c] = opinion_from_counts(p_pos + pos, p_neg + neg, params=self.params).reputation
        return out

    # --- before selection ---------------------------------------------------------------------
    def _expected_times(self) -> dict[int, tuple[float, float]] | None:
        """Each client's expected ``(download + compute, upload)`` seconds (fixed for the run)."""
        if self.profiles is None:
            return None
        spec, sizes = self.config.client, self.runtime.sizes()
        out = {}
        for c, prof in enumerate(self.profiles):
            t = client_time(prof, steps=local_steps(num_samples=sizes[c], epochs=spec.epochs, batch_size=spec.batch_size),
                            step_s=self.config.devices.step_s, bytes_up=self.upload_estimate,
                            bytes_down=self.download_nbytes)
            out[c] = (t["download_s"] + t["compute_s"], t["upload_s"])
        return out

    def selection_inputs(self) -> tuple[list[int], dict[int, str], SelectionContext]:
        """The candidates, the excluded clients with their reasons, and the selection context."""
        n = self.runtime.num_clients
        reps = self.reputations()
        candidates, excluded = list(range(n)), {}
        threshold = self.config.server.min_reputation
        if threshold is not None and reps is not None:
            from fedops.selection.crowd import exclude_below

            candidates, excluded = exclude_below(reps, threshold=threshold)
        return candidates, excluded, SelectionContext(num_clients=n, features=self.features, reputation=reps,
                                                      times=self.expected_times)

    # --- after the update path ----------------------------------------------------------------
    def after_round(self, round_idx: int, *, rows: dict[int, dict[str, Any]], trained: set[int],
                    replaces: dict[int, int], params: torch.Tensor, batch: Any) -> dict[str, float]:
        """Clock, contribution and reputation for the round; fills the rows, returns metrics."""
        metrics: dict[str, float] = {}
        for c, row in rows.items():
            if row.get("status") == "ok":
                self.completed[c] = self.completed.get(c, 0) + 1
        if self.profiles is not None:
            metrics.update(self._clock(round_idx, rows=rows, trained=trained, replaces=replaces))
        if self.contribution is not None and batch is not None and batch.client_ids:
            started = time.perf_counter()
            result = self.contribution(round_idx, params=params, batch=batch)
            for c, v in result.values.items():
                rows[c]["contribution"] = float(v)
                self.contributions.append({"round": round_idx, "client_id": int(c), "value": float(v)})
            metrics.update({"contribution/evaluations": float(result.evaluations),
                            "contribution/permutations": float(result.permutations),
                            "contribution/truncated": float(result.truncated),
                            "contribution/seconds": time.perf_counter() - started})
        if self.ledger is not None:
            from fedops.reputation import events_from_rows
            from fedops.reputation.opinion import NEGATIVE, POSITIVE

            for e in events_from_rows(list(rows.values())):
                counts = self.evidence.setdefault(int(e.client), [0.0, 0.0])
                counts[0] += e.kind in POSITIVE
                counts[1] += e.kind in NEGATIVE
            reps = self.reputations()
            for c, row in rows.items():
                row["reputation"] = round(reps[c], 6)
            took_part = [c for c, r in rows.items() if r.get("status") != "excluded"]
            if took_part:
                metrics["incentives/reputation_mean"] = float(np.mean([reps[c] for c in took_part]))
        return metrics

    def _clock(self, round_idx: int, *, rows, trained: set[int], replaces: dict[int, int]) -> dict[str, float]:
        """Each client's start and end on the virtual clock: clients run in parallel; one that
        fails is noticed when it fails (a simulated dropout part-way through its compute, other
        failures at the end of it); a backup starts when the client it replaces is noticed."""
        spec, sizes = self.config.client, self.runtime.sizes()
        ends: dict[int, float] = {}

        def end(c: int) -> float:
            if c in ends:
                return ends[c]
            start = end(replaces[c]) if c in replaces else 0.0
            prof = self.profiles[c]
            t = client_time(prof, steps=local_steps(num_samples=sizes[c], epochs=spec.epochs, batch_size=spec.batch_size),
                            step_s=self.config.devices.step_s, bytes_up=int(rows[c].get("bytes_up") or 0),
                            bytes_down=self.download_nbytes)
            if c in trained:
                took = t["total_s"]
            else:
                dropped, frac = dropout_draw(seed=self.config.seed, round_idx=round_idx, client_id=c,
                                             prob=prof.dropout_prob)
                took = t["download_s"] + (frac if dropped else 1.0) * t["compute_s"]
            rows[c]["sim_start_s"] = round(start, 6)
            rows[c]["sim_end_s"] = round(ends.setdefault(c, start + took), 6)
            return ends[c]

        timed = [c for c, r in rows.items() if r.get("status") != "excluded" and (c in trained or r.get("status") == "dropped")]
        round_s = max((end(c) for c in timed), default=0.0)
        self.simulated_total_s += round_s
        return {"time/simulated_round_s": round_s, "time/simulated_total_s": self.simulated_total_s}

    # --- the end of the task ------------------------------------------------------------------
    def finish(self) -> dict[str, Any] | None:
        """Points for the clients that completed at least one round."""
        inc = self.config.incentives
        if inc.budget <= 0:
            return None
        from fedops.incentives import split_points

        completed = self.completed
        participants = sorted(c for c, k in completed.items() if k > 0)
        sizes, cumulative = self.runtime.sizes(), self.cumulative
        points = split_points(budget=inc.budget, scheme=inc.scheme, participants=participants,
                              sizes={c: sizes[c] for c in participants},
                              contributions={c: cumulative.get(c, 0.0) for c in participants}, floor=inc.floor)
        return {"scheme": inc.scheme, "budget": inc.budget, "floor": inc.floor,
                "points": {int(c): float(p) for c, p in points.items()},
                "rounds_completed": {int(c): int(completed[c]) for c in participants}}

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task, "prior": {c: list(v) for c, v in self.prior.items()},
                "evidence": {c: list(v) for c, v in self.evidence.items()},
                "contributions": [dict(r) for r in self.contributions],
                "simulated_total_s": self.simulated_total_s, "completed": dict(self.completed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task = state["task"]
        self.prior = {int(c): tuple(v) for c, v in state["prior"].items()}
        self.evidence = {int(c): list(v) for c, v in state["evidence"].items()}
        self.contributions = [dict(r) for r in state["contributions"]]
        self.simulated_total_s = float(state["simulated_total_s"])
        self.completed = {int(c): int(k) for c, k in state["completed"].items()}


def new_run_id() -> str:
    return uuid.uuid4().hex


class LedgerObserver(_Quiet):
    """Writes the run's events to the reputation ledger at the edge: each round's (from its
    released client table) after the round is checkpointed, and the task's points at the end;
    every write at most once per (run, round)."""

    def __init__(self, crowd: CrowdStep) -> None:
        self.crowd = crowd

    def _record(self, run, record) -> None:
        from fedops.reputation import events_from_rows

        if record is None or record.client_table is None:
            return
        # run.run_id, read at each write: a resumed run's id is the checkpoint's, not the one it was built with
        rows = [{**row, "client_id": self.crowd.name(int(row["client_id"]))} for row in record.client_table]
        self.crowd.ledger.record(task=self.crowd.task, run=run.run_id, round_idx=record.round,
                                 events=events_from_rows(rows), once=True)

    def started(self, run, *, resumed_from: int | None) -> None:
        if resumed_from:  # killed after the checkpoint, before the write: the round's events now
            self._record(run, run.last_record)

    def round_done(self, run, record) -> None:
        self._record(run, record)

    def finished(self, run, result) -> None:
        from fedops.reputation import LedgerEvent

        points = (run.extras.get("incentives") or {}).get("points") or {}
        events = [LedgerEvent(self.crowd.name(int(c)), "points", value=float(p)) for c, p in sorted(points.items())]
        self.crowd.ledger.record(task=self.crowd.task, run=run.run_id, round_idx=None, events=events, once=True)


def check_ledger(config: Config, workdir: Path | None) -> None:
    """Open the reputation ledger once before a pipeline writes anything (``reputation.enabled``):
    an unreachable URL is a :class:`fedops.reputation.LedgerError` naming it."""
    if not config.reputation.enabled:
        return
    from fedops.reputation import Ledger

    Ledger(ledger_url(config.reputation.ledger, workdir)).dispose()
