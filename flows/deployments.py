"""Prefect deployments: ``fedops serve`` (or ``python -m flows.deployments``) serves the
pipeline and the federated-training flow; trigger runs with

    prefect deployment run 'federated-training/default' --param workdir=. --param config=...

or from the Prefect UI. Parameters are the resolved config (a mapping) and the work directory.
"""

from __future__ import annotations

from pathlib import Path

from fedops.config import load_config
from flows.pipeline import pipeline
from flows.training import federated_training

ROOT = Path(__file__).resolve().parents[1]


def build_deployments(config: Path = ROOT / "params.yaml", workdir: Path = ROOT):
    params = {"config": load_config(config).to_params(), "workdir": str(workdir)}
    return [
        pipeline.to_deployment(name="default", parameters=params, tags=["fedops"],
                               description="prepare -> validate -> partition -> train -> evaluate -> baseline"),
        federated_training.to_deployment(name="default", parameters=params, tags=["fedops"],
                                         description="federated training on prepared, partitioned data"),
    ]


def serve_all(config: Path = ROOT / "params.yaml", workdir: Path = ROOT) -> None:
    from prefect import serve

    serve(*build_deployments(config, workdir))


if __name__ == "__main__":  # pragma: no cover
    serve_all()
