"""The deployment path as the README documents it: a Prefect server on 127.0.0.1 (the session's),
`fedops serve CONFIG --workdir DIR`, and `prefect deployment run 'federated-training/default'`
with one override on a fresh work directory. The run completes, its log holds a line per round,
its result artifact links the MLflow run, and the MLflow run's tags link back."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path, prefect_api):
    if not prefect_api:
        pytest.skip("no Prefect server for this session")
    work = tmp_path / "work"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(BIN / "fedops"), "serve", str(ROOT / "configs" / "tiny.yaml"), "--workdir", str(work)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:
        from prefect.client.orchestration import get_client

        deadline = time.time() + 120
        while True:
            try:
                with get_client(sync_client=True) as client:
                    client.read_deployment_by_name("federated-training/default")
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(1)
        yield work, env
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def test_a_deployment_runs_on_a_fresh_work_dir_and_links_mlflow(served):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    work, env = served
    proc = subprocess.run([str(BIN / "prefect"), "deployment", "run", "federated-training/default",
                           "--param", 'overrides={"server.rounds": 2}', "--watch"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((work / "reports" / "train.json").read_text())
    assert summary["rounds"] == 2
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        run = next(r for r in runs if r.id and str(r.id) == MlflowClient(summary["tracking_uri"]).get_run(
            summary["run_id"]).data.tags["prefect.flow_run_id"])
        assert run.state.is_completed()
        deadline = time.time() + 30  # the served process ships its log lines in batches
        while True:
            logs = [entry.message for entry in client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
            if any(line.startswith("round 2/2") for line in logs) or time.time() > deadline:
                break
            time.sleep(1)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    assert [line for line in logs if line.startswith("round 1/2")] and [line for line in logs if line.startswith("round 2/2")], logs
    result = next(a for a in artifacts if a.key == "federated-training-result")
    assert summary["run_id"] in result.data and "test accuracy" in result.data
    tags = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"]).data.tags
    assert tags["prefect.flow_run_id"] == str(run.id) and tags["prefect.flow_run_url"].endswith(str(run.id))
    # the MLflow pages: a training experiment, one client table across rounds, the curves as a picture
    client = MlflowClient(summary["tracking_uri"])
    run_info = client.get_run(summary["run_id"])
    experiment = client.get_experiment(run_info.info.experiment_id)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    names = {a.path for a in client.list_artifacts(summary["run_id"])} | {
        a.path for a in client.list_artifacts(summary["run_id"], "plots")}
    assert {"clients.json", "plots/curves.png"} <= names, names
    table = json.loads(Path(client.download_artifacts(summary["run_id"], "clients.json")).read_text())
    rounds = {row[table["columns"].index("round")] for row in table["data"]}
    assert rounds == {1, 2} and "client_id" in table["columns"]
    assert Path(experiment.artifact_location.replace("file://", "")).resolve().is_relative_to(work.resolve())
