"""The federated-training flow: load the prepared world, run the rounds through the executor the
config names (Prefect tasks on threads or Dask, or in process), track them in MLflow, write the
outputs. Resumes an interrupted run of the same config in the same work directory from its last
checkpointed round; ``fresh=True`` starts over. All round logic lives in :mod:`fedops.round`."""

from __future__ import annotations

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
    """Observer that remembers this job's Prefect flow runs; on resume, a previous flow run that a
    killed process left Running is set to Crashed."""

    def abandoned(self, extras: dict[str, Any]) -> None:
        self._crash(extras.get("prefect_flow_runs", []), "discarded by a later attempt (--fresh)")

    def started(self, run, *, resumed_from: int | None) -> None:
        from prefect.runtime import flow_run

        previous = list(run.extras.get("prefect_flow_runs", []))
        if resumed_from is not None:
            self._crash(previous, f"its process was killed; resumed from round {resumed_from} by flow run {flow_run.id}")
        if flow_run.id:
            run.extras["prefect_flow_runs"] = previous + [str(flow_run.id)]

    def round_done(self, run, record) -> None:
        pass

    def finished(self, run, result) -> None:
        pass

    def failed(self, run, *, status: str, error: BaseException) -> None:
        pass

    @staticmethod
    def _crash(ids: list[str], message: str) -> None:
        if not ids:
            return
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            for flow_run_id in ids:
                try:
                    state = client.read_flow_run(flow_run_id).state
                except Exception:  # the run may live in another Prefect database
                    continue
                if state is not None and state.is_running():
                    client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)


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
    observers = [PrefectFlowRuns(), MlflowObserver(config=cfg, paths=paths, checkpoint_dir=checkpoints.directory,
                                                   executor=cfg.execution.executor), outputs]
    run_training(run, executor_for(cfg), checkpoints=checkpoints, observers=observers, fresh=fresh)
    return outputs.summary


def run_federated_training(cfg: Config, workdir: str = ".", *, fresh: bool = False) -> dict[str, Any]:
    """Run the flow with the task runner ``execution.executor`` names."""
    return federated_training.with_options(task_runner=task_runner(cfg))(cfg.to_params(), workdir, fresh)
