"""CrowdFL's bad-data client through the real stages and flow: the client's own Great
Expectations suite fails on its missing values, the manifest records it, and the training flow
excludes it (or keeps it) as quality.bad_data says, visibly in MLflow."""

import json
from pathlib import Path

import pytest

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _pima_available():
    from fedops.data import pima

    return pima.SYSTEM_FILE.is_file() or (ROOT / pima.EXTRACTED_FILE).is_file()


@pytest.mark.skipif(not _pima_available(), reason="r-cran-mlbench data not available")
@pytest.mark.parametrize("policy", ["exclude", "keep"])
def test_missing_values_client_is_found_by_validation_and_handled(tmp_path, policy):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import run_stage
    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "pima.yaml", {
        "server.rounds": 2, "baseline.enabled": False, "quality.bad_data": policy,
        "simulation.missing_values": {"clients": [2], "rate": 0.5},
    })
    for stage in ("prepare", "validate", "partition"):
        run_stage(stage, cfg, str(tmp_path))
    manifest = json.loads((tmp_path / "data" / "partitions" / "manifest.json").read_text())
    assert [c["validation"] for c in manifest["clients"]] == ["passed", "passed", "failed"]
    assert "expect_column_values_to_not_be_null[glucose]" in manifest["clients"][2]["validation_failures"]
    summary = run_federated_training(cfg, str(tmp_path))
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    assert run.data.tags["fedops.bad_data_clients"] == "2" and run.data.tags["fedops.bad_data_policy"] == policy
    table = json.loads(Path(client.download_artifacts(summary["run_id"], "clients/round_0002.json")).read_text())
    rows = {r["client_id"]: r for r in table}
    assert rows[2]["data_validation"] == "failed"
    if policy == "exclude":
        assert rows[2]["status"] == "rejected" and "not_be_null" in rows[2]["reason"] and "train_loss" not in rows[2]
        assert run.data.metrics["clients/aggregated"] == 2 and run.data.metrics["clients/rejected"] == 1
    else:
        assert rows[2]["status"] == "ok" and run.data.metrics["clients/aggregated"] == 3
