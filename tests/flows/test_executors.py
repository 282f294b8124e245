"""The executor does not change the result: the in-process path, Prefect tasks on threads and
Prefect tasks on a Dask cluster (a real scheduler and two worker processes on 127.0.0.1, reached
by address) give bitwise-identical final models for the same config and seed."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

CASES = {
    "fedavg": {},
    "central_dp_adaptive": {
        "server.selector": "poisson", "server.min_clients": 1,
        "privacy": {"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0, "adaptive_clipping": True,
                    "clip_count_stddev": 1.0, "randomness": "seeded"}},
    "secagg_plus_dp": {
        "server.selector": "poisson", "server.min_clients": 1, "server.fraction": 1.0,
        "privacy": {"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0, "randomness": "seeded"},
        "secagg": {"enabled": True, "scale": 2.0**16, "dropout_fraction": 0.17, "dropout_stage": "share"}},
    "sign_flip_median": {"simulation": {"attack": "sign_flip", "malicious_fraction": 0.34},
                         "server.fraction": 1.0, "server.aggregator": "median"},
    "topk_error_feedback": {"transport.codec": {"name": "topk", "fraction": 0.1, "error_feedback": True}},
    "fedadam": {"server.optimizer": {"name": "fedadam", "lr": 0.05}},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory):
    """A Dask scheduler and two single-threaded workers, each its own process, on 127.0.0.1."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT,
                              env=env, cwd=ROOT)]
    for i in range(2):
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"],
                                      stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env,
                                      cwd=ROOT))
    try:
        from distributed import Client

        deadline = time.time() + 120
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1, deadline - time.time()))
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.parametrize("case", list(CASES))
def test_in_process_prefect_threads_and_dask_give_the_same_model_bytes(case, prepared, dask_address):
    from fedops.paths import Paths
    from fedops.round import load_world
    from fedops.simulation import simulate
    from flows.training import run_federated_training

    base = {"server.rounds": 3, "execution.max_workers": 2, **CASES[case]}
    cfg = load_config(ROOT / "configs" / "tiny.yaml", base)
    in_process = simulate(load_world(cfg, Paths.at(prepared)), cfg).digest
    threads = run_federated_training(cfg, str(prepared))
    dask = run_federated_training(
        load_config(ROOT / "configs" / "tiny.yaml", {**base, "execution.executor": "dask",
                                                     "execution.dask_address": dask_address}), str(prepared))
    assert threads["rounds"] == dask["rounds"] == 3
    assert threads["model_params_sha256"] == in_process
    assert dask["model_params_sha256"] == in_process


def test_the_cohort_executor_in_grouped_prefect_tasks_gives_the_in_process_bytes(prepared):
    """``execution.executor: cohort`` with two clients per task: the flow's model equals the
    in-process cohort run's, and its client work ran as ``train-clients`` task runs named by their
    first and last client."""
    from prefect import get_client
    from mlflow.tracking import MlflowClient
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId, TaskRunFilterName

    from fedops.paths import Paths
    from fedops.round import load_world
    from fedops.simulation import simulate
    from flows.training import run_federated_training

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {
        "server.rounds": 2, "execution.max_workers": 2, "execution.executor": "cohort",
        "execution.clients_per_task": 2, "name": "tiny-cohort-tasks"})
    in_process = simulate(load_world(cfg, Paths.at(prepared)), cfg).digest
    summary = run_federated_training(cfg, str(prepared), fresh=True)
    assert summary["rounds"] == 2 and summary["model_params_sha256"] == in_process
    # this flow run's task runs only: the session's Prefect server also holds other tests' runs
    flow_run_id = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"]).data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]), name=TaskRunFilterName(like_="round-2-clients-")))
    import re

    assert len(runs) >= 2 and all(r.state.is_completed() for r in runs)
    assert all(re.fullmatch(r"round-2-clients-\d+-\d+", r.name) for r in runs), [r.name for r in runs]
