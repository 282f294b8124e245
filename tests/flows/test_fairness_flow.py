"""Fairness through the real pipeline (CLI, Prefect, MLflow): fairness metrics every round, the
report and picture as artifacts and in reports/, and a failing check that finishes the run, tags
it, registers the model without the 'current' alias and makes `fedops run` exit with status 3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_failing_fairness_check_gates_the_model(tmp_path):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    cfg = yaml.safe_load((ROOT / "configs" / "adult.yaml").read_text())
    cfg.update(name="adult-gate", model={"name": "mlp", "hidden": []}, baseline={"enabled": False})
    cfg["server"]["rounds"] = 2
    cfg["fairness"]["checks"] = {"max_dpd": 0.001, "min_client_acc_worst10": 0.05}
    path = tmp_path / "adult.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "fedops.cli", "run", str(path), "--workdir", str(work)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "fairness check failed: max_dpd: fairness/dpd = " in proc.stderr and "> 0.001 (by " in proc.stderr
    assert "min_client_acc_worst10" not in proc.stderr.split("fairness check failed:")[1]  # that one passed

    summary = json.loads((work / "reports" / "train.json").read_text())
    assert summary["fairness_passed"] is False and summary["fairness_failed"][0].startswith("max_dpd")
    report = json.loads((work / "reports" / "fairness.json").read_text())
    assert report["passed"] is False and report["sensitive_attribute"] == "sex"
    assert [c["check"] for c in report["checks"] if not c["passed"]] == ["max_dpd"]
    assert len(report["client_accuracy"]) == 2 and len(report["client_accuracy"][0]["accuracy"]) == 5
    assert (work / "reports" / "fairness.png").stat().st_size > 1000
    assert (work / "reports" / "metrics.json").is_file()  # the later stages ran: the run finished

    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["fedops.fairness_checks"] == "failed"
    assert run.data.tags["fedops.fairness_failed"].startswith("max_dpd: fairness/dpd = ")
    for key in ("fairness/dpd", "fairness/eod", "fairness/spd", "fairness/eqodds", "fairness/client_acc_std",
                "fairness/client_acc_worst10", "fairness/jain_index", "fairfed/global_metric"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "fairness")}
    assert {"fairness/report.json", "fairness/clients_round_0001.json", "fairness/clients_round_0002.json"} <= artifacts
    assert "plots/fairness.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    version = summary["registered_version"]
    assert version is not None and summary["promoted"] is False
    mv = client.get_model_version(summary["registered_model"], version)
    assert mv.tags["fedops.promotion"].startswith("not promoted: failed fairness checks: max_dpd")
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(summary["registered_model"], "current")
