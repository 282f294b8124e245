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


def test_the_servers_own_jobs_run_on_threads_of_their_own_without_task_runs():
    import threading

    from fedops.round.executor import Job
    from flows.executors import PrefectExecutor

    calls, names = [], set()

    def shard(item, *, round_idx, tag):
        calls.append(item)
        names.add(threading.current_thread().name)
        if item == 1:
            raise ValueError(f"shard {item} broke in round {round_idx}")
        return (item, tag)

    job = Job(name="evaluate-shard", item="shard", fn=shard, task=False)
    ex = PrefectExecutor(retries=2, workers=2)
    # outside any flow: a task run would need Prefect's engine; these never reach it
    out = ex.map(job, [0, 1, 2], round_idx=3, shared={"tag": "t"})
    assert out.results == {0: (0, "t"), 2: (2, "t")}
    assert out.failures == {1: "ValueError: shard 1 broke in round 3"}
    assert calls.count(1) == 3  # the task's retries: 1 + 2
    assert names and all(n.startswith("fedops-evaluate-shard") for n in names)
    pool = ex._pool
    ex.map(job, [0], round_idx=4, shared={"tag": "u"})
    assert ex._pool is pool  # the same threads every round
