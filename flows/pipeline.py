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


def run_stage(stage: str, cfg: Config, workdir: str = ".", *, fresh: bool = False) -> dict[str, Any]:
    """Run one named stage flow (what each DVC stage's ``cmd`` does). ``fresh``: the train stage
    starts over instead of resuming an interrupted run of the same config."""
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
def pipeline(config: dict[str, Any], workdir: str = ".", fresh: bool = False) -> dict[str, Any]:
    cfg = _cfg(config)
    return {stage: run_stage(stage, cfg, workdir, fresh=fresh) for stage in STAGES}
