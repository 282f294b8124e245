"""FedAvg vs FedSGD (McMahan et al. 2017, Table 2): rounds of communication to reach a target test
accuracy on Fashion-MNIST with the same clients and the same fraction C.

Both runs use fedops' client and server code through the sequential executor
(:func:`fedops.simulation.simulate`); orchestration does not change round counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedops.config import load_config
from fedops.paths import Paths

ROOT = Path(__file__).resolve().parents[1]


def rounds_to_target(config: Path, *, target: float, workdir: Path, max_rounds: int | None = None, log=print) -> dict[str, Any]:
    from fedops.round import load_world
    from fedops.simulation import simulate
    from fedops_benchmarks.w1 import prepare

    cfg = load_config(config, {"execution.max_workers": 1})
    prepare(cfg, workdir)
    world = load_world(cfg, Paths.at(workdir))
    rounds = max_rounds or cfg.server.rounds

    def on_round(row: dict[str, Any]) -> None:
        if row["round"] % 25 == 0 or row["test/accuracy"] >= target:
            log(f"  {cfg.name}: round {row['round']}, test accuracy {row['test/accuracy']:.4f}")

    res = simulate(world, cfg, rounds=rounds, target_accuracy=target, on_round=on_round)
    return {
        "config": cfg.name,
        "epochs": cfg.client.epochs,
        "batch_size": cfg.client.batch_size,
        "lr": cfg.client.lr,
        "rounds_to_target": res.rounds_to_target,
        "rounds_run": len(res.history),
        "best_accuracy": max(r["test/accuracy"] for r in res.history),
        "seconds": res.seconds,
    }


def main(*, target: float = 0.80, workdir: Path | None = None, log=print) -> dict[str, Any]:
    workdir = workdir or ROOT / ".cache" / "bench" / "fedsgd"
    fedavg = rounds_to_target(ROOT / "configs" / "fedavg_e5_b10.yaml", target=target, workdir=workdir, log=log)
    fedsgd = rounds_to_target(ROOT / "configs" / "fedsgd.yaml", target=target, workdir=workdir, log=log)
    a, s = fedavg["rounds_to_target"], fedsgd["rounds_to_target"]
    speedup = (s / a) if a and s else None
    return {"target_accuracy": target, "fedavg": fedavg, "fedsgd": fedsgd, "round_reduction": speedup}
