"""The whole pipeline as one Prefect flow: prepare -> validate -> partition -> train -> evaluate
(-> centralised baseline).  ``dvc repro`` runs the same stage flows one per DVC stage."""

from __future__ import annotations

from typing import Any

from prefect import flow

from fedops.config import Config
from flows.evaluation import baseline_flow, evaluate_flow
from flows.stages import _cfg, partition_flow, prepare_flow, validate_flow
from flows.training import run_federated_training

STAGES = ("prepare", "validate", "partition", "train", "evaluate", "baseline")


def run_stage(stage: str, cfg: Config, workdir: str = ".", *, fresh: bool = False, wait: bool = False) -> dict[str, Any]:
    """Run one named stage flow (what each DVC stage's ``cmd`` does), holding the work
    directory's lock (``wait``: for another process to finish instead of refusing). ``fresh``: the
    train stage starts over instead of resuming an interrupted run of the same config."""
    from fedops.paths import Paths
    from fedops.workdir import workdir_lock

    paths = Paths.at(workdir)
    with workdir_lock(paths.root, wait=wait, what=f"stage {stage}"):
        _mark_stale(cfg, paths)
        return _run(stage, cfg, workdir, fresh=fresh)


def _mark_stale(cfg: Config, paths) -> None:
    """A training run of this work directory left RUNNING by a killed process becomes KILLED."""
    if not paths.checkpoints.is_dir():
        return
    from fedops.tracking import mark_stale_runs, resolve_tracking_uri

    mark_stale_runs(paths, resolve_tracking_uri(cfg.tracking.uri, paths.mlflow_dir))


def _run(stage: str, cfg: Config, workdir: str, *, fresh: bool) -> dict[str, Any]:
    params = cfg.to_params()
    if stage == "prepare":
        return prepare_flow(params, workdir)
    if stage == "validate":
        return validate_flow(params, workdir)
    if stage == "partition":
        return partition_flow(params, workdir)
    if stage == "train":
        return run_federated_training(cfg, workdir, fresh=fresh)
    if stage == "evaluate":
        return evaluate_flow(params, workdir)
    if stage == "baseline":
        if not cfg.baseline.enabled:
            return {"skipped": True}
        return baseline_flow(params, workdir)
    raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")


@flow(name="fedops-pipeline")
def pipeline(config: str | dict[str, Any] = "params.yaml", overrides: dict[str, Any] | None = None,
             workdir: str = ".", fresh: bool = False) -> dict[str, Any]:
    """The whole pipeline. ``config``: a preset name, a YAML path or a mapping; ``overrides``:
    config keys to change (dotted or nested)."""
    from fedops.paths import Paths
    from fedops.workdir import workdir_lock

    from fedops.round.crowd import check_ledger

    cfg = _cfg(config, overrides)
    check_ledger(cfg, Paths.at(workdir).root)  # an unreachable ledger: refused before any stage writes
    with workdir_lock(Paths.at(workdir).root, what="fedops-pipeline"):
        return {stage: run_stage(stage, cfg, workdir, fresh=fresh) for stage in STAGES}
