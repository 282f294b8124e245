"""The sequential in-process executor: the same client and server code as the Prefect flow,
one client after another, no orchestration or tracking.  Used by algorithm benchmarks (rounds to
a target accuracy) where thousands of cheap rounds would otherwise be dominated by bookkeeping."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from fedops.client.runtime import ClientDropped, ClientRuntime
from fedops.evaluation import evaluate
from fedops.rng import STREAM_MODEL_INIT, derive_seed
from fedops.server.engine import FederatedServer


@dataclass
class SimulationResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    rounds_to_target: int | None = None
    params: torch.Tensor | None = None
    seconds: float = 0.0


def simulate(
    runtime: ClientRuntime,
    *,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int,
    rounds: int,
    target_accuracy: float | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    evaluate_last: int | None = None,
) -> SimulationResult:
    """Run up to ``rounds`` rounds; stop early once test accuracy reaches ``target_accuracy``.

    The test set is evaluated after every round, or only in the last ``evaluate_last`` rounds
    (a benchmark that reports final accuracy need not pay for the others; rows of the other
    rounds then carry no ``test/*`` values)."""
    if evaluate_last is not None and (evaluate_last < 1 or target_accuracy is not None):
        raise ValueError(f"evaluate_last must be >= 1 and cannot stop at a target accuracy, got {evaluate_last}")
    cfg = runtime.config
    init = runtime.new_model(seed=derive_seed(cfg.seed, STREAM_MODEL_INIT))
    server = FederatedServer(config=cfg, params=runtime.layout.flatten(init), num_clients=runtime.num_clients,
                             layout=runtime.layout, data_failures=runtime.data_failures)
    device = runtime.devices[0]
    model = init.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    result = SimulationResult()
    start = time.perf_counter()
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        selected = server.select(r)
        received, reports, dropped, updates = [], {}, {}, {}
        for cid in (c for c in selected if not server.excluded(c)):
            try:
                updates[cid] = runtime.train(round_idx=r, client_id=cid, global_params=server.params)
            except ClientDropped as exc:
                dropped[cid] = str(exc)
        updates = runtime.craft_attacks(round_idx=r, updates=updates, global_params=server.params,
                                        num_selected=len(selected))
        for cid in sorted(updates):
            msg, reports[cid] = runtime.encode_with_report(updates[cid], round_idx=r,
                                                           dp_clip_norm=server.client_dp_clip_norm())
            received.append(msg)
        if cfg.secagg.enabled:
            from fedops.secagg.round import secure_round

            out = server.finish_secure_round(r, selected=selected, result=secure_round(cfg, r, received),
                                             reports=reports, dropped=dropped, started=t0)
        else:
            reference = (runtime.root_update(round_idx=r, global_params=server.params)
                         if runtime.root_indices is not None else None)
            out = server.finish_round(r, selected=selected, received=received, reports=reports,
                                      dropped=dropped, started=t0, reference=reference)
        row = {"round": r, **out.metrics}
        if evaluate_last is not None and r <= rounds - evaluate_last:
            result.history.append(row)
            if on_round:
                on_round(row)
            continue
        runtime.layout.load_into(model, server.params.to(device))
        ev = evaluate(model, x_test, y_test, num_classes=num_classes)
        row.update({"test/accuracy": ev["accuracy"], "test/loss": ev["loss"]})
        if cfg.simulation.attack.name == "backdoor":
            from fedops.attacks import backdoor_accuracy

            row["test/backdoor_accuracy"] = backdoor_accuracy(model, x_test, y_test, attack=cfg.simulation.attack)
        result.history.append(row)
        if on_round:
            on_round(row)
        if target_accuracy is not None and ev["accuracy"] >= target_accuracy:
            result.rounds_to_target = r
            break
    result.params = server.params
    result.seconds = time.perf_counter() - start
    return result
