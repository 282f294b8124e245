"""Contribution, reputation and points through the real pipeline (CLI, Prefect, MLflow, a SQLite
ledger in the work directory): the client table's crowd columns, the contribution table and plot,
the points and the ledger's view in MLflow, the events in the ledger, and `fedops ledger`."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_crowd_features_through_the_pipeline(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = yaml.safe_load((ROOT / "configs" / "pima.yaml").read_text())
    cfg.update(name="pima-crowd", baseline={"enabled": False},
               devices={"source": "ranges", "ranges": {"dropout_prob": [0.2, 0.2]}},
               contribution={"enabled": True, "estimator": "exact_shapley", "validation_size": 100},
               reputation={"enabled": True, "task": "pima-task"},
               incentives={"budget": 100, "scheme": "contribution", "floor": 5})
    cfg["server"]["rounds"] = 4
    path = tmp_path / "pima.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "fedops.cli", "run", str(path), "--workdir", str(work)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads((work / "reports" / "train.json").read_text())
    points = summary["incentive_points"]
    assert points and sum(points.values()) == pytest.approx(100) and min(points.values()) >= 5
    assert summary["reputation_task"] == "pima-task" and summary["simulated_time_s"] > 0

    with sqlite3.connect(work / "ledger.db") as db:  # the default ledger: a SQLite file in the work directory
        kinds = dict(db.execute("select kind, count(*) from fedops_ledger_events group by kind").fetchall())
        rounds = [r for (r,) in db.execute("select distinct round from fedops_ledger_events where round is not null")]
    assert sorted(rounds) == [1, 2, 3, 4]
    assert kinds["points"] == len(points) and kinds["completed"] == kinds["contribution"]

    client = MlflowClient(summary["tracking_uri"])
    run_id = summary["run_id"]
    rows = json.loads(Path(client.download_artifacts(run_id, "clients/round_0001.json", str(tmp_path))).read_text())
    for row in rows:
        assert {"selection", "sim_start_s", "sim_end_s", "reputation"} <= set(row)
        assert ("contribution" in row) == (row["status"] == "ok")
    artifacts = {a.path for d in ("contribution", "incentives", "reputation", "plots")
                 for a in client.list_artifacts(run_id, d)}
    assert {"contribution/table.json", "incentives/points.json", "reputation/task_events.json",
            "reputation/clients.json", "plots/contribution.png"} <= artifacts
    history = client.get_metric_history(run_id, "time/simulated_round_s")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert client.get_metric_history(run_id, "incentives/points_total")[0].value == pytest.approx(100)

    out = tmp_path / "events.csv"
    shown = subprocess.run([sys.executable, "-m", "fedops.cli", "ledger", str(path), "--workdir", str(work),
                            "--events-csv", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "reputation" in shown.stdout and "belief" in shown.stdout
    with open(out) as fh:
        assert len(list(csv.DictReader(fh))) == sum(kinds.values())
