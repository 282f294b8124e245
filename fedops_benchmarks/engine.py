"""The engine benchmark (W2): 1,000 Fashion-MNIST clients, Dirichlet(0.5), 100 per round, E = 1,
B = 32, for the 2NN MLP and the small CNN; each side in its own process, the sides interleaved,
on the same partition, client selection and minibatch order.

Sides: the bare PyTorch loop with one torch thread, and split over single-threaded worker
processes (the fastest honest baselines); fedops in process with the sequential, cohort and auto
executors; the full pipeline (Prefect flow and tasks, MLflow tracking) with the cohort executor;
and Flower's simulation engine when its environment exists (``scripts/flower-env.sh``).

Each side prints one JSON line: the end of every round (wall clock), its peak RSS and its process
time. Steady state is the median of rounds 2 .. R-1 (round 1 warms up, round R evaluates); end
to end is the process's whole wall time, start-up included.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mlp": {"name": "mlp", "hidden": [200, 200]}, "small_cnn": {"name": "small_cnn"}}
SIDES = ("bare", "bare_procs", "sequential", "cohort", "auto", "pipeline")


def config(model: str, *, rounds: int, overrides: dict[str, Any] | None = None):
    from fedops.config import load_config

    if model not in MODELS:
        raise ValueError(f"model {model!r}: expected one of {', '.join(MODELS)}")
    return load_config(ROOT / "configs" / "w2.yaml", {
        "model": MODELS[model], "server.rounds": rounds, "server.eval_every": rounds,
        "execution.device": "cpu", **(overrides or {})})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_side(side: str, model: str, *, rounds: int, workdir: Path) -> dict[str, Any]:
    """One side in this process: the ends of its rounds and what it cost."""
    ends: list[float] = []
    extra: dict[str, Any] = {}
    if side in ("bare", "bare_procs"):
        from fedops_benchmarks.w1 import bare_loop

        cfg = config(model, rounds=rounds)
        _, _, accuracy, _ = bare_loop(cfg, workdir, processes=1 if side == "bare" else cfg.execution.max_workers,
                                      round_ends=ends)
        ends = ends[1:]
    elif side in ("sequential", "cohort", "auto"):
        import torch

        from fedops.paths import Paths
        from fedops.round import load_world
        from fedops.simulation import simulate

        torch.set_num_threads(1)
        cfg = config(model, rounds=rounds, overrides={"execution.executor": side})
        world = load_world(cfg, Paths.at(workdir))
        result = simulate(world, cfg, on_record=lambda record: ends.append(time.time()))
        accuracy = result.history[-1].get("test/accuracy")
    elif side == "pipeline":
        from flows.training import run_federated_training

        cfg = config(model, rounds=rounds, overrides={"execution.executor": "cohort", "name": f"w2-{model}"})
        summary = run_federated_training(cfg, str(workdir), fresh=True)
        accuracy = summary["final_test_accuracy"]
        from mlflow.tracking import MlflowClient

        history = MlflowClient(summary["tracking_uri"]).get_metric_history(summary["run_id"], "time/round_s")
        ends = [m.timestamp / 1000 for m in sorted(history, key=lambda m: m.step)]
    else:
        raise ValueError(f"side {side!r}: expected one of {', '.join(SIDES)}")
    times = os.times()
    return {"side": side, "model": model, "round_ends": ends, "test_accuracy": accuracy,
            "peak_rss_mb": _peak_rss_mb(), "cpu_s": times.user + times.system, **extra}


def steady(ends: list[float]) -> float:
    """Median seconds per round over rounds 2 .. R-1 (needs R >= 3)."""
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    middle = gaps[1:-1] or gaps
    return statistics.median(middle)


def _run(cmd: list[str], cwd: Path) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-6:])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return {**json.loads(line), "end_to_end_s": wall}


def main(*, models: tuple[str, ...] = ("mlp", "small_cnn"), rounds: int = 5, repeats: int = 1,
         sides: tuple[str, ...] = SIDES, workdir: Path | None = None, flower: bool | None = None) -> dict[str, Any]:
    from fedops_benchmarks.w1 import prepare

    workdir = workdir or ROOT / ".cache" / "bench" / "w2"
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    prepare(config("mlp", rounds=rounds), workdir)  # one partition for both models
    prepared_s = time.perf_counter() - start
    from fedops_benchmarks import flower_peer

    python = flower_peer.python()
    use_flower = (python is not None) if flower is None else flower
    if use_flower and python is None:
        raise RuntimeError(f"Flower's environment is missing: run bash scripts/flower-env.sh (expected {flower_peer.VENV})")
    if use_flower:
        flower_peer.export(config("mlp", rounds=rounds), workdir)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {} for m in models}
    for _ in range(repeats):
        for model in models:
            for side in sides + (("flower",) if use_flower else ()):
                if side == "flower":
                    cmd = [python, str(Path(flower_peer.__file__)), "--model", model, "--rounds", str(rounds),
                           "--workdir", str(workdir)]
                else:
                    cmd = [sys.executable, "-m", "fedops_benchmarks.engine", "--side", side, "--model", model,
                           "--rounds", str(rounds), "--workdir", str(workdir)]
                results[model].setdefault(side, []).append(_run(cmd, ROOT))
    table = {}
    for model, per_side in results.items():
        rows = {}
        for side, runs in per_side.items():
            per_round = statistics.median(steady(r["round_ends"]) for r in runs)
            rows[side] = {"s_per_round": per_round, "samples_per_s": None,
                          "end_to_end_s": statistics.median(r["end_to_end_s"] for r in runs),
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                          "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                          "test_accuracy": runs[-1]["test_accuracy"]}
        table[model] = rows
    return {"rounds": rounds, "repeats": repeats, "prepare_s": prepared_s, "table": table,
            "samples_per_round": _samples_per_round(workdir, rounds)}


def _samples_per_round(workdir: Path, rounds: int) -> float:
    """The mean number of training rows the selected clients hold per round (for samples/s)."""
    import numpy as np

    from fedops.partition import load_manifest
    from fedops.rng import STREAM_SELECTION, numpy_rng

    cfg = config("mlp", rounds=rounds)
    part, _ = load_manifest(workdir / "data" / "partitions" / "manifest.json")
    sizes = np.array([len(ix) for ix in part.indices])
    k, per_round = len(sizes), max(1, round(cfg.server.fraction * len(sizes)))
    return float(np.mean([sizes[numpy_rng(cfg.seed, STREAM_SELECTION, r).choice(k, size=per_round, replace=False)].sum()
                          for r in range(1, rounds + 1)]))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--side", required=True, choices=SIDES)
    ap.add_argument("--model", required=True, choices=tuple(MODELS))
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    a = ap.parse_args()
    print(json.dumps(run_side(a.side, a.model, rounds=a.rounds, workdir=a.workdir)))
