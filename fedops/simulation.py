"""The in-process simulation: a training job's rounds run one client after another in this
process, with no orchestration and no tracking (benchmarks, paper replications, tests). It is
the same round (:class:`fedops.round.FederatedRun`) and the same loop
(:func:`fedops.round.run_training`) as the Prefect flow, with the sequential executor (or, for
``execution.executor: cohort | auto``, the in-process cohort executor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from fedops.config import Config


@dataclass
class SimulationResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    rounds_to_target: int | None = None
    params: torch.Tensor | None = None
    seconds: float = 0.0
    stopped: str | None = None
    digest: str = ""


def simulate(
    world: Any,
    config: Config | None = None,
    *,
    rounds: int | None = None,
    target_accuracy: float | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_record: Callable[[Any], None] | None = None,
    evaluate_last: int | None = None,
) -> SimulationResult:
    """Run ``config``'s rounds (``rounds`` overrides ``server.rounds``) on ``world`` in process.

    ``on_round`` sees each round's released metrics, ``on_record`` its whole released
    :class:`fedops.round.release.RoundRecord` (with the client table). Evaluation follows
    ``server.eval_every``; ``evaluate_last`` evaluates only the last rounds
    (a benchmark that reports final accuracy need not pay for the others) and
    ``target_accuracy`` stops at the first evaluated round that reaches it. The privacy budget
    stops the run as it stops the flow."""
    import time

    from fedops.round import FederatedRun, local_executor, run_training

    config = config or world.runtime.config
    if rounds is not None:
        config = config.model_copy(update={"server": config.server.model_copy(update={"rounds": rounds})})
    total = config.server.rounds
    if evaluate_last is not None and (evaluate_last < 1 or target_accuracy is not None):
        raise ValueError(f"evaluate_last must be >= 1 and cannot stop at a target accuracy, got {evaluate_last}")
    schedule = None
    if evaluate_last is not None:
        schedule = lambda r: r > total - evaluate_last  # noqa: E731
    elif target_accuracy is not None:
        schedule = lambda r: True  # noqa: E731
    out = SimulationResult()

    def stop_when(record) -> bool:
        row = {"round": record.round, **record.metrics}
        if on_round is not None:
            on_round(row)
        if on_record is not None:
            on_record(record)
        acc = record.metrics.get("test/accuracy")
        if target_accuracy is not None and acc is not None and acc >= target_accuracy:
            out.rounds_to_target = record.round
            return True
        return False

    start = time.perf_counter()
    run = FederatedRun(config, world)
    result = run_training(run, local_executor(config.execution), schedule=schedule,
                          stop_when=stop_when)
    out.history, out.params, out.stopped, out.digest = result.history, result.params, result.stopped, result.digest
    out.seconds = time.perf_counter() - start
    return out
