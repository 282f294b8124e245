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


def _round(cfg, runtime, server, selected) -> float:
    """One round through the library (sequential clients), timed end to end."""
    from fedops.secagg.round import secure_round

    start = time.perf_counter()
    received, reports = [], {}
    for cid in selected:
        msg, rep = runtime.train_and_encode(round_idx=1, client_id=cid, global_params=server.params)
        received.append(msg)
        reports[cid] = rep
    if cfg.secagg.enabled:
        result = secure_round(cfg, 1, received)
        server.finish_secure_round(1, selected=selected, result=result, reports=reports, dropped={}, started=start)
    else:
        server.finish_round(1, selected=selected, received=received, reports=reports, dropped={}, started=start)
    return time.perf_counter() - start


def round_ratio(*, workdir: Path, log=print) -> dict[str, Any]:
    from fedops_benchmarks.w1 import prepare
    from flows.training import build_runtime
    from fedops.server.engine import FederatedServer

    base = {"partition": {"num_clients": 100, "name": "iid"}, "model": {"name": "mnist_cnn"},
            "client.epochs": 1, "server.fraction": 1.0, "execution.max_workers": 1, "baseline.enabled": False,
            "name": "secagg-bench"}
    out = {}
    for label, extra in (("plain", {}), ("secagg+", {"secagg": {"enabled": True, "dropout_fraction": 0.1,
                                                                  "dropout_stage": "share"}})):
        cfg = load_config(ROOT / "configs" / "w1.yaml", {**base, **extra})
        prepare(cfg, workdir)
        runtime, _, _ = build_runtime(cfg, Paths.at(workdir))
        server = FederatedServer(config=cfg, params=runtime.layout.flatten(runtime.new_model(seed=0)),
                                 num_clients=runtime.num_clients)
        out[label] = _round(cfg, runtime, server, server.select(1))
        out["num_params"] = runtime.layout.size
        log(f"  {label} round: {out[label]:.1f} s")
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
