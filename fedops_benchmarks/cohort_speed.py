"""Cohort training against one-client-at-a-time training, on the same clients and steps: K
clients of ``rows`` rows each, E = 1, B = 32, lr 0.05, from the same global model.

Sides, interleaved in one process (each repeat runs every side once, in turn):

- ``sequential_1t``: :func:`fedops.client.local.local_train` client after client, one torch thread;
- ``sequential_2t``: the same with two torch threads;
- ``sequential_2p``: the clients split between two single-threaded worker processes (started,
  with their data, before the clock; only the global model goes out and the deltas come back);
- ``cohort``: :func:`fedops.client.cohort.cohort_train` with two torch threads, the kernel
  ``auto`` picks (the hand-written dense kernel for the MLP, ``torch.func`` for the CNN);
- ``cohort_autograd``: the same with the ``torch.func`` kernel;
- ``cohort_1t``: ``cohort`` with one torch thread (per core, against ``sequential_1t``);
- ``cohort_2p``: each of the two worker processes trains its half of the clients as one cohort
  (one thread each, against ``sequential_2p``: what the executors do with two workers).

Each side's time is its median over the repeats; the ratios are against the fastest sequential
side. The rows are synthetic (a fixed seed): the arithmetic does not depend on their values. The
results of every side are compared with ``sequential_1t`` (max |delta difference|).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

MODELS = {"mlp": {"name": "mlp", "hidden": [200, 200]}, "small_cnn": {"name": "small_cnn"}}
SIDES = ("sequential_1t", "sequential_2t", "sequential_2p", "cohort", "cohort_autograd", "cohort_1t", "cohort_2p")
SEQUENTIAL = ("sequential_1t", "sequential_2t", "sequential_2p")

_DATA: dict[str, Any] = {}


def _problem(model: str, k: int, rows: int) -> dict[str, Any]:
    from fedops.config import parse_config
    from fedops.types import ParamLayout

    net = parse_config({"model": MODELS[model]}).model.build(input_shape=(1, 28, 28), num_classes=10, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(k * rows, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (k * rows,), generator=g)
    layout = ParamLayout.from_module(net)
    return {"model": net, "layout": layout, "params": layout.flatten(net).clone(), "x": x, "y": y,
            "indices": [torch.arange(i * rows, (i + 1) * rows) for i in range(k)]}


HP = {"epochs": 1, "batch_size": 32, "lr": 0.05}


def _gen(client: int) -> torch.Generator:
    return torch.Generator().manual_seed(10_000 + client)


def _sequential(data: dict[str, Any], clients: list[int]) -> list[torch.Tensor]:
    from fedops.client.local import local_train

    return [local_train(data["model"], client_id=c, layout=data["layout"], global_params=data["params"], x=data["x"],
                        y=data["y"], indices=data["indices"][c], generator=_gen(c), **HP).delta for c in clients]


def _cohort(data: dict[str, Any], kernel: str, ids: list[int] | None = None) -> list[torch.Tensor]:
    from fedops.client.cohort import CohortClient, cohort_train

    ids = range(len(data["indices"])) if ids is None else ids
    clients = [CohortClient(client_id=c, indices=data["indices"][c], generator=_gen(c)) for c in ids]
    if not clients:
        return []
    return [u.delta for u in cohort_train(data["model"], layout=data["layout"], global_params=data["params"],
                                          x=data["x"], y=data["y"], clients=clients, chunk_size=len(clients),
                                          kernel=kernel, **HP)]


def _worker_init(model: str, k: int, rows: int) -> None:
    torch.set_num_threads(1)
    _DATA.update(_problem(model, k, rows))


def _worker(params: torch.Tensor, clients: list[int]) -> list[torch.Tensor]:
    _DATA["params"] = params
    return _sequential(_DATA, clients)


def _worker_cohort(params: torch.Tensor, clients: list[int]) -> list[torch.Tensor]:
    _DATA["params"] = params
    return _cohort(_DATA, "auto", clients)


def run(*, model: str, k: int, rows: int, repeats: int) -> dict[str, Any]:
    """Every side ``repeats`` times, interleaved; seconds (median) and ratios for one (model, K)."""
    if model not in MODELS:
        raise ValueError(f"model {model!r}: expected one of {', '.join(MODELS)}")
    data = _problem(model, k, rows)
    ids = list(range(k))
    pool = ProcessPoolExecutor(2, initializer=_worker_init, initargs=(model, k, rows))
    try:
        list(pool.map(_worker, [data["params"]] * 2, [[], []]))  # started and loaded before the clock
        sides = {
            "sequential_1t": (1, lambda: _sequential(data, ids)),
            "sequential_2t": (2, lambda: _sequential(data, ids)),
            "sequential_2p": (1, lambda: [d for part in pool.map(_worker, [data["params"]] * 2, [ids[0::2], ids[1::2]])
                                          for d in part]),
            "cohort": (2, lambda: _cohort(data, "auto")),
            "cohort_autograd": (2, lambda: _cohort(data, "autograd")),
            "cohort_1t": (1, lambda: _cohort(data, "auto")),
            "cohort_2p": (1, lambda: [d for part in pool.map(_worker_cohort, [data["params"]] * 2,
                                                             [ids[0::2], ids[1::2]]) for d in part]),
        }
        seconds: dict[str, list[float]] = {s: [] for s in SIDES}
        results: dict[str, list[torch.Tensor]] = {}
        threads = torch.get_num_threads()
        try:
            for _ in range(repeats + 1):  # the first pass warms every side up, untimed
                for side in SIDES:
                    n, fn = sides[side]
                    torch.set_num_threads(n)
                    start = time.perf_counter()
                    out = fn()
                    seconds[side].append(time.perf_counter() - start)
                    results[side] = out
        finally:
            torch.set_num_threads(threads)
    finally:
        pool.shutdown()
    order = ids[0::2] + ids[1::2]  # sequential_2p returns the clients as the workers took them: back in order
    for side in ("sequential_2p", "cohort_2p"):
        results[side] = [d for _, d in sorted(zip(order, results[side]), key=lambda p: p[0])]
    median = {s: statistics.median(v[1:]) for s, v in seconds.items()}
    fastest = min(SEQUENTIAL, key=median.__getitem__)
    return {"model": model, "k": k, "rows": rows, "repeats": repeats, "seconds": median, "fastest_sequential": fastest,
            "ratio": {s: median[fastest] / median[s] for s in SIDES},
            "per_core": {"1 thread": median["sequential_1t"] / median["cohort_1t"],
                         "two 1-thread processes": median["sequential_2p"] / median["cohort_2p"]},
            "max_abs_diff": {s: max(float((a - b).abs().max()) for a, b in zip(results["sequential_1t"], results[s]))
                             for s in SIDES}}


def main(*, models: tuple[str, ...] = ("mlp", "small_cnn"), ks: tuple[int, ...] = (10, 100), rows: int = 600,
         repeats: int = 2) -> list[dict[str, Any]]:
    return [run(model=m, k=k, rows=rows, repeats=repeats) for m in models for k in ks]


def format_table(results: list[dict[str, Any]]) -> list[str]:
    """Seconds per side; the fastest cohort side over the fastest sequential side; and the same
    cores side by side (1 thread: cohort_1t / sequential_1t; 2 processes: cohort_2p / sequential_2p)."""
    head = ("| model | K | " + " | ".join(SIDES) + " | fastest cohort / fastest sequential | same cores: 1 thread, "
            "2 processes | max abs diff |")
    lines = [head, "|" + "---|" * (len(SIDES) + 5)]
    for r in results:
        sec = r["seconds"]
        best = min((s for s in SIDES if s.startswith("cohort")), key=sec.__getitem__)
        cells = [f"{sec[s]:.3f}" for s in SIDES]
        lines.append(f"| {r['model']} | {r['k']} | " + " | ".join(cells)
                     + f" | **{sec[r['fastest_sequential']] / sec[best]:.2f}×** ({best} vs {r['fastest_sequential']})"
                     + f" | {r['per_core']['1 thread']:.2f}×, {r['per_core']['two 1-thread processes']:.2f}×"
                     + f" | {max(r['max_abs_diff'].values()):.1e} |")
    return lines
