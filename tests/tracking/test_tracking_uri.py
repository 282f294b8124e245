"""A run's store must not leak into the next run of the same process (another work directory)."""

import os

from fedops.tracking import RunTracker, resolve_tracking_uri


def test_a_tracker_does_not_redirect_later_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = resolve_tracking_uri(None, tmp_path / "a")
    RunTracker(tracking_uri=first, experiment="x", artifact_dir=tmp_path / "art", run_name="r").end("FINISHED")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_tracking_uri(None, tmp_path / "b") == f"sqlite:///{(tmp_path / 'b' / 'mlflow.db').resolve()}"


def test_the_users_variable_is_kept(tmp_path, monkeypatch):
    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    RunTracker(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}", experiment="x", artifact_dir=tmp_path / "art", run_name="r").end("FINISHED")
    assert os.environ["MLFLOW_TRACKING_URI"] == mine
    assert resolve_tracking_uri(None, tmp_path / "c") == mine
