"""Crash-resume through the CLI: `fedops stage train` is SIGKILLed at named points of a round
(``FEDOPS_FAILPOINTS``) and run again. Each rerun resumes from the last complete round; the run
that finally finishes has the same model bytes as an uninterrupted run, one MLflow run with every
metric step logged exactly once, status FINISHED, epsilon continuing, one registered version, and
no Prefect flow run left Running."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FEDOPS = str(Path(sys.executable).parent / "fedops")
pytestmark = pytest.mark.slow

BASE = {
    "name": "crash-tiny", "seed": 0,
    "data": {"name": "synthetic", "num_train": 600, "num_test": 200, "num_classes": 4, "image_size": 8},
    "partition": {"num_clients": 6, "name": "dirichlet", "alpha": 1.0, "min_size": 10},
    "model": {"name": "small_cnn", "channels": [8, 16], "hidden": 32},
    "client": {"epochs": 1, "batch_size": 16, "lr": 0.3},
    "server": {"rounds": 6, "fraction": 0.5},
    "baseline": {"enabled": False},
}


def _config(tmp: Path, name: str, **sections) -> Path:
    data = {**BASE, **sections, "name": name}
    data["server"] = {**BASE["server"], **sections.get("server", {})}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _train(config: Path, work: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FEDOPS_FAILPOINTS"}
    if failpoint:
        env["FEDOPS_FAILPOINTS"] = failpoint
    return subprocess.run([FEDOPS, "stage", "train", "--params", str(config), "--workdir", str(work)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)


def _manifest(work: Path) -> dict | None:
    found = list((work / "checkpoints" / "train").glob("*/manifest.json"))
    assert len(found) <= 1, found
    return json.loads(found[0].read_text()) if found else None


def _prepare(config: Path, work: Path):
    from flows.pipeline import run_stage

    cfg = load_config(config)
    for stage in ("prepare", "validate", "partition"):
        run_stage(stage, cfg, str(work))
    return cfg


def _reference(cfg, work: Path):
    """The uninterrupted run, in process (bitwise equal to the flow: see test_executors)."""
    from fedops.paths import Paths
    from fedops.round import load_world
    from fedops.simulation import simulate

    return simulate(load_world(cfg, Paths.at(work)), cfg)


def _chain(config: Path, work: Path, points: list[tuple[str, int | None]]) -> dict:
    for point, expected_round in points:
        proc = _train(config, work, point)
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-3000:])
        manifest = _manifest(work)
        assert (manifest and manifest["round"]) == expected_round and not (manifest or {}).get("finished"), point
    proc = _train(config, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _check_tracking(summary: dict, reference, *, rounds: int, keys: list[str]):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    runs = client.search_runs([run.info.experiment_id], filter_string="tags.`fedops.role` = 'federated'")
    assert [r.info.run_id for r in runs] == [summary["run_id"]]  # one MLflow run for the whole job
    assert run.info.status == "FINISHED" and run.data.tags["fedops.resumed"] == "true"
    for key in keys:
        history = client.get_metric_history(summary["run_id"], key)
        assert sorted(m.step for m in history) == list(range(1, rounds + 1)), key  # each step exactly once
    for key in ("privacy/epsilon", "test/accuracy"):
        if key in keys:
            logged = [m.value for m in sorted(client.get_metric_history(summary["run_id"], key), key=lambda m: m.step)]
            expected = [h[key] for h in reference.history]
            assert logged == pytest.approx(expected, rel=1e-12), key
    versions = [v for v in client.search_model_versions(f"name = '{summary['registered_model']}'")
                if v.run_id == summary["run_id"]]
    assert len(versions) == 1
    return client, run


def _check_prefect_runs(work: Path, attempts: int):
    """Every flow run of the job ended: the killed ones were set to Crashed when the job went on."""
    import hashlib

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    manifest = _manifest(work)
    job = str(work.resolve() / "checkpoints" / "train" / manifest["key"])
    tag = "fedops-job:" + hashlib.sha256(job.encode()).hexdigest()[:12]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
    states = sorted(r.state.type.value for r in runs)
    assert states == ["COMPLETED"] + ["CRASHED"] * (attempts - 1), states


def test_plain_fedavg_killed_at_nine_points_ends_like_an_uninterrupted_run(tmp_path):
    config = _config(tmp_path, "crash-plain")
    work = tmp_path / "work"
    cfg = _prepare(config, work)
    reference = _reference(cfg, work)
    summary = _chain(config, work, [
        ("run.started", None),  # the MLflow run exists, no checkpoint yet: the rerun adopts the run
        ("client.train@2", 1),  # inside a client's training
        ("server.aggregate@3", 2),  # in the server's aggregation
        ("round.evaluate@3", 2),  # during evaluation
        ("checkpoint.written@4", 3),  # the new state file is written, not yet renamed
        ("checkpoint.renamed@4", 3),  # renamed, the manifest still names round 3
        ("tracking.artifacts@4", 4),  # during MLflow logging: client table logged, metrics not
        ("round.tracked@5", 5),  # between rounds
        ("run.registering", 6),  # the model logged, not yet registered
    ])
    assert summary["model_params_sha256"] == reference.digest
    assert summary["rounds"] == 6 and summary["resumed_from"] == 6
    keys = ["test/accuracy", "train/loss", "clients/selected", "comm/bytes_up", "time/round_s"]
    client, run = _check_tracking(summary, reference, rounds=6, keys=keys)
    tables = sorted(a.path for a in client.list_artifacts(summary["run_id"], "clients"))
    assert tables == [f"clients/round_{r:04d}.json" for r in range(1, 7)]
    assert run.data.tags["model.params_sha256"] == reference.digest
    _check_prefect_runs(work, attempts=10)
    # the finished job's checkpoint does not resume: the same command trains a new run
    again = _train(config, work)
    assert again.returncode == 0 and json.loads(again.stdout)["run_id"] != summary["run_id"]


SEEDED_DP = {"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0, "adaptive_clipping": True,
             "clip_count_stddev": 1.0, "randomness": "seeded"}


def test_dp_with_secure_aggregation_resumes_to_the_same_bytes_and_epsilon(tmp_path):
    config = _config(tmp_path, "crash-dp-secagg", privacy=SEEDED_DP,
                     server={"fraction": 1.0, "selector": "poisson", "min_clients": 1},
                     secagg={"enabled": True, "scale": 65536.0, "dropout_fraction": 0.17, "dropout_stage": "share"})
    work = tmp_path / "work"
    cfg = _prepare(config, work)
    reference = _reference(cfg, work)
    summary = _chain(config, work, [("client.train@2", 1), ("checkpoint.written@3", 2), ("tracking.artifacts@4", 4)])
    assert summary["model_params_sha256"] == reference.digest
    assert summary["privacy_epsilon"] == pytest.approx(reference.history[-1]["privacy/epsilon"], rel=1e-12)
    _check_tracking(summary, reference, rounds=6, keys=["privacy/epsilon", "privacy/clip_norm", "test/accuracy"])


def test_dp_with_error_feedback_resumes_to_the_same_bytes(tmp_path):
    config = _config(tmp_path, "crash-dp-ef", privacy=SEEDED_DP,
                     server={"selector": "poisson", "min_clients": 1},
                     transport={"codec": {"name": "topk", "fraction": 0.1, "error_feedback": True}})
    work = tmp_path / "work"
    cfg = _prepare(config, work)
    reference = _reference(cfg, work)
    summary = _chain(config, work, [("server.aggregate@3", 2), ("checkpoint.renamed@5", 4)])
    assert summary["model_params_sha256"] == reference.digest
    _check_tracking(summary, reference, rounds=6, keys=["privacy/epsilon", "test/accuracy"])


def test_dp_with_os_randomness_resumes_its_epsilon_not_its_noise(tmp_path):
    # q = 1: the OS-random Poisson sample is never empty (an empty one fails a DP round)
    config = _config(tmp_path, "crash-dp-os", server={"rounds": 4, "selector": "poisson", "min_clients": 1, "fraction": 1.0},
                     privacy={"mode": "central", "noise_multiplier": 0.8, "clip_norm": 1.0})
    work = tmp_path / "work"
    cfg = _prepare(config, work)
    from opacus.accountants import RDPAccountant

    acc, expected = RDPAccountant(), []
    for _ in range(4):
        acc.step(noise_multiplier=0.8, sample_rate=1.0)
        expected.append(acc.get_epsilon(delta=cfg.privacy.delta))
    # SIGTERM (what timeout, systemd and Kubernetes send) after round 2: a clean stop, run KILLED
    proc = _train(config, work, "round.tracked@2=term")
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in proc.stderr and "Traceback" not in proc.stderr
    assert _manifest(work)["round"] == 2
    from mlflow.tracking import MlflowClient

    killed = MlflowClient(f"sqlite:///{work / 'mlflow' / 'mlflow.db'}").search_runs(
        ["1"], filter_string="tags.`fedops.role` = 'federated'")
    assert [r.info.status for r in killed] == ["KILLED"]
    summary = _chain(config, work, [])

    client = MlflowClient(summary["tracking_uri"])
    eps = sorted(client.get_metric_history(summary["run_id"], "privacy/epsilon"), key=lambda m: m.step)
    assert [m.step for m in eps] == [1, 2, 3, 4]  # continued after round 2, not restarted
    assert [m.value for m in eps] == pytest.approx(expected, rel=1e-9)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["fedops.resumed_1_from_round"] == "2"
    assert run.data.tags["fedops.privacy_randomness"] == "os"
