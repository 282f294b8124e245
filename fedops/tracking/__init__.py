"""The only package that imports mlflow: turns metrics dicts and artifacts into MLflow calls."""

from fedops.tracking.mlflow_tracker import RunTracker, resolve_tracking_uri
from fedops.tracking.observer import MlflowObserver

__all__ = ["MlflowObserver", "RunTracker", "resolve_tracking_uri"]
