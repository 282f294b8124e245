"""Reading a finished or running training back from its MLflow store: the run a Prefect flow run
tagged, its per-round metrics, client table, points and registered model version (the marketplace
shows these; it keeps no copy)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any


def store_uri(mlflow_dir: Path) -> str | None:
    """The embedded store of a work directory's ``mlflow/`` folder, None before it exists (nothing
    is created: a reader never makes a store)."""
    db = Path(mlflow_dir) / "mlflow.db"
    return f"sqlite:///{db}" if db.is_file() else None


def training_run(mlflow_dir: Path, flow_run_ids: list[str]):
    """The MLflow run that any of these Prefect flow runs tagged (``prefect.flow_run_id``), or None."""
    uri = store_uri(mlflow_dir)
    if uri is None:
        return None, None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    wanted = set(flow_run_ids)
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=50):
            if run.data.tags.get("prefect.flow_run_id") in wanted:
                return client, run
    return client, None


def run_statistics(mlflow_dir: Path, flow_run_ids: list[str]) -> dict[str, Any]:
    """Per-round accuracy and loss, each client's rounds and points, the registered model."""
    client, run = training_run(mlflow_dir, flow_run_ids)
    out: dict[str, Any] = {"run_id": None, "rounds": [], "clients": {}, "points": {}, "model": None,
                           "status": None, "tracking_uri": store_uri(mlflow_dir)}
    if run is None:
        return out
    rid = run.info.run_id
    out["run_id"], out["status"] = rid, run.info.status
    history: dict[int, dict[str, float]] = {}
    for key in ("test/accuracy", "test/loss", "clients/aggregated"):
        for m in client.get_metric_history(rid, key):
            history.setdefault(int(m.step), {})[key] = float(m.value)
    out["rounds"] = [{"round": r, **v} for r, v in sorted(history.items())]
    names = {a.path for a in client.list_artifacts(rid)} | {a.path for a in client.list_artifacts(rid, "incentives")}
    if "clients.json" in names:
        table = _json(client, rid, "clients.json")
        cols = table["columns"]
        per: dict[int, dict[str, Any]] = {}
        for row in table["data"]:
            r = dict(zip(cols, row))
            c = per.setdefault(int(r["client_id"]), {"selected": 0, "aggregated": 0})
            c["selected"] += 1
            c["aggregated"] += int(r.get("status") == "ok")
        out["clients"] = per
    if "incentives/points.json" in names:
        table = _json(client, rid, "incentives/points.json")
        rows = [dict(zip(table["columns"], row)) for row in table["data"]]
        out["points"] = {int(r["client_id"]): float(r["points"]) for r in rows}
    versions = client.search_model_versions(f"run_id = '{rid}'")
    if versions:
        v = max(versions, key=lambda v: int(v.version))
        out["model"] = {"name": v.name, "version": str(v.version), "source": v.source}
    return out


def _json(client, run_id: str, path: str) -> Any:
    return json.loads(Path(client.download_artifacts(run_id, path)).read_text())


def model_version_archive(mlflow_dir: Path, name: str, version: str) -> bytes:
    """The registered model version's files as a zip (sorted names, fixed timestamps: the same
    version always gives the same bytes)."""
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    uri = store_uri(mlflow_dir)
    source = MlflowClient(uri, registry_uri=uri).get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=uri))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(str(path.relative_to(local)), date_time=(1980, 1, 1, 0, 0, 0))
                zf.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
        return buf.getvalue()
