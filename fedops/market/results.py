"""A task's state, progress and results, read from where they live: the flow runs' states from
Prefect, the per-round metrics, participants, points and registered model from the task's MLflow
store, reputations from the ledger. Nothing here is stored by the market."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any


def flow_runs(ids: list[str]) -> list[dict[str, Any]]:
    """Each flow run's state, in the order the runs were triggered."""
    if not ids:
        return []
    from prefect.client.orchestration import get_client

    from flows.training import flow_run_url

    out = []
    with get_client(sync_client=True) as client:
        for fid in ids:
            run = client.read_flow_run(fid)
            out.append({"id": str(run.id), "state": run.state.name if run.state else "unknown",
                        "type": run.state.type.value if run.state else "UNKNOWN", "url": flow_run_url(str(run.id))})
    return out


def tracking_uri(workdir: Path) -> str | None:
    db = Path(workdir) / "mlflow" / "mlflow.db"
    return f"sqlite:///{db}" if db.is_file() else None


def training_run(workdir: Path, flow_run_ids: list[str]):
    """The task's MLflow run (the one its flow runs tagged), or None before it exists."""
    uri = tracking_uri(workdir)
    if uri is None:
        return None, None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    wanted = set(flow_run_ids)
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=50):
            if run.data.tags.get("prefect.flow_run_id") in wanted:
                return client, run
    return client, None


def statistics(workdir: Path, flow_run_ids: list[str]) -> dict[str, Any]:
    """Per-round accuracy and loss, each client's rounds and points, the registered model."""
    client, run = training_run(workdir, flow_run_ids)
    out: dict[str, Any] = {"run_id": None, "rounds": [], "clients": {}, "points": {}, "model": None,
                           "status": None, "tracking_uri": tracking_uri(workdir)}
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


def model_archive(workdir: Path, name: str, version: str) -> bytes:
    """The registered model version's files as a zip (sorted names, fixed timestamps: the same
    version always gives the same bytes)."""
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(workdir)
    source = MlflowClient(uri, registry_uri=uri).get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=uri))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(str(path.relative_to(local)), date_time=(1980, 1, 1, 0, 0, 0))
                zf.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
        return buf.getvalue()


def owner_history(ledger_url: str, owner_id: str) -> dict[str, Any]:
    """An owner's reputation (the ledger's opinion over all its tasks), points per task, events."""
    from fedops.reputation import Ledger

    ledger = Ledger(ledger_url)
    try:
        events = ledger.events(client=owner_id)
        opinion = ledger.opinions([owner_id])[owner_id]
    finally:
        ledger.dispose()
    tasks: dict[str, dict[str, Any]] = {}
    for e in events:
        t = tasks.setdefault(e["task"], {"task": e["task"], "points": 0.0, "completed": 0, "dropped": 0,
                                         "rejected": 0, "flagged": 0})
        if e["kind"] == "points":
            t["points"] += float(e["value"] or 0)
        elif e["kind"] in t:
            t[e["kind"]] += 1
    return {"reputation": float(opinion.reputation) if hasattr(opinion, "reputation") else None,
            "opinion": {k: float(getattr(opinion, k)) for k in ("belief", "disbelief", "uncertainty")
                        if hasattr(opinion, k)},
            "points": sum(t["points"] for t in tasks.values()), "tasks": list(tasks.values())}
