"""Executors: how a round's client work (and its evaluation) is spread out.

An executor maps a :class:`Job` over items (client ids, test-set shards) and returns the results
and the failures; nothing else about the round depends on it. Large inputs reach the jobs by
reference: :meth:`Executor.share` turns a value into whatever the executor's workers resolve
without a copy per job (the value itself in one process; a Dask future scattered to every
worker once, for processes).

Implementations: :class:`SequentialExecutor` here (in process, one item after another);
Prefect tasks on a thread pool and on Dask (prefect-dask) in :mod:`flows.executors`, since
``fedops`` itself does not import Prefect. A later executor trains a cohort of clients at once
on the same interface.
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

    def map(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any]) -> MapResult:
        """Run ``job`` on every item; an item whose every attempt raised goes to ``failures``."""


class SequentialExecutor:
    """In process, one item after another, each retried ``retries`` times on an exception."""

    name = "sequential"

    def __init__(self, *, retries: int = 0) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.retries = retries

    def share(self, value: Any) -> Any:
        return value

    def map(self, job: Job, items: Sequence[Hashable], *, round_idx: int, shared: Mapping[str, Any]) -> MapResult:
        out = MapResult()
        for item in items:
            for attempt in range(self.retries + 1):
                try:
                    out.results[item] = job.fn(item, round_idx=round_idx, **shared)
                    out.failures.pop(item, None)
                    break
                except Exception as exc:  # a failed client is reported, not fatal to the round
                    out.failures[item] = describe_failure(exc)
        return out
