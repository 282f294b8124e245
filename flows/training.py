"""The federated-training flow: load the prepared world (running the data stages first when the
work directory has no partition for this config), run the rounds through the executor the config names (Prefect tasks on threads or
Dask, or in process), track them in MLflow and in the flow run (a log line per round, a result
artifact), write the outputs. Resumes an interrupted run of the same config in the same work
directory from its last checkpointed round; ``fresh=True`` starts over. All round logic lives in
:mod:`fedops.round`."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import flow

from fedops.config import Config
from fedops.errors import MissingInput
from fedops.paths import Paths
from fedops.round import CheckpointStore, FederatedRun, checkpoint_key, load_world, run_training
from fedops.round.crowd import check_ledger
from fedops.round.outputs import FairnessOutputs, ModelOutputs, SummaryOutput
from fedops.tracking import MlflowObserver
from fedops.workdir import workdir_lock
from flows.executors import executor_for, task_runner
from flows.stages import _cfg


class PrefectReporter:
    """The run as the Prefect flow run shows it. At the start: the flow run is tagged with its job
    (the checkpoint directory), any other flow run of the job still Running (its process was killed)
    is set to Crashed, and the flow run's id and URL go to the job's state for MLflow's tags. Each
    round: one line in the flow run's log. At the end: a markdown artifact with the result and the
    MLflow run."""

    def __init__(self, job: str, *, ui_url: str) -> None:
        self.tag = "fedops-job:" + hashlib.sha256(job.encode()).hexdigest()[:12]
        self.ui_url = ui_url
        self.flow_run_id: str | None = None

    def abandoned(self, extras: dict[str, Any]) -> None:
        self._sweep("discarded by a later attempt (--fresh)")

    def started(self, run, *, resumed_from: int | None) -> None:
        from prefect.runtime import flow_run

        if not flow_run.id:
            return
        self.flow_run_id = str(flow_run.id)
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            mine = client.read_flow_run(flow_run.id)
            client.update_flow_run(flow_run.id, tags=sorted({*mine.tags, self.tag}))
        self._sweep(f"its process ended without reporting (killed); the job continued in flow run {flow_run.id}"
                    + (f", resumed from round {resumed_from}" if resumed_from is not None else ""))
        run.extras["prefect"] = {"flow_run_id": self.flow_run_id, "flow_run_name": str(flow_run.name),
                                 "flow_run_url": flow_run_url(self.flow_run_id)}
        self._log(f"federated training {'resumed after round ' + str(resumed_from) if resumed_from else 'started'}: "
                  f"{run.rounds} rounds, {run.num_clients} clients, release: {run.release.mode}")

    def round_done(self, run, record) -> None:
        self._log(round_line(record, run.rounds))

    def finished(self, run, result) -> None:
        from prefect.artifacts import create_markdown_artifact

        self._log(f"finished after {result.rounds} rounds" + (f" (stopped: {result.stopped})" if result.stopped else ""))
        if self.flow_run_id:
            create_markdown_artifact(markdown=result_markdown(run, result, ui_url=self.ui_url),
                                     key="federated-training-result", description="fedops: the training run's result")

    def failed(self, run, *, status: str, error: BaseException) -> None:
        self._log(f"{status} after round {run.round_idx}: {type(error).__name__}: {error}", error=True)

    def _log(self, line: str, *, error: bool = False) -> None:
        if not self.flow_run_id:
            return
        from prefect.logging import get_run_logger

        logger = get_run_logger()
        (logger.error if error else logger.info)(line)

    def _sweep(self, message: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.runtime import flow_run
        from prefect.states import Crashed

        running = FlowRunFilter(tags=FlowRunFilterTags(all_=[self.tag]),
                                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
        with get_client(sync_client=True) as client:
            for other in client.read_flow_runs(flow_run_filter=running):
                if str(other.id) != str(flow_run.id):
                    client.set_flow_run_state(other.id, Crashed(message=message), force=True)


def flow_run_url(flow_run_id: str) -> str:
    """The flow run's page in the Prefect UI (derived from the API address when no UI URL is set)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui else ""


def round_line(record, rounds: int) -> str:
    """One line per round from the released metrics (a withheld number is simply absent)."""
    m = record.metrics
    parts = [f"round {record.round}/{rounds}"]
    for key, fmt in (("test/accuracy", "accuracy {:.4f}"), ("train/loss", "loss {:.4f}"),
                     ("privacy/epsilon", "epsilon {:.3f}")):
        if m.get(key) is not None:
            parts.append(fmt.format(m[key]))
    if "clients/aggregated" in m:
        parts.append(f"clients {int(m['clients/aggregated'])}/{int(m['clients/selected'])}")
    if "comm/bytes_up" in m:
        parts.append(f"up {m['comm/bytes_up'] / 1e6:.2f} MB")
    parts.append(f"{m['time/round_s']:.1f} s")
    return ", ".join(parts)


def result_markdown(run, result, *, ui_url: str) -> str:
    final = result.final
    tracking = run.extras.get("mlflow") or {}
    rows = [("rounds", result.rounds), ("test accuracy", final.get("test/accuracy")),
            ("test loss", final.get("test/loss")), ("epsilon", final.get("privacy/epsilon")),
            ("upload MB", None if final.get("comm/bytes_up_total") is None else final["comm/bytes_up_total"] / 1e6),
            ("stopped", result.stopped), ("resumed after round", result.resumed_from),
            ("model sha256", result.digest), ("registered model", tracking.get("registered_model")),
            ("registered version", tracking.get("registered_version")), ("release", run.release.mode)]
    lines = ["# Federated training", "", "| what | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows if v is not None]
    if tracking.get("run_id"):
        url = f"{ui_url.rstrip('/')}/#/experiments/{tracking['experiment_id']}/runs/{tracking['run_id']}"
        lines += ["", f"MLflow run [{tracking['run_id']}]({url}) in `{tracking['tracking_uri']}` "
                      "(`fedops ui` serves that address)."]
    return "\n".join(lines) + "\n"


def checkpoint_store(cfg: Config, paths: Paths, manifest_sha256: str) -> CheckpointStore:
    key = checkpoint_key(cfg, manifest_sha256=manifest_sha256)
    return CheckpointStore(paths.checkpoints / key, key=key)


@flow(name="federated-training")
def federated_training(config: str | dict[str, Any] = "params.yaml", overrides: dict[str, Any] | None = None,
                       workdir: str = ".", fresh: bool = False) -> dict[str, Any]:
    """Run ``server.rounds`` rounds of federated training (resuming an interrupted run) and
    register the final model. ``config``: a preset name (``tiny``), a YAML path or a mapping;
    ``overrides``: config keys to change, e.g. ``{"server.rounds": 2}``. On a fresh work directory
    the data stages run first."""
    cfg, paths = _cfg(config, overrides), Paths.at(workdir)
    check_ledger(cfg, paths.root)  # an unreachable ledger: refused before any stage writes
    with workdir_lock(paths.root, what="federated-training"):
        try:
            world = load_world(cfg, paths)
        except MissingInput:  # no partition yet, or one made for another data set or client count
            from flows.stages import partition_flow, prepare_flow, validate_flow

            for stage in (prepare_flow, validate_flow, partition_flow):
                stage(cfg.to_params(), workdir)
            world = load_world(cfg, paths)
        return _train(cfg, paths, world, fresh=fresh)


def _train(cfg: Config, paths: Paths, world, *, fresh: bool) -> dict[str, Any]:
    run = FederatedRun(cfg, world, workdir=paths.root)
    checkpoints = checkpoint_store(cfg, paths, world.manifest_sha256)
    summary = SummaryOutput(paths)
    observers = [
        PrefectReporter(str(checkpoints.directory), ui_url=cfg.tracking.ui_url),
        ModelOutputs(paths),  # the model is on disk before tracking or registration can fail
        FairnessOutputs(paths),
        MlflowObserver(config=cfg, paths=paths, checkpoint_dir=checkpoints.directory, executor=cfg.execution.executor),
        summary,
    ]
    run_training(run, executor_for(cfg), checkpoints=checkpoints, observers=observers, fresh=fresh)
    return summary.summary


def run_federated_training(cfg: Config, workdir: str = ".", *, fresh: bool = False) -> dict[str, Any]:
    """Run the flow with the task runner ``execution.executor`` names."""
    return federated_training.with_options(task_runner=task_runner(cfg))(cfg.to_params(), None, workdir, fresh)
