"""MLflow tracking for fedops runs.

Embedded default: a SQLite store and artifacts under ``<workdir>/mlflow/``; a tracking URI in the
config or ``MLFLOW_TRACKING_URI`` overrides it.  Logging is batched: one ``log_batch`` call per
round for all of that round's metrics.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000


def resolve_tracking_uri(configured: str | None, mlflow_dir: Path) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}"


class RunTracker:
    """One MLflow run (create or resume), logged through ``MlflowClient``."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        artifact_dir: Path | None,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # the pickle-format notice
        self._mlflow = mlflow
        # The fluent API (log_model) needs the global URI; mlflow.set_tracking_uri also exports it
        # as MLFLOW_TRACKING_URI, which would send every later run of this process (another
        # work directory, another deployment run) to this store: keep the user's variable as it was.
        user_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(tracking_uri)
        if user_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = user_env
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.run_id = run.info.run_id
            self.experiment_id = run.info.experiment_id
            if run.info.status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                location = artifact_dir.resolve().as_uri() if artifact_dir is not None else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                self.experiment_id = exp.experiment_id
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags or {})
            self.run_id = run.info.run_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], *, step: int, timestamp_ms: int | None = None) -> None:
        """One batch (one transaction in the SQL store). With the same ``timestamp_ms`` and values,
        logging a step again adds nothing: MLflow keys a metric point by (key, timestamp, step, value)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MAX_METRICS_PER_BATCH])

    def logged_steps(self, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    @property
    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(
        self,
        model,
        *,
        name: str = "model",
        registered_model_name: str | None = None,
        alias: str | None = None,
    ) -> str | None:
        """Log the torch model (pickle format: fast, loads back the class) and register it; returns
        the registered version. Idempotent per run: a model this run already logged, or a version
        already registered from it, is reused (a resumed run registers once)."""
        import mlflow.pytorch

        from fedops import failpoints

        logged = [m for m in self._mlflow.search_logged_models(
            experiment_ids=[self.experiment_id], filter_string=f"source_run_id = '{self.run_id}'", output_format="list")
            if m.name == name]
        if logged:
            model_uri = logged[0].model_uri
        else:
            with self._mlflow.start_run(run_id=self.run_id, nested=False):
                info = mlflow.pytorch.log_model(model.cpu(), name=name, serialization_format="pickle",
                                                pip_requirements=["torch", "fedops"])
            model_uri = info.model_uri
        if not registered_model_name:
            return None
        failpoints.hit("run.registering")
        versions = [v for v in self.client.search_model_versions(f"name = '{registered_model_name}'")
                    if v.run_id == self.run_id]
        if versions:
            version = str(versions[0].version)
        else:
            version = str(self._mlflow.register_model(model_uri, registered_model_name).version)
        if alias:
            self.client.set_registered_model_alias(registered_model_name, alias, version)
        return version

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    @property
    def ui_hint(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} at {self.tracking_uri}"

