"""End to end: real Prefect flow runs, a real MLflow store in a temporary directory, tiny data."""

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
FMNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from flows.pipeline import pipeline

    work = tmp_path_factory.mktemp("tiny")
    cfg = load_config(TINY)
    result = pipeline(cfg.to_params(), workdir=str(work))
    return cfg, work, result


def test_pipeline_flow_leaves_tracked_run_and_outputs(tiny_run):
    from mlflow.tracking import MlflowClient

    cfg, work, result = tiny_run
    train = result["train"]
    for rel in ("data/raw/synthetic/hashes.json", "data/partitions/manifest.json", "reports/validation.json",
                "reports/client_validation.json", "reports/partition_heatmap.png", "models/global.pt",
                "reports/metrics.json", "reports/baseline.json", "reports/rounds.csv"):
        assert (work / rel).is_file(), rel
    assert train["tracking_uri"] == f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(train["tracking_uri"])
    run = client.get_run(train["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["server.rounds"] == str(cfg.server.rounds)
    assert run.data.params["partition.partitioner.name"] == "dirichlet"
    for key in ("test/accuracy", "test/loss", "train/loss", "clients/selected", "clients/dropped",
                "comm/bytes_up", "comm/bytes_down", "time/round_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(1, cfg.server.rounds + 1)), key
    selected = client.get_metric_history(run.info.run_id, "clients/selected")[0].value
    up = client.get_metric_history(run.info.run_id, "comm/bytes_up")[0].value
    assert up == selected * 4 * train["num_params"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"clients", "data", "reports"} <= arts
    tables = [a.path for a in client.list_artifacts(run.info.run_id, "clients")]
    assert len(tables) == cfg.server.rounds
    data_arts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "data")}
    assert {"manifest.json", "partition_heatmap.png", "validation.json", "client_validation.json"} <= data_arts
    versions = client.search_model_versions(f"name='{cfg.name}'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    assert client.get_model_version_by_alias(cfg.name, "current").version == versions[0].version
    # the accuracy the version records (the run's final evaluation, for promotion without reloading)
    # is what the registered model scores when a user loads it
    from fedops.paths import Paths
    from fedops.round.world import load_world
    from fedops.tracking.promotion import ACCURACY_TAG, TEST_SET_TAG, model_accuracy, dataset_digest

    testset = load_world(cfg, Paths.at(work)).testset
    x, y = testset.x.numpy(), testset.y.numpy()
    tags = client.get_model_version(cfg.name, versions[0].version).tags
    assert tags[TEST_SET_TAG] == dataset_digest(x, y)
    assert float(tags[ACCURACY_TAG]) == model_accuracy(f"models:/{cfg.name}/{versions[0].version}", x, y)
    # the final model is a real classifier on this easy data, and the baseline run sits beside it
    assert result["evaluate"]["test_accuracy"] > 0.6
    base = client.get_run(result["baseline"]["run_id"])
    assert base.data.tags["fedops.role"] == "baseline" and base.info.experiment_id == run.info.experiment_id


def test_same_seed_gives_identical_model_bytes(tiny_run):
    from flows.training import run_federated_training

    cfg, work, result = tiny_run
    again = run_federated_training(cfg, str(work))
    assert again["model_params_sha256"] == result["train"]["model_params_sha256"]
    other = run_federated_training(cfg.model_copy(update={"seed": 1}), str(work))
    assert other["model_params_sha256"] != result["train"]["model_params_sha256"]


def test_dropouts_are_counted_and_too_many_fail_the_round(tiny_run):
    from mlflow.tracking import MlflowClient

    from fedops.config import parse_config
    from fedops.errors import RoundFailed
    from flows.training import run_federated_training

    cfg, work, _ = tiny_run
    params = cfg.to_params()
    params["simulation"] = {"dropout_prob": 0.4}
    params["execution"] = {**params["execution"], "retries": 1}
    summary = run_federated_training(parse_config(params), str(work))
    client = MlflowClient(summary["tracking_uri"])
    dropped = sum(m.value for m in client.get_metric_history(summary["run_id"], "clients/dropped"))
    assert dropped > 0
    table = json.loads(Path(client.download_artifacts(summary["run_id"], "clients/round_0001.json")).read_text())
    reasons = [r["reason"] for r in table if r["status"] == "dropped"]
    assert all("dropped out" in r for r in reasons)

    params["simulation"] = {"dropout_prob": 0.9}
    params["server"] = {**params["server"], "min_clients": 3}
    with pytest.raises(RoundFailed, match="server.min_clients = 3"):
        run_federated_training(parse_config(params), str(work))


def _cli(*args, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable, "-m", "fedops.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_corrupted_raw_file_stops_the_pipeline(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in FMNIST.glob("*-ubyte.gz"):
        shutil.copy(f, src / f.name)
    # a label file that is valid gzip with a label out of the class set
    labels = bytearray(gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8 + 5] = 11
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    # and a truncated image file
    data = (src / "train-images-idx3-ubyte.gz").read_bytes()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "fashion_mnist", "path": str(src)}, "server": {"rounds": 1}}))
    work = tmp_path / "work"

    proc = _cli("run", str(cfg), "--workdir", str(work))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "validation failed" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((work / "reports" / "validation.json").read_text())
    assert report["success"] is False
    assert not (work / "data" / "partitions").exists() and not (work / "models").exists()

    (src / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    proc = _cli("run", str(cfg), "--workdir", str(work))
    assert proc.returncode == 1
    assert "train-images-idx3-ubyte.gz" in proc.stderr
    assert json.loads((work / "reports" / "validation.json").read_text())["error"]
    assert not (work / "models").exists()
