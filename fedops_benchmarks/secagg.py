"""Secure-aggregation cost.

1. One federated round of 100 clients training the 1,199,882-parameter CNN on Fashion-MNIST,
   plain (FedAvg on float32 updates) and with SecAgg+ (clip, weight, quantise, mask, unmask) with
   10% of the clients dropping after sharing their keys; the ratio of the two round times.
2. Per-client cost of the protocol alone as n grows from 50 to 200, SecAgg+ (k ~ 2 log2 n
   neighbours) against plain SecAgg (complete graph): time and bytes sent per client.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fedops.config import load_config
from fedops.paths import Paths

ROOT = Path(__file__).resolve().parents[1]


def _round(cfg, world) -> float:
    """Round 1 through the library's round (sequential clients, no evaluation), timed end to end."""
    from fedops.round import FederatedRun, SequentialExecutor

    run = FederatedRun(cfg, world)
    start = time.perf_counter()
    run.run_round(1, SequentialExecutor(), evaluate=False)
    return time.perf_counter() - start


def round_ratio(*, workdir: Path, repeats: int = 2, log=print) -> dict[str, Any]:
    """Plain and SecAgg+ rounds interleaved ``repeats`` times after an untimed warm-up round; the
    ratio of the fastest of each (the machine is shared: the minimum is the least disturbed)."""
    from fedops.round import load_world
    from fedops_benchmarks.w1 import prepare

    base = {"partition": {"num_clients": 100, "name": "iid"}, "model": {"name": "mnist_cnn"},
            "client.epochs": 1, "server.fraction": 1.0, "execution.max_workers": 1, "baseline.enabled": False,
            "name": "secagg-bench"}
    configs = {label: load_config(ROOT / "configs" / "w1.yaml", {**base, **extra}) for label, extra in (
        ("plain", {}), ("secagg+", {"secagg": {"enabled": True, "dropout_fraction": 0.1, "dropout_stage": "share"}}))}
    prepare(configs["plain"], workdir)
    world = load_world(configs["plain"], Paths.at(workdir))  # the same clients and data for both
    _round(configs["plain"], world)  # warm-up: kernels, data on device, thread-local models
    times: dict[str, list[float]] = {label: [] for label in configs}
    for _ in range(repeats):
        for label, cfg in configs.items():
            times[label].append(_round(cfg, world))
            log(f"  {label} round: {times[label][-1]:.1f} s")
    out: dict[str, Any] = {label: min(ts) for label, ts in times.items()}
    out["times"] = times
    out["num_params"] = world.runtime.layout.size
    out["ratio"] = out["secagg+"] / out["plain"]
    return out


def growth(*, dim: int = 10_000, sizes=(50, 100, 200), log=print) -> list[dict[str, Any]]:
    from fedops.secagg import default_k, default_threshold, secure_sum

    rows = []
    rng = np.random.default_rng(0)
    for mode in ("secagg+", "secagg"):
        for n in sizes:
            k = default_k(n) if mode == "secagg+" else None
            t = default_threshold(k if k is not None else n - 1)
            inputs = {i: rng.integers(0, 2**32, size=dim, dtype=np.uint64) for i in range(n)}
            start = time.perf_counter()
            res = secure_sum(inputs, bits=32, threshold=t, k=k, seed=n)
            seconds = time.perf_counter() - start
            row = {"mode": mode, "n": n, "k": k if k is not None else n - 1, "seconds": seconds,
                   "per_client_ms": 1000 * seconds / n, "per_client_kb_up": np.mean(list(res.bytes_up.values())) / 1e3}
            rows.append(row)
            log(f"  {mode} n={n} k={row['k']}: {row['per_client_ms']:.1f} ms and {row['per_client_kb_up']:.1f} kB up per client")
    return rows


def main(*, workdir: Path | None = None, log=print) -> dict[str, Any]:
    workdir = workdir or ROOT / ".cache" / "bench" / "secagg"
    return {"round": round_ratio(workdir=workdir, log=log), "growth": growth(log=log)}
