"""Executors: how a round's client work (and its evaluation) is spread out.

An executor maps a :class:`Job` over items (client ids, test-set shards) and returns the results
and the failures; nothing else about the round depends on it. Large inputs reach the jobs by
reference: :meth:`Executor.share` turns a value into whatever the executor's workers resolve
without a copy per job (the value itself in one process; a Dask future scattered to every
worker once, for processes).

A job may also say how to run many items at once (``batch_fn``: the cohort path, clients
trained vectorised) and how to time both ways on a few items (``probe_fn``: ``auto``).
:func:`run_group` runs a group of items either way, retrying failed items one at a time.

Implementations: :class:`SequentialExecutor` (in process, one item after another) and
:class:`CohortExecutor` (in process, groups of items on ``workers`` threads, each group one
batch call) here; Prefect tasks on a thread pool and on Dask (prefect-dask) in
:mod:`flows.executors`, since ``fedops`` itself does not import Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Protocol, Sequence


@dataclass(frozen=True)
class Job:
    """One kind of work: ``fn(item, *, round_idx, **shared)``, a module-level function so that it
    pickles by reference. ``name`` names the task (``train-client``), ``item`` its unit (``client``)."""

    name: str
    item: str
    fn: Callable[..., Any]
    batch_fn: Callable[..., dict[Hashable, Any]] | None = None
    """``batch_fn(items, *, round_idx, chunk_size, **shared)``: every item at once (``chunk_size``
    None: the job sizes its chunks itself); each item's
    result or the exception that stopped it."""
    probe_fn: Callable[..., dict[str, float]] | None = None
    """``probe_fn(items, *, round_idx, **shared)``: ``{"cohort_s", "sequential_s"}``, seconds for
    some of ``items`` each way (``execution.executor: auto``)."""
    task: bool = True
    """Whether an orchestrator runs its items as tasks of their own. False for the server's own
    work on its own data (evaluating the global model on the test set): on threads it runs on the
    coordinator's workers without task runs, which cost the orchestrator's API server CPU."""


@dataclass
class MapResult:
    results: dict[Hashable, Any] = field(default_factory=dict)
    failures: dict[Hashable, str] = field(default_factory=dict)
    """item -> one line: the exception type and message of the last attempt."""


def describe_failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]


class Executor(Protocol):
    name: str

    def share(self, value: Any) -> Any:
        """A handle to ``value`` that jobs receive (resolved to the value) instead of a copy."""

    def map(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any],
            cost: Mapping[Hashable, float] | None = None) -> MapResult:
        """Run ``job`` on every item; an item whose every attempt raised goes to ``failures``.
        ``cost``: each item's expected work (a client's training rows), to balance the groups by."""


class SequentialExecutor:
    """In process, one item after another, each retried ``retries`` times on an exception."""

    name = "sequential"

    def __init__(self, *, retries: int = 0) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.retries = retries

    def share(self, value: Any) -> Any:
        return value

    def map(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any],
            cost: Mapping[Hashable, float] | None = None) -> MapResult:
        return run_group(job, items, round_idx=round_idx, shared=shared, retries=self.retries, batch=False,
                         chunk_size=1)


def run_group(job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any], retries: int,
              batch: bool, chunk_size: int | None, retry_delay_s: float = 0.0) -> MapResult:
    """``items`` in one go: one ``batch_fn`` call when ``batch`` (and the job has one), else one
    item after another; then each failed item again on its own, up to ``retries`` times, each
    retry ``retry_delay_s`` after the failure."""
    out = MapResult()
    pending = list(items)
    attempts = retries + 1
    if batch and job.batch_fn is not None and pending:
        try:
            got = job.batch_fn(pending, round_idx=round_idx, chunk_size=chunk_size, **shared)
        except Exception as exc:  # the group's failure is each item's
            got = {item: exc for item in pending}
        for item in pending:
            result = got[item]
            if isinstance(result, BaseException):
                out.failures[item] = describe_failure(result)
            else:
                out.results[item] = result
        pending, attempts = [i for i in pending if i in out.failures], retries
    for item in pending:
        for attempt in range(attempts):
            if retry_delay_s > 0 and (attempt > 0 or item in out.failures):
                import time

                time.sleep(retry_delay_s)
            try:
                out.results[item] = job.fn(item, round_idx=round_idx, **shared)
                out.failures.pop(item, None)
                break
            except Exception as exc:  # a failed client is reported, not fatal to the round
                out.failures[item] = describe_failure(exc)
    return out


def groups_of(items: Sequence[Hashable], size: int, *,
              cost: Mapping[Hashable, float] | None = None) -> list[list[Hashable]]:
    """``items`` in ``ceil(len / size)`` groups of at most ``size``: consecutive runs without
    ``cost``; with it, balanced by it (the heaviest item first, each to the least-loaded group that
    has room, ties to the lower group), each group in the items' order. Deterministic: the same
    items and costs give the same groups."""
    items = list(items)
    if cost is None or size <= 1 or len(items) <= size:
        return [items[i:i + size] for i in range(0, len(items), size)]
    count = -(-len(items) // size)
    loads, members = [0.0] * count, [[] for _ in range(count)]
    for i in sorted(range(len(items)), key=lambda i: (-float(cost[items[i]]), i)):
        g = min((j for j in range(count) if len(members[j]) < size), key=lambda j: (loads[j], j))
        loads[g] += float(cost[items[i]])
        members[g].append(i)
    return [[items[i] for i in sorted(m)] for m in members]


MARGIN = 0.95
"""``auto`` takes the batch path only if its probe was at least 5% faster: a near tie (where the
probe's noise decides) stays on the per-item path."""


class CohortChoice:
    """Whether a job runs its groups as batches: fixed (``cohort``, ``sequential``), or decided once,
    the first time, by the job's probe (``auto``): the batch path only if it was faster by
    :data:`MARGIN`."""

    def __init__(self, mode: str) -> None:
        if mode not in ("cohort", "auto", "off"):
            raise ValueError(f"cohort mode must be cohort, auto or off, got {mode!r}")
        self.mode = mode
        self.probe: dict[str, float] | None = None
        self._decided: dict[str, bool] = {}

    def batch(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any]) -> bool:
        if job.batch_fn is None or self.mode == "off":
            return False
        if self.mode == "cohort":
            return True
        if job.name not in self._decided:
            if job.probe_fn is None:
                self._decided[job.name] = False
            else:
                import logging
                import time

                start = time.perf_counter()
                self.probe = dict(job.probe_fn(list(items), round_idx=round_idx, **shared))
                self.probe["probe_s"] = time.perf_counter() - start
                self._decided[job.name] = self.probe["cohort_s"] < MARGIN * self.probe["sequential_s"]
                logging.getLogger("fedops").info("execution.executor %s (the probe took %.2f s)", self.describe(),
                                                 self.probe["probe_s"])
        return self._decided[job.name]

    def describe(self) -> str:
        if self.mode != "auto":
            return self.mode
        if self.probe is None:
            return "auto (not probed yet)"
        p = self.probe
        picked = "cohort" if p["cohort_s"] < MARGIN * p["sequential_s"] else "one client at a time"
        return (f"auto: {picked} (probe: {p['cohort_s']:.4f} s as a cohort, {p['sequential_s']:.4f} s one at a time, "
                f"{int(p.get('clients', 0))} clients)")


class CohortExecutor:
    """In process: the items in groups of ``group_size(len(items))``, each group one batch call
    (``cohort``, or ``auto`` when the probe found it faster), the groups on ``workers`` threads."""

    def __init__(self, *, retries: int = 0, chunk_size: int | None = None, workers: int = 1, mode: str = "cohort",
                 group_size: Callable[[int], int] | None = None) -> None:
        if retries < 0 or (chunk_size is not None and chunk_size < 1) or workers < 1:
            raise ValueError(f"retries >= 0, chunk_size >= 1 and workers >= 1 expected, got {retries}, "
                             f"{chunk_size}, {workers}")
        self.name = mode
        self.retries, self.chunk_size, self.workers = retries, chunk_size, workers
        self.choice = CohortChoice(mode)
        self.group_size = group_size or (lambda n: max(1, -(-n // workers)))

    def share(self, value: Any) -> Any:
        return value

    def map(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any],
            cost: Mapping[Hashable, float] | None = None) -> MapResult:
        items = list(items)
        size = self.group_size(len(items)) if job.batch_fn is not None else 1
        batch = self.choice.batch(job, items, round_idx=round_idx, shared=shared) if items else False
        groups = groups_of(items, size, cost=cost)

        def one(group):
            return run_group(job, group, round_idx=round_idx, shared=shared, retries=self.retries, batch=batch,
                             chunk_size=self.chunk_size)

        if self.workers > 1 and len(groups) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(self.workers, len(groups))) as pool:
                parts = list(pool.map(one, groups))
        else:
            parts = [one(g) for g in groups]
        out = MapResult()
        for part in parts:
            out.results.update(part.results)
            out.failures.update(part.failures)
        return out


def local_executor(execution: Any) -> Any:
    """The in-process executor for an ``execution`` config section: the cohort executor for
    ``cohort`` and ``auto``, else the sequential one (threads, dask and sequential give the same
    bytes)."""
    if execution.executor in ("cohort", "auto"):
        return CohortExecutor(retries=execution.retries, chunk_size=execution.cohort_chunk,
                              workers=execution.max_workers, mode=execution.executor,
                              group_size=execution.group_size)
    return SequentialExecutor(retries=execution.retries)
