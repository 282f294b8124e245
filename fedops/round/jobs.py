"""The work a round hands to its executor: a client's local training, and one shard of the test
set's evaluation. Module-level functions, so they pickle by reference to worker processes."""

from __future__ import annotations

from typing import Any

import torch

from fedops import failpoints
from fedops.client.runtime import ClientRuntime, torch_threads
from fedops.evaluation import TestSet, evaluation_sums
from fedops.round.executor import Job
from fedops.types import ClientUpdate


def train_client(client_id: int, *, round_idx: int, runtime: ClientRuntime, params: torch.Tensor,
                 client_states: dict[int, Any] | None = None, broadcast: dict[str, Any] | None = None) -> ClientUpdate:
    """One client's local training from the global ``params`` (the client's side of a round);
    ``client_states`` holds what clients keep across rounds (in a simulation, the run keeps it);
    ``broadcast``, what the server sends every client with the model (a weight table)."""
    extra: dict[str, Any] = {}  # only when used: a runtime without client state keeps its plain signature
    if client_states and client_id in client_states:
        extra["state"] = client_states[client_id]
    if broadcast:
        extra["broadcast"] = broadcast
    update = runtime.train(round_idx=round_idx, client_id=client_id, global_params=params, **extra)
    failpoints.hit("client.train", round_idx=round_idx)
    return update


def evaluate_shard(shard: int, *, round_idx: int, runtime: ClientRuntime, testset: TestSet, params: torch.Tensor,
                   bounds: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Evaluation sums of ``params`` on one contiguous slice of the server's test set."""
    failpoints.hit("round.evaluate", round_idx=round_idx)
    lo, hi = bounds[shard]
    device = runtime.devices[0]
    with torch_threads(runtime.config.execution.threads_per_worker()):
        model = runtime.thread_model(device)
        runtime.layout.load_into(model, params.to(device))
        x, y = testset.on(device)
        return evaluation_sums(model, x[lo:hi], y[lo:hi], num_classes=testset.num_classes)


def train_clients(client_ids: list[int], *, round_idx: int, runtime: ClientRuntime, params: torch.Tensor,
                  client_states: dict[int, Any] | None = None, broadcast: dict[str, Any] | None = None,
                  chunk_size: int | None = None) -> dict[int, Any]:
    """Several clients' local training at once (the cohort path): each client's update, or the
    exception that stopped it."""
    out = runtime.train_cohort(round_idx=round_idx, client_ids=list(client_ids), global_params=params,
                               states=client_states, broadcast=broadcast, chunk_size=chunk_size)
    for result in out.values():
        if not isinstance(result, BaseException):
            failpoints.hit("client.train", round_idx=round_idx)
    return out


def probe_train(client_ids: list[int], *, round_idx: int, runtime: ClientRuntime, params: torch.Tensor,
                **_: Any) -> dict[str, float]:
    """``execution.executor: auto``: seconds to train some of these clients each way."""
    return runtime.probe_cohort(global_params=params, client_ids=list(client_ids))


TRAIN = Job(name="train-client", item="client", fn=train_client, batch_fn=train_clients, probe_fn=probe_train)
EVALUATE = Job(name="evaluate-shard", item="shard", fn=evaluate_shard, task=False)
