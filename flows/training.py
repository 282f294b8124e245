"""The federated-training flow: load the prepared world, run the rounds through the executor the
config names (Prefect tasks on threads or Dask, or in process), track them in MLflow, write the
outputs. Resumes an interrupted run of the same config in the same work directory from its last
checkpointed round; ``fresh=True`` starts over. All round logic lives in :mod:`fedops.round`."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import flow

from fedops.config import Config
from fedops.paths import Paths
from fedops.round import CheckpointStore, FederatedRun, checkpoint_key, load_world, run_training
from fedops.round.outputs import WorkdirOutputs
from fedops.tracking import MlflowObserver
from flows.executors import executor_for, task_runner
from flows.stages import _cfg


class PrefectFlowRuns:
    """Observer that tags this flow run with its job (the checkpoint directory) and, when a job
    starts or is discarded, sets to Crashed any other flow run of the same job still Running: a
    process that held the job's checkpoint lock and was killed (SIGKILL leaves no chance to say so)."""

    def __init__(self, job: str) -> None:
        self.tag = "fedops-job:" + hashlib.sha256(job.encode()).hexdigest()[:12]

    def abandoned(self, extras: dict[str, Any]) -> None:
        self._sweep("discarded by a later attempt (--fresh)")

    def started(self, run, *, resumed_from: int | None) -> None:
        from prefect.runtime import flow_run

        if not flow_run.id:
            return
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            mine = client.read_flow_run(flow_run.id)
            client.update_flow_run(flow_run.id, tags=sorted({*mine.tags, self.tag}))
        self._sweep(f"its process ended without reporting (killed); the job continued in flow run {flow_run.id}"
                    + (f", resumed from round {resumed_from}" if resumed_from is not None else ""))

    def round_done(self, run, record) -> None:
        pass

    def finished(self, run, result) -> None:
        pass

    def failed(self, run, *, status: str, error: BaseException) -> None:
        pass

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


def checkpoint_store(cfg: Config, paths: Paths, manifest_sha256: str) -> CheckpointStore:
    key = checkpoint_key(cfg, manifest_sha256=manifest_sha256)
    return CheckpointStore(paths.checkpoints / key, key=key)


@flow(name="federated-training")
def federated_training(config: dict[str, Any], workdir: str = ".", fresh: bool = False) -> dict[str, Any]:
    """Run ``server.rounds`` rounds of federated training (resuming an interrupted run) and
    register the final model."""
    cfg, paths = _cfg(config), Paths.at(workdir)
    world = load_world(cfg, paths)
    run = FederatedRun(cfg, world)
    checkpoints = checkpoint_store(cfg, paths, world.manifest_sha256)
    outputs = WorkdirOutputs(paths)
    observers = [PrefectFlowRuns(str(checkpoints.directory)), MlflowObserver(config=cfg, paths=paths, checkpoint_dir=checkpoints.directory,
                                                   executor=cfg.execution.executor), outputs]
    run_training(run, executor_for(cfg), checkpoints=checkpoints, observers=observers, fresh=fresh)
    return outputs.summary


def run_federated_training(cfg: Config, workdir: str = ".", *, fresh: bool = False) -> dict[str, Any]:
    """Run the flow with the task runner ``execution.executor`` names."""
    return federated_training.with_options(task_runner=task_runner(cfg))(cfg.to_params(), workdir, fresh)
