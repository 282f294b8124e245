"""Executors that run a round's client work as Prefect tasks (see :mod:`fedops.round.executor`).

:class:`PrefectExecutor` maps one Prefect task per item (``train-client``; ``evaluate-shard`` under
Dask) with the configured retries, on whatever task runner the flow runs with: a thread pool
(``execution.executor: threads``) or Dask through prefect-dask (``dask``: a local cluster of
single-threaded worker processes, or an existing cluster at ``execution.dask_address``). Under
Dask, large inputs (the clients' data, the test set, each round's global model) are scattered to
every worker once and the tasks receive references, not a pickled copy each.

By default for ``threads``, ``cohort`` and ``auto`` (and with ``execution.clients_per_task``) a
task trains a group of clients (``train-clients``, named by its first and last client): one
after another, or at once on the cohort path. The round's clients are spread over the groups by
their training rows, so the workers finish together. Each client still has its own result (its
row in the client table) and its own retries inside the task. One task per worker and round
instead of one per client: each task run costs Prefect's API server about 50 ms of CPU (its
task-run recorder), which on W1 took a third of a core beside the two training threads.

The server's evaluation of the global model (``evaluate-shard``, a job with ``task=False``) runs on
``max_workers`` threads of the flow's process without task runs, except under Dask, where the test
set lives on the workers: it is the server's work on its own data, and its two task runs a round
cost the API server about as much CPU as the clients' (W1 evaluates every round).
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

from prefect import task, unmapped
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from fedops.config import Config
from fedops.round.executor import (CohortChoice, Job, MapResult, SequentialExecutor, describe_failure, groups_of,
                                   run_group)


def _run_job(job: Job, item: Hashable, round_idx: int, shared: dict[str, Any]) -> Any:
    return job.fn(item, round_idx=round_idx, **shared)


def _run_group(job: Job, items: list[Hashable], first: Hashable, last: Hashable, round_idx: int,
               shared: dict[str, Any], retries: int, batch: bool, chunk_size: int | None,
               retry_delay_s: float = 0.0) -> MapResult:
    return run_group(job, items, round_idx=round_idx, shared=shared, retries=retries, batch=batch,
                     chunk_size=chunk_size, retry_delay_s=retry_delay_s)


class PrefectExecutor:
    def __init__(self, *, retries: int, retry_delay_s: float = 0.0, dask: bool = False, mode: str = "off",
                 group_size: Any = None, chunk_size: int | None = None, workers: int = 1) -> None:
        self.name = mode if mode != "off" else ("dask" if dask else "threads")
        self.workers = workers
        self._pool = None  # the threads of jobs that run without task runs (task=False), made on first use
        self.dask = dask
        self._tasks: dict[str, Any] = {}
        self._options = {"retries": retries, "retry_delay_seconds": retry_delay_s}
        self.retries, self.chunk_size = retries, chunk_size
        self.choice = CohortChoice(mode)
        self._reported = False
        self.group_size = group_size or (lambda n: 1)

    def _constant(self, value: Any) -> Any:
        """A parameter every task of the map receives as it is. On threads it is also quoted: Prefect
        would otherwise walk it for futures before each task (the client runtime's config and its
        1,000 partitions: ~50 ms a task on W2). Under Dask it is not, since Dask itself must find the
        scattered futures inside it."""
        return unmapped(value) if self.dask else quote(unmapped(value))

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

    def _group_task(self, job: Job):
        name = job.name.rsplit("-", 1)[0] + f"-{job.item}s"  # train-client -> train-clients
        if name not in self._tasks:  # retries are per client, inside the task
            self._tasks[name] = task(_run_group, name=name, cache_policy=NONE,
                                     task_run_name=f"round-{{round_idx}}-{job.item}s-{{first}}-{{last}}")
        return self._tasks[name]

    def _local_map(self, job: Job, items: list[Hashable], *, round_idx: int, shared: Mapping[str, Any]) -> MapResult:
        """Each item on ``workers`` threads that live as long as this executor (so their per-thread
        models are built once a run), with the tasks' retries and failure reasons."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"fedops-{job.name}")
        futures = [self._pool.submit(run_group, job, [item], round_idx=round_idx, shared=shared, retries=self.retries,
                                     batch=False, chunk_size=None, retry_delay_s=self._options["retry_delay_seconds"])
                   for item in items]
        out = MapResult()
        for fut in futures:
            part = fut.result()
            out.results.update(part.results)
            out.failures.update(part.failures)
        return out

    def map(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any],
            cost: Mapping[Hashable, float] | None = None) -> MapResult:
        items = list(items)
        out = MapResult()
        if not items:
            return out
        if not job.task and not self.dask:  # the server's own work: threads of its own, no task runs
            return self._local_map(job, items, round_idx=round_idx, shared=shared)
        size = self.group_size(len(items)) if job.batch_fn is not None else 1
        batch = self.choice.batch(job, items, round_idx=round_idx, shared=shared)
        if self.choice.probe is not None and not self._reported:  # auto's choice, in the flow run's log
            from prefect.logging import get_run_logger

            self._reported = True
            get_run_logger().info("execution.executor %s; the probe took %.2f s", self.choice.describe(),
                                  self.choice.probe["probe_s"])
        if size > 1 or batch:
            groups = groups_of(items, size, cost=cost)
            futures = self._group_task(job).map(
                job=self._constant(job), items=groups, first=[g[0] for g in groups], last=[g[-1] for g in groups],
                round_idx=unmapped(round_idx), shared=self._constant(dict(shared)), retries=unmapped(self.retries),
                retry_delay_s=unmapped(self._options["retry_delay_seconds"]),
                batch=unmapped(batch), chunk_size=unmapped(self.chunk_size))
            for group, fut in zip(groups, futures):
                fut.wait()
                if fut.state.is_completed():
                    part = fut.result()
                    out.results.update(part.results)
                    out.failures.update(part.failures)
                else:
                    error = fut.state.result(raise_on_failure=False)
                    why = (describe_failure(error) if isinstance(error, BaseException)
                           else (fut.state.message or fut.state.name).replace("\n", " ")[:500])
                    out.failures.update({item: why for item in group})
            return out
        futures = self._task(job).map(job=self._constant(job), item=items, round_idx=unmapped(round_idx),
                                      shared=self._constant(dict(shared)))
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


def prefect_api_url() -> str:
    """The Prefect API this process's flows report to: ``PREFECT_API_URL``, else the ephemeral
    server Prefect starts for this process (started here if it is not yet). A local Dask cluster's
    workers get it: without it each worker process starts an ephemeral API server of its own (a
    third of a core each on W1; the first round took 32.6 s against 17.0 s with it) and records
    its task runs there, where the flow's UI never shows them."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return str(url)
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same instance Prefect's clients in this process use
    server.start()
    return str(server.api_url)


def task_runner(config: Config):
    """The flow's task runner for ``execution.executor``."""
    ex = config.execution
    if ex.executor == "dask":
        from prefect_dask import DaskTaskRunner

        if ex.dask_address:  # its workers must have PREFECT_API_URL set to this flow's API (README)
            return DaskTaskRunner(address=ex.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": ex.max_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": ":0",
                                              "env": {"PREFECT_API_URL": prefect_api_url()}})
    return ThreadPoolTaskRunner(max_workers=ex.max_workers)


def executor_for(config: Config):
    ex = config.execution
    if ex.executor == "sequential":
        return SequentialExecutor(retries=ex.retries)
    mode = ex.executor if ex.executor in ("cohort", "auto") else "off"
    return PrefectExecutor(retries=ex.retries, retry_delay_s=ex.retry_delay_s, dask=ex.executor == "dask", mode=mode,
                           group_size=ex.group_size, chunk_size=ex.cohort_chunk, workers=ex.max_workers)
