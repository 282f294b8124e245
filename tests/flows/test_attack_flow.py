"""Attacks through the real training flow: the attack step between training and encoding, robust
aggregation and anomaly flags in MLflow, attack runs tagged."""

import json
from pathlib import Path

import pytest
import torch

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_sign_flip_attack_is_flagged_and_tagged(prepared):
    from mlflow.tracking import MlflowClient

    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "server.rounds": 2, "server.fraction": 1.0, "execution.max_workers": 2,
        "server.aggregator": "median",
        "simulation": {"attack": {"name": "sign_flip", "scale": 10.0}, "malicious_fraction": 0.34},
    })
    summary = run_federated_training(cfg, str(prepared))
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    assert run.data.tags["fedops.attack"] == "sign_flip" and run.data.tags["fedops.malicious_clients"] == "2"
    assert run.data.tags["fedops.aggregator"] == "median"
    table = json.loads(Path(client.download_artifacts(summary["run_id"], "clients/round_0001.json")).read_text())
    assert len(table) == 6 and all(r["status"] == "ok" for r in table)
    # the two attackers send -10x their update: the two largest norms and the two largest Krum scores
    by_norm = sorted(table, key=lambda r: r["update_norm"])[-2:]
    by_krum = sorted(table, key=lambda r: r["krum_score"])[-2:]
    assert {r["client_id"] for r in by_norm} == {r["client_id"] for r in by_krum}
    assert min(r["update_norm"] for r in by_norm) > 3 * max(r["update_norm"] for r in table if r not in by_norm)
    by_z = sorted(table, key=lambda r: r["norm_z"])[-2:]
    assert {r["client_id"] for r in by_z} == {r["client_id"] for r in by_norm}  # the two largest norm z-scores
    # six clients, two of them attackers: fewer than quality.flag_min_clients (10), so nobody is flagged
    assert not any(r["flagged"] for r in table)
    flagged = [m.value for m in client.get_metric_history(summary["run_id"], "clients/flagged")]
    assert flagged == [0.0, 0.0]
    state = torch.load(prepared / "models" / "global.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_fltrust_trains_on_its_root_set_and_gives_sign_flippers_no_trust(prepared):
    from mlflow.tracking import MlflowClient

    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "server.rounds": 2, "server.fraction": 1.0, "execution.max_workers": 2,
        "server.aggregator": {"name": "fltrust", "root_size": 50},
        "simulation": {"attack": {"name": "sign_flip", "scale": 1.0}, "malicious_fraction": 0.34},
    })
    summary = run_federated_training(cfg, str(prepared))
    client = MlflowClient(summary["tracking_uri"])
    history = {k: [m.value for m in client.get_metric_history(summary["run_id"], f"aggregate/{k}")]
               for k in ("zero_trust_clients", "reference_norm", "mean_trust")}
    assert len(history["reference_norm"]) == 2 and min(history["reference_norm"]) > 0
    assert min(history["zero_trust_clients"]) >= 2  # the two sign-flipped updates point away from g0
    assert client.get_run(summary["run_id"]).data.tags["fedops.aggregator"] == "fltrust"
