"""Prefect deployments: ``fedops serve CONFIG --workdir DIR`` (or ``python -m flows.deployments``)
serves the pipeline and the federated-training flow; trigger runs from the Prefect UI or with

    prefect deployment run 'federated-training/default' --param overrides='{"server.rounds": 2}'

Parameters are small and typed: ``config`` (a preset name such as ``tiny``, or a YAML path; the
served default is the file given to ``fedops serve``), ``overrides`` (config keys to change, dotted
or nested; merged key by key and validated like the CLI's ``--set``), ``workdir`` and ``fresh``.
"""

from __future__ import annotations

from pathlib import Path

from fedops.config import load_config
from flows.pipeline import pipeline
from flows.training import federated_training

ROOT = Path(__file__).resolve().parents[1]


def build_deployments(config: Path = ROOT / "params.yaml", workdir: Path = ROOT):
    config = Path(config).resolve()
    load_config(config)  # refuse a bad config before serving it
    params = {"config": str(config), "overrides": {}, "workdir": str(Path(workdir).resolve()), "fresh": False}
    return [
        pipeline.to_deployment(name="default", parameters=params, tags=["fedops"],
                               description="prepare -> validate -> partition -> train -> evaluate -> baseline"),
        federated_training.to_deployment(name="default", parameters=params, tags=["fedops"],
                                         description="federated training (runs the data stages first on a "
                                                     "fresh work directory; resumes an interrupted run)"),
    ]


def serve_all(config: Path = ROOT / "params.yaml", workdir: Path = ROOT) -> None:
    from prefect import serve

    serve(*build_deployments(config, workdir))


if __name__ == "__main__":  # pragma: no cover
    serve_all()
