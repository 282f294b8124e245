"""One federated round, in one place.

:class:`FederatedRun` owns a training job's round and everything that lives across rounds::

    select (server)                              -> who trains; the DP clip norm goes with the model
    broadcast                                    -> the global model, shared once with the executor
    client work (executor.map)                   -> local training per client
    simulated attack (simulator, coordinator)    -> malicious clients rewrite their updates
    client uplink (per client)                   -> [DP clip] -> encode | project -> [DP clip] -> fixed point
    transport                                    -> in the clear, or secure aggregation (only the sum)
    server update path                           -> decode -> validate -> [filter] -> aggregate (DP wraps it)
                                                    -> [anomaly scores] -> server optimiser -> download
    evaluate (executor.map over test shards)     -> test metrics
    release                                      -> the round's record: only what the policy lets out

The Prefect flow, the in-process simulation and the benchmarks all drive this object through
:func:`fedops.round.loop.run_training`; they differ only in the executor and the observers.
Its state (:meth:`state_dict`) is one serialisable mapping, checkpointed after every round, so a
resumed run draws exactly what an uninterrupted one draws: every random stream derives from
(seed, stream, round, client), or, for privacy randomness, from the OS CSPRNG.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fedops import failpoints, malloc
from fedops.attacks.step import AttackStep
from fedops.client.runtime import torch_threads
from fedops.client.uplink import Uplink
from fedops.config import Config
from fedops.errors import RoundFailed
from fedops.evaluation import summarize
from fedops.privacy.randomness import PrivacyRandomness
from fedops.rng import STREAM_MODEL_INIT, derive_seed
from fedops.round.executor import Executor, describe_failure
from fedops.round.crowd import CrowdStep, LedgerObserver, new_run_id
from fedops.round.jobs import EVALUATE, TRAIN
from fedops.round.release import ReleasePolicy, RoundRecord
from fedops.round.transport import transport_for
from fedops.round.world import World
from fedops.server.server import RoundPlan, Server

STATE_FORMAT = 1


@dataclass(frozen=True, eq=False)
class RoundOutcome:
    """Everything a round computed, before release (never handed to observers as is)."""

    round_idx: int
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    params: torch.Tensor


class FederatedRun:
    """A training job's rounds over one simulated world, and the state that lives across them."""

    def __init__(self, config: Config, world: World, *, workdir: Path | None = None) -> None:
        if config.execution.malloc == "retain":
            malloc.retain()  # the coordinator's share of a round's memory: payloads, stack, mean
        self.config = config
        self.world = world
        runtime = world.runtime
        self.layout = runtime.layout
        self.num_clients = runtime.num_clients
        self.data_failures = dict(world.data_failures)
        self.randomness = PrivacyRandomness(seeded=config.privacy.randomness == "seeded", seed=config.seed)
        self.uplink = Uplink.from_config(config, max_samples=max(runtime.sizes()))
        self.attack = AttackStep.build(attack=config.simulation.attack, malicious=runtime.malicious, seed=config.seed)
        self.transport = transport_for(config)
        self.release = ReleasePolicy.from_config(config)
        self.local_ledgers = None
        if config.privacy.mode == "local":
            from fedops.privacy.accountant import ClientLedgers

            self.local_ledgers = ClientLedgers(config.privacy.accountant, config.privacy.delta)
        # the server's model instance on the coordinator (initial weights, backdoor accuracy, the final model)
        self.eval_device = runtime.devices[0]
        self.model = runtime.new_model(seed=derive_seed(config.seed, STREAM_MODEL_INIT))
        root = None
        if getattr(config.server.aggregator, "needs_reference", False):
            from fedops.server.root import RootSet

            root = RootSet.draw(config, x_train=runtime.x_train, y_train=runtime.y_train, layout=self.layout,
                                model=runtime.new_model(seed=0), device=self.eval_device)
        self.server = Server(config, params=self.layout.flatten(self.model), num_clients=self.num_clients,
                             layout=self.layout, data_failures=self.data_failures, randomness=self.randomness, root=root)
        # state across rounds (with the server's)
        self.round_idx = 0
        self.codec_states: dict[int, Any] = {}
        """Each client's codec state (error feedback's residual): on its device in a deployment,
        kept here for the simulated clients so that it is checkpointed with the run."""
        self.client_states: dict[int, Any] = {}
        """Each client's own training state (FairBatch's group shares), kept likewise."""
        self.local_epsilon_max = 0.0
        self.history: list[dict[str, float]] = []
        self.last_record: RoundRecord | None = None
        self.last_outcome: RoundOutcome | None = None
        self.stopped: str | None = None
        self.extras: dict[str, Any] = {}
        """Observers' own facts that must survive a restart (the tracking run id, ...)."""
        self.fairness = None
        if config.fairness_on:
            from fedops.fairness.step import FairnessStep

            self.fairness = FairnessStep(world)
        self.fairfed = None
        agg = config.server.aggregator
        if getattr(agg, "needs_group_counts", False):
            from fedops.fairness.fairfed import FairFedState

            self.fairfed = FairFedState.start(beta=agg.beta, metric=agg.metric, sizes=runtime.sizes())
        self.fairbatch = None
        if config.client.reweighing in ("global", "fairbatch_global"):
            self._pool_reweighing_counts()
        self.run_id = new_run_id()
        """This run's id (kept across resumes): the reputation ledger's ``run``."""
        self.crowd = CrowdStep.build(config, world, run_id=self.run_id, device=self.eval_device,
                                     download_nbytes=self.server.download_nbytes, workdir=workdir)
        self.client_accuracy: list[dict[str, Any]] = []
        """Each evaluation round's per-client held-out accuracy (``{"round", "accuracy"}``)."""
        self._shared: dict[tuple[int, str], Any] = {}
        self._last_client_accuracy: list[float] | None = None

    # --- facts -------------------------------------------------------------------------------
    @property
    def rounds(self) -> int:
        return self.config.server.rounds

    @property
    def params(self) -> torch.Tensor:
        return self.server.params

    @property
    def dp(self):
        return self.server.dp

    def epsilon(self) -> float | None:
        return None if self.dp is None else self.dp.epsilon()

    def stop_reason(self) -> str | None:
        return self.server.stop_reason()

    def privacy_disclosure(self) -> dict[str, Any]:
        """What a DP run must disclose: unit, mechanism, accountant and its version, parameters,
        where its randomness comes from, and what the run releases."""
        p = self.config.privacy
        base = {"mode": p.mode, "randomness": self.randomness.source, "release": self.release.describe()}
        if p.mode == "local":
            return {**base, "unit": "sample-level, per client (DP-SGD inside each client)",
                    "mechanism": "Opacus DP-SGD: per-sample clipping to local_max_grad_norm, Gaussian noise",
                    "accountant": p.accountant, "delta": p.delta, "noise_multiplier": p.local_noise_multiplier,
                    "max_grad_norm": p.local_max_grad_norm}
        if self.dp is None:
            return base
        ledger = self.dp.ledger.disclosure()
        return {
            **base,
            "unit": "client-level (one client's whole update per round)",
            "mechanism": "DP-FedAvg: clip to C, Gaussian noise sigma*C on the sum, fixed denominator q*N",
            "composition": (
                "secure aggregation: each client clips to C on its device before masking (quantised norm <= C); "
                "the server adds the noise to the unmasked sum" if self.config.secagg.enabled
                else "each client clips to C before encoding and sends 1[norm <= C]; the server clips the decoded "
                "updates again (a codec may change the norm), then noises their sum"),
            "accountant": ledger["accountant"],
            "opacus_version": ledger["opacus_version"],
            "delta": p.delta,
            "noise_multiplier": self.server.noise_multiplier,
            "noise_multiplier_solved_for_target": p.noise_multiplier is None,
            "clipping": (f"adaptive: initial C {p.clip_norm}, target quantile {p.target_quantile}, "
                         f"clip lr {p.clip_lr}, count stddev {p.clip_count_stddev or 'cohort/20'}")
            if p.adaptive_clipping else f"fixed C = {p.clip_norm}",
            "sample_rate": self.server.selection.sample_rate,
            "sampling": "Poisson: each client independently with probability q",
            "population": self.num_clients,
            "rounds_planned": self.rounds,
            "target_epsilon": p.target_epsilon,
        }

    # --- the round ---------------------------------------------------------------------------
    def _share(self, executor: Executor, name: str, value: Any) -> Any:
        key = (id(executor), name)
        if key not in self._shared:
            self._shared[key] = executor.share(value)
        return self._shared[key]

    def run_round(self, round_idx: int, executor: Executor, *, evaluate: bool) -> RoundRecord:
        if round_idx != self.round_idx + 1:
            raise ValueError(f"round {round_idx} cannot follow round {self.round_idx}")
        started = time.perf_counter()
        if self.crowd is not None:
            candidates, excluded, context = self.crowd.selection_inputs()
            plan = self.server.plan(round_idx, candidates=candidates, context=context, excluded=excluded)
        else:
            plan = self.server.plan(round_idx)
        params_before = self.params
        runtime = self._share(executor, "runtime", self.world.runtime)
        base = {"runtime": runtime, "params": executor.share(self.params)}
        if self.fairbatch is not None:
            base["broadcast"] = {"reweighing_table": self.fairbatch.table()}

        def train(clients: list[int]):
            shared = dict(base)
            # small per-round values travel with the tasks as they are (a scattered dict would be keyed by its keys)
            if self.client_states:
                shared["client_states"] = {c: self.client_states[c] for c in clients if c in self.client_states}
            sizes = self.world.runtime.partition_indices  # a group's work grows with its clients' rows
            return executor.map(TRAIN, clients, round_idx=round_idx, shared=shared,
                                cost={c: len(sizes[c]) for c in clients})

        trained = train(plan.training)
        plan, replaces = self._promote_backups(plan, trained, train)
        self.client_states.update({c: u.state for c, u in trained.results.items() if u.state is not None})
        failpoints.hit("round.trained", round_idx=round_idx)
        t_clients = time.perf_counter()
        with torch_threads(1):  # coordinator math: one reduction order, whichever executor ran the clients
            updates = {cid: trained.results[cid] for cid in sorted(trained.results)}
            if self.attack is not None:  # the simulator's malicious clients rewrite their updates
                updates = self.attack(round_idx=round_idx, updates=updates, global_params=self.params,
                                      num_selected=len(plan.selected))
            rows = self.server.rows(plan, trained.failures)
            self._selection_columns(plan, rows, replaces)
            weights = self._fairfed_weights(round_idx, updates)
            if self.fairbatch is not None:  # the next round's group shares, from this round's pooled losses
                self.fairbatch.update({c: u.group_losses for c, u in updates.items()},
                                      summer=self.transport.summer(round_idx))
            trained_ids = set(trained.results)
            messages = []
            # each delta is dropped once it is in its payload: the round never holds every delta and
            # every payload at once (80 MB each on W2's MLP)
            for cid in list(updates):
                update = updates.pop(cid)
                trained.results.pop(cid, None)
                try:
                    messages.append(self._upload(plan, update, rows, weight=weights.get(update.client_id)))
                except ValueError as exc:  # e.g. a non-finite update cannot be put into fixed point
                    rows[update.client_id].update(status="dropped", reason=f"upload failed: {describe_failure(exc)}")
                del update
            trained.results.clear()
            delivery = self.transport.deliver(round_idx, messages)
            messages.clear()  # the delivery holds them now; the server frees each once it is decoded
            metrics = self.server.finish(plan, delivery, rows)
            if self.fairfed is not None:
                metrics.update(self.fairfed.last)
            if self.fairbatch is not None:
                metrics.update(self.fairbatch.last)
            if self.crowd is not None:
                metrics.update(self.crowd.after_round(round_idx, rows=rows, trained=trained_ids,
                                                      replaces=replaces, params=params_before,
                                                      batch=self.server.last_batch))
                metrics["clients/excluded"] = float(len(plan.excluded))
                metrics["clients/backups_promoted"] = float(len(replaces))
        if self.local_ledgers is not None:
            metrics["privacy/local_epsilon_max"] = self.local_epsilon_max
        t_server = time.perf_counter()
        if evaluate:
            metrics.update(self._evaluate(round_idx, executor, runtime))
        done = time.perf_counter()
        metrics.update({"time/round_s": done - started, "time/clients_s": t_clients - started,
                        "time/server_s": t_server - t_clients, "time/eval_s": done - t_server})
        outcome = RoundOutcome(round_idx, metrics, [rows[c] for c in sorted(rows)], self.params)
        self.round_idx = round_idx
        self.last_outcome = outcome  # in process only (diagnostics, tests); observers get the record
        accuracy = self._last_client_accuracy if evaluate else None
        record = RoundRecord(round=round_idx, metrics=self.release.metrics(outcome.metrics),
                             client_table=self.release.client_table(outcome.rows),
                             timestamp_ms=int(time.time() * 1000),
                             client_accuracy=self.release.client_accuracy(accuracy))
        if record.client_accuracy is not None:
            self.client_accuracy.append({"round": round_idx, "accuracy": list(record.client_accuracy)})
        self.history.append({"round": round_idx, **record.metrics})
        self.last_record = record
        return record

    def _promote_backups(self, plan: RoundPlan, trained: Any, train: Callable[[list[int]], Any]):
        """``server.backups``: for every cohort member whose training failed (a dropout), the next
        ranked backup trains in the same round, until the cohort is whole or the backups run out.
        Returns the plan with the promoted backups in it and ``{backup: client it replaces}``."""
        reserve, replaces = list(plan.backups), {}
        pending = sorted(trained.failures)
        while pending and reserve:
            take = []
            while pending and reserve:
                backup = reserve.pop(0)
                replaces[backup] = pending.pop(0)
                take.append(backup)
            more = train(take)
            trained.results.update(more.results)
            trained.failures.update(more.failures)
            pending.extend(sorted(more.failures))
        if not replaces:
            return plan, replaces
        return replace(plan, selected=sorted([*plan.selected, *replaces]),
                       training=sorted([*plan.training, *replaces])), replaces

    def _selection_columns(self, plan: RoundPlan, rows: dict[int, dict[str, Any]], replaces: dict[int, int]) -> None:
        """Why each client is in the round (``selection``), and rows for the clients a
        reputation threshold left out (status ``excluded``)."""
        if not plan.notes and not plan.excluded:
            return
        for c, row in rows.items():
            note = plan.notes.get(c, "")
            if c in replaces:
                note = f"{note}; backup promoted for client {replaces[c]}"
            row["selection"] = note
        for c, why in sorted(plan.excluded.items()):
            rows[c] = {"round": plan.round_idx, "client_id": c, "status": "excluded", "reason": why, "selection": why}

    def observers(self) -> list[Any]:
        """The run's own observers, ahead of the caller's: the reputation ledger's writer."""
        if self.crowd is None or self.crowd.ledger is None:
            return []
        return [LedgerObserver(self.crowd)]

    def finish_task(self) -> None:
        """The end of the task: the reward budget split into points (``incentives``), kept in
        ``extras["incentives"]`` (checkpointed; observers log it and write it to the ledger).
        The memory the rounds kept for each other goes back before the observers' end-of-run work
        (the model's export and registration) runs."""
        if self.crowd is not None and "incentives" not in self.extras:
            result = self.crowd.finish()
            if result is not None:
                self.extras["incentives"] = result
        self.server.drop_round_memory()
        if malloc.retained():
            malloc.release()

    def _pool_reweighing_counts(self) -> None:
        """``client.reweighing: global``: every client's (group, label) counts summed once through
        the transport (a secure sum under secure aggregation: the server learns only the
        population's table), then sent back to the clients as the reweighing table.
        ``fairbatch_global``: the same pooled counts start the population's FairBatch shares."""
        from fedops.client.local import reweighing_table

        rt = self.world.runtime
        counts = {c: rt.group_label_counts(c) for c in range(rt.num_clients)}
        shape = next(iter(counts.values())).shape
        pooled = np.rint(np.asarray(self.transport.summer(0)({c: v.reshape(-1) for c, v in counts.items()}, "counts")))
        if self.config.client.reweighing == "fairbatch_global":
            from fedops.fairness.fairbatch import GlobalFairBatch

            spec = self.config.client
            self.fairbatch = GlobalFairBatch(counts=pooled.reshape(shape), alpha=spec.fairbatch_alpha,
                                             target=spec.fairbatch_target)
            return
        rt.reweighing_table = reweighing_table(torch.as_tensor(pooled.reshape(shape)))

    def _fairfed_weights(self, round_idx: int, updates: dict[int, Any]) -> dict[int, float]:
        """FairFed: this round's weights of the clients that trained, from their group counts on the
        global model (pooled through the transport's sum: a secure sum under secure aggregation)."""
        if self.fairfed is None or not updates:
            return {}
        counts = {cid: u.group_counts for cid, u in updates.items()}
        return self.fairfed.round_weights(counts, summer=self.transport.summer(round_idx))

    def _upload(self, plan: RoundPlan, update, rows: dict[int, dict[str, Any]], *, weight: float | None = None):
        """One client's side after training: its report and its upload (the uplink steps)."""
        cid = update.client_id
        report: dict[str, Any] = {**update.metrics, "num_samples": update.num_samples,
                                  "wall_time_s": update.wall_time_s, "update_norm": float(update.delta.norm()),
                                  "device": str(self.world.runtime.device_for(cid))}
        if self.local_ledgers is not None:
            p = self.config.privacy
            report["epsilon"] = self.local_ledgers.record(
                cid, noise_multiplier=p.local_noise_multiplier, sample_rate=update.metrics["sample_rate"],
                steps=int(update.metrics["steps"]))
            self.local_epsilon_max = max(self.local_epsilon_max, report["epsilon"])
        if weight is not None:
            report["fairfed_weight"] = weight
        out = self.uplink.send(update, ctx=self.server.ctx(plan.round_idx, cid), clip_norm=plan.clip_norm,
                               codec_state=self.codec_states.get(cid), weight=weight,
                               weight_scale=None if self.fairfed is None else self.fairfed.scale)
        if out.codec_state is not None:
            self.codec_states[cid] = out.codec_state
        rows[cid].update({**report, **out.report})
        return out.message()

    def _evaluate(self, round_idx: int, executor: Executor, runtime: Any) -> dict[str, float]:
        testset = self.world.testset
        bounds = testset.shards(self.config.execution.max_workers)
        shared = {"runtime": runtime, "testset": self._share(executor, "testset", testset),
                  "params": executor.share(self.params), "bounds": bounds}
        result = executor.map(EVALUATE, list(range(len(bounds))), round_idx=round_idx, shared=shared)
        if result.failures:
            shard, why = next(iter(result.failures.items()))
            raise RoundFailed(f"round {round_idx}: evaluating test shard {shard} failed: {why}")
        ev = summarize([result.results[i] for i in range(len(bounds))])
        metrics = {"test/accuracy": ev["accuracy"], "test/loss": ev["loss"]}
        self._last_client_accuracy = None
        if self.fairness is not None:
            rt = self.world.runtime
            with torch_threads(self.config.execution.threads_per_worker()):
                x_test, y_test = testset.on(self.eval_device)
                fair = self.fairness(self.final_model(), x_train=rt.data_on(self.eval_device).x, x_test=x_test,
                                     y_test=y_test)
            metrics.update(fair.metrics)
            self._last_client_accuracy = fair.client_accuracy
        if self.config.simulation.attack.name == "backdoor":
            from fedops.attacks import backdoor_accuracy

            with torch_threads(self.config.execution.threads_per_worker()):
                x, y = testset.on(self.eval_device)
                metrics["test/backdoor_accuracy"] = backdoor_accuracy(self.final_model(), x, y,
                                                                      attack=self.config.simulation.attack)
        return metrics

    def final_model(self) -> torch.nn.Module:
        """The server's model instance holding the current global parameters."""
        self.model.to(self.eval_device)
        self.layout.load_into(self.model, self.params.to(self.eval_device))
        return self.model

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "round": self.round_idx,
            "server": self.server.state_dict(),
            "local_ledgers": None if self.local_ledgers is None else self.local_ledgers.state_dict(),
            "codec_states": dict(self.codec_states),
            "client_states": dict(self.client_states),
            "local_epsilon_max": self.local_epsilon_max,
            "history": [dict(h) for h in self.history],
            "last_record": None if self.last_record is None else self.last_record.to_state(),
            "stopped": self.stopped,
            "extras": dict(self.extras),
            "fairfed": None if self.fairfed is None else self.fairfed.state_dict(),
            "fairbatch": None if self.fairbatch is None else self.fairbatch.state_dict(),
            "client_accuracy": [dict(a) for a in self.client_accuracy],
            "run_id": self.run_id,
            "crowd": None if self.crowd is None else self.crowd.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"run state format {state.get('format')!r} is not {STATE_FORMAT}")
        self.server.load_state_dict(state["server"])
        self.round_idx = int(state["round"])
        if self.local_ledgers is not None:
            self.local_ledgers.load_state_dict(state["local_ledgers"] or {})
        self.codec_states = {int(k): v for k, v in state["codec_states"].items()}
        self.client_states = {int(k): v for k, v in state.get("client_states", {}).items()}
        self.local_epsilon_max = float(state["local_epsilon_max"])
        self.history = [dict(h) for h in state["history"]]
        self.last_record = None if state["last_record"] is None else RoundRecord.from_state(state["last_record"])
        self.stopped = state["stopped"]
        self.extras = dict(state["extras"])
        if self.fairfed is not None:
            self.fairfed.load_state_dict(state["fairfed"])
        if self.fairbatch is not None:
            self.fairbatch.load_state_dict(state["fairbatch"])
        self.client_accuracy = [dict(a) for a in state.get("client_accuracy", [])]
        self.run_id = state.get("run_id", self.run_id)
        if self.crowd is not None:
            self.crowd.load_state_dict(state["crowd"])


def default_schedule(config: Config) -> Callable[[int], bool]:
    """Evaluate every ``server.eval_every`` rounds and after the last round."""
    every, last = config.server.eval_every, config.server.rounds
    return lambda r: r % every == 0 or r == last
