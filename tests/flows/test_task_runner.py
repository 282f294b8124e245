"""The flow's task runner for ``execution.executor``: a local Dask cluster's workers report to the
flow's own Prefect API (without it each worker process would start an ephemeral API server of its
own and record its task runs there)."""

import os
from pathlib import Path

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_a_local_dask_clusters_workers_get_the_flows_prefect_api():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.executors import prefect_api_url, task_runner

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"execution.executor": "dask"})
    before = os.environ.get("PREFECT_API_URL")
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4999/api"}):
        runner = task_runner(cfg)
        assert prefect_api_url() == "http://127.0.0.1:4999/api"
    assert runner.cluster_kwargs["env"] == {"PREFECT_API_URL": "http://127.0.0.1:4999/api"}
    assert runner.cluster_kwargs["n_workers"] == cfg.execution.max_workers
    assert os.environ.get("PREFECT_API_URL") == before  # nothing else was changed


def test_an_existing_dask_cluster_is_reached_by_its_address():
    from flows.executors import task_runner

    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"execution.executor": "dask",
                                                       "execution.dask_address": "tcp://127.0.0.1:8786"})
    assert task_runner(cfg).address == "tcp://127.0.0.1:8786"
