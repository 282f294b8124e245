"""Executors that run a round's client work as Prefect tasks (see :mod:`fedops.round.executor`).

:class:`PrefectExecutor` maps one Prefect task per item (``train-client``, ``evaluate-shard``) with
the configured retries, on whatever task runner the flow runs with: a thread pool
(``execution.executor: threads``) or Dask through prefect-dask (``dask``: a local cluster of
single-threaded worker processes, or an existing cluster at ``execution.dask_address``). Under
Dask, large inputs (the clients' data, the test set, each round's global model) are scattered to
every worker once and the tasks receive references, not a pickled copy each.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

from prefect import task, unmapped
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from fedops.config import Config
from fedops.round.executor import Job, MapResult, SequentialExecutor, describe_failure


def _run_job(job: Job, item: Hashable, round_idx: int, shared: dict[str, Any]) -> Any:
    return job.fn(item, round_idx=round_idx, **shared)


class PrefectExecutor:
    def __init__(self, *, retries: int, retry_delay_s: float = 0.0, dask: bool = False) -> None:
        self.name = "dask" if dask else "threads"
        self.dask = dask
        self._tasks: dict[str, Any] = {}
        self._options = {"retries": retries, "retry_delay_seconds": retry_delay_s}

    def _task(self, job: Job):
        if job.name not in self._tasks:
            self._tasks[job.name] = task(
                _run_job, name=job.name, cache_policy=NONE, task_run_name=f"round-{{round_idx}}-{job.item}-{{item}}",
                **self._options,
            )
        return self._tasks[job.name]

    def share(self, value: Any) -> Any:
        if not self.dask:
            return value  # threads share the process's memory
        from prefect.context import FlowRunContext

        client = FlowRunContext.get().task_runner.client  # prefect-dask's distributed.Client (started on use)
        return client.scatter(value, broadcast=True, hash=False)

    def map(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any]) -> MapResult:
        items = list(items)
        out = MapResult()
        if not items:
            return out
        futures = self._task(job).map(job=unmapped(job), item=items, round_idx=unmapped(round_idx),
                                      shared=unmapped(dict(shared)))
        for item, fut in zip(items, futures):
            fut.wait()
            state = fut.state
            if state.is_completed():
                out.results[item] = fut.result()
            else:
                error = state.result(raise_on_failure=False)
                out.failures[item] = (describe_failure(error) if isinstance(error, BaseException)
                                      else (state.message or state.name).replace("\n", " ")[:500])
        return out


def task_runner(config: Config):
    """The flow's task runner for ``execution.executor``."""
    ex = config.execution
    if ex.executor == "dask":
        from prefect_dask import DaskTaskRunner

        if ex.dask_address:
            return DaskTaskRunner(address=ex.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": ex.max_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": ":0"})
    return ThreadPoolTaskRunner(max_workers=ex.max_workers)


def executor_for(config: Config):
    ex = config.execution
    if ex.executor == "sequential":
        return SequentialExecutor(retries=ex.retries)
    return PrefectExecutor(retries=ex.retries, retry_delay_s=ex.retry_delay_s, dask=ex.executor == "dask")
