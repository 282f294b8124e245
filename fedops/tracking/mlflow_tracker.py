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
EXPERIMENT_KIND = "mlflow.experimentKind"
TRAINING = "custom_model_development"
"""MLflow 3's UI opens an experiment of this kind on its training runs (not the GenAI overview)."""


def resolve_tracking_uri(configured: str | None, mlflow_dir: Path) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}"
    _ensure_store(uri, mlflow_dir / "artifacts")
    return uri


def _ensure_store(tracking_uri: str, artifact_dir: Path | None) -> None:
    """Create an embedded SQLite store with its artifact root inside the work directory (MLflow
    would otherwise give its Default experiment ``./mlruns`` in the current directory)."""
    if artifact_dir is None or not tracking_uri.startswith("sqlite:///"):
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if db.is_file():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    artifact_dir.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(tracking_uri, artifact_dir.resolve().as_uri())


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
        _ensure_store(tracking_uri, artifact_dir)
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
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                                   tags={EXPERIMENT_KIND: TRAINING})
            else:
                self.experiment_id = exp.experiment_id
                if EXPERIMENT_KIND not in exp.tags:  # opens on its runs, not MLflow 3's GenAI overview
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, TRAINING)
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

    def log_model(self, model, *, input_example: Any, name: str = "model") -> str:
        """Log the torch model once per run (a resumed run reuses it) and return its URI.

        Stored as an exported program (``serialization_format="pt2"``: weights and graph, loading
        it runs no pickle), with the signature MLflow infers from ``input_example``; it loads
        back with ``mlflow.pytorch.load_model``."""
        import mlflow.pytorch

        logged = [m for m in self._mlflow.search_logged_models(
            experiment_ids=[self.experiment_id], filter_string=f"source_run_id = '{self.run_id}'", output_format="list")
            if m.name == name]
        if logged:
            return logged[0].model_uri
        with self._mlflow.start_run(run_id=self.run_id, nested=False):
            info = mlflow.pytorch.log_model(model.cpu().eval(), name=name, serialization_format="pt2",
                                            input_example=input_example,
                                            pip_requirements=[f"torch=={_version('torch')}", "fedops"])
        return info.model_uri

    def register(self, model_uri: str, registered_model_name: str) -> str:
        """Register the run's model once (a resumed run reuses its version); returns the version."""
        from fedops import failpoints

        failpoints.hit("run.registering")
        versions = [v for v in self.client.search_model_versions(f"name = '{registered_model_name}'")
                    if v.run_id == self.run_id]
        if versions:
            return str(versions[0].version)
        return str(self._mlflow.register_model(model_uri, registered_model_name).version)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    @property
    def ui_hint(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} at {self.tracking_uri}"



def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
