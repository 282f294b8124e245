"""The only package that imports mlflow: turns metrics dicts and artifacts into MLflow calls."""

from fedops.tracking.mlflow_tracker import RunTracker, resolve_tracking_uri
from fedops.tracking.observer import MlflowObserver, mark_stale_runs

__all__ = ["MlflowObserver", "RunTracker", "mark_stale_runs", "resolve_tracking_uri"]
