"""A task's state, progress and results, read from where they live: the flow runs' states from
Prefect, the per-round metrics, participants, points and registered model from the task's MLflow
store, reputations from the ledger. Nothing here is stored by the market."""

from __future__ import annotations

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


def statistics(workdir: Path, flow_run_ids: list[str]) -> dict[str, Any]:
    """Per-round metrics, each client's rounds and points and the registered model, from the
    task's MLflow store (the work directory's, as the training flow made it)."""
    from fedops.tracking.readback import run_statistics

    return run_statistics(Path(workdir) / "mlflow", flow_run_ids)


def model_archive(workdir: Path, name: str, version: str) -> bytes:
    from fedops.tracking.readback import model_version_archive

    return model_version_archive(Path(workdir) / "mlflow", name, version)


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
    return {"reputation": float(opinion.reputation),
            "opinion": {"belief": float(opinion.belief), "disbelief": float(opinion.disbelief),
                        "uncertainty": float(opinion.uncertainty)},
            "points": sum(t["points"] for t in tasks.values()), "tasks": list(tasks.values())}
