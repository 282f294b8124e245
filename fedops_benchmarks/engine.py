"""The engine benchmark (W2): 1,000 Fashion-MNIST clients, Dirichlet(0.5), 100 per round, E = 1,
B = 32, for the 2NN MLP and the small CNN; each side in its own process, the sides interleaved,
on the same partition, client selection and minibatch order.

Sides: the bare PyTorch loop with one torch thread, and split over single-threaded worker
processes (the fastest honest baselines); fedops in process with the sequential, cohort and auto
executors; the full pipeline (Prefect flow and tasks, MLflow tracking) with the cohort executor;
and Flower's simulation engine when its environment exists (``scripts/flower-env.sh``). On
request (``--sides``), the same executors in process with sample-level DP-SGD in every client
(``privacy.mode: local``): ``dp_sequential`` (Opacus, one client at a time), ``dp_cohort``
(per-sample clipping and noise inside the vmap) and ``dp_auto``.

Each side prints one JSON line: the end of every round (wall clock), its peak RSS and its process
time. Steady state is the median of rounds 2 .. R-1 (round 1 warms up, round R evaluates); end
to end is the process's whole wall time, start-up included.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mlp": {"name": "mlp", "hidden": [200, 200]}, "small_cnn": {"name": "small_cnn"}}
SIDES = ("bare", "bare_procs", "sequential", "cohort", "auto", "cohort_noqc", "auto_noqc", "pipeline")
DP_SIDES = ("dp_sequential", "dp_cohort", "dp_auto")
NO_QC = {"quality.anomaly_scores": False}
"""Without the server's per-client anomaly scores (norm and cosine z-scores, Krum distances), which
the bare loop and Flower do not compute: the engine's own overhead."""
LOCAL_DP = {"privacy.mode": "local"}
"""Sample-level DP-SGD in every client with the config's defaults (noise multiplier 1.0, clip 1.0,
randomness from the OS)."""


def config(model: str, *, rounds: int, overrides: dict[str, Any] | None = None):
    from fedops.config import load_config

    if model not in MODELS:
        raise ValueError(f"model {model!r}: expected one of {', '.join(MODELS)}")
    return load_config(ROOT / "configs" / "w2.yaml", {
        "model": MODELS[model], "server.rounds": rounds, "server.eval_every": rounds,
        "execution.device": "cpu", **(overrides or {})})


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM). Not ``getrusage``'s ``ru_maxrss``: Linux carries that
    across ``exec`` from the process that forked, so every side would report at least the
    benchmark driver's resident set."""
    return _rss_mb()[1]


def run_side(side: str, model: str, *, rounds: int, workdir: Path) -> dict[str, Any]:
    """One side in this process: the ends of its rounds and what it cost (peak RSS of the whole
    process tree, sampled every 0.5 s, as for Flower)."""
    import threading

    from fedops_benchmarks.flower_peer import _rss_sampler

    stop, peak = threading.Event(), [0.0]
    threading.Thread(target=_rss_sampler, args=(stop, peak), daemon=True).start()
    try:
        out = _side(side, model, rounds=rounds, workdir=workdir)
    finally:
        stop.set()
    return {**out, "peak_rss_mb": max(peak[0], _peak_rss_mb())}


def _side(side: str, model: str, *, rounds: int, workdir: Path) -> dict[str, Any]:
    ends: list[float] = []
    extra: dict[str, Any] = {}
    if side in ("bare", "bare_procs"):
        from fedops_benchmarks.w1 import bare_loop

        cfg = config(model, rounds=rounds)
        _, _, accuracy, _ = bare_loop(cfg, workdir, processes=1 if side == "bare" else cfg.execution.max_workers,
                                      round_ends=ends)
        ends = ends[1:]
    elif side in ("sequential", "cohort", "auto", "cohort_noqc", "auto_noqc") + DP_SIDES:
        import torch

        from fedops.paths import Paths
        from fedops.round import load_world
        from fedops.simulation import simulate

        torch.set_num_threads(1)
        cfg = config(model, rounds=rounds, overrides={"execution.executor": side.removeprefix("dp_").split("_")[0],
                                                      **(NO_QC if side.endswith("_noqc") else {}),
                                                      **(LOCAL_DP if side.startswith("dp_") else {})})
        world = load_world(cfg, Paths.at(workdir))
        result = simulate(world, cfg, on_record=lambda record: ends.append(time.time()))
        accuracy = result.history[-1].get("test/accuracy")
    elif side == "pipeline":
        from flows.training import run_federated_training

        cfg = config(model, rounds=rounds, overrides={"execution.executor": "auto", "name": f"w2-{model}"})
        summary = run_federated_training(cfg, str(workdir), fresh=True)
        accuracy = summary["final_test_accuracy"]
        from mlflow.tracking import MlflowClient

        history = MlflowClient(summary["tracking_uri"]).get_metric_history(summary["run_id"], "time/round_s")
        ends = [m.timestamp / 1000 for m in sorted(history, key=lambda m: m.step)]
    else:
        raise ValueError(f"side {side!r}: expected one of {', '.join(SIDES + DP_SIDES)}")
    from fedops_benchmarks.flower_peer import own_cpu_s

    return {"side": side, "model": model, "round_ends": ends, "test_accuracy": accuracy, "cpu_s": own_cpu_s(),
            **extra}


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
    stages = prepare(config("mlp", rounds=rounds), workdir)  # one partition for both models
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
    return {"rounds": rounds, "repeats": repeats, "prepare_s": sum(stages.values()), "stages_s": stages, "table": table,
            "samples_per_round": _samples_per_round(workdir, rounds)}


LABELS = {
    "bare": "bare loop, 1 torch thread",
    "bare_procs": "bare loop, 2 x 1-thread worker processes",
    "sequential": "fedops in process, sequential executor",
    "cohort": "fedops in process, cohort executor",
    "auto": "fedops in process, auto executor",
    "cohort_noqc": "fedops in process, cohort executor, no anomaly scores",
    "auto_noqc": "fedops in process, auto executor, no anomaly scores",
    "pipeline": "fedops pipeline (Prefect + MLflow), auto executor",
    "flower": "Flower 1.42 simulation (Ray), 2 x 1-CPU actors",
    "dp_sequential": "fedops in process, local DP-SGD, sequential executor (Opacus)",
    "dp_cohort": "fedops in process, local DP-SGD, cohort executor",
    "dp_auto": "fedops in process, local DP-SGD, auto executor",
}


def _stages(r: dict[str, Any]) -> str:
    """The data stages' wall seconds, each with the imports its first use pays (a cold process)."""
    st = r.get("stages_s")
    if not st:
        return f"prepare + validate + partition {r['prepare_s']:.1f} s"
    return (f"data stages in a fresh process {r['prepare_s']:.1f} s: prepare {st['prepare']:.1f} s (Prefect's "
            f"API server started), validate {st['validate']:.1f} s (Great Expectations imported), partition "
            f"{st['partition']:.1f} s (1,000 clients split and each validated)")


def format_table(r: dict[str, Any]) -> list[str]:
    """A markdown table per model: seconds per round (steady state), samples/s, end to end, peak
    RSS, CPU seconds, and the ratios to the fastest bare loop and to Flower."""
    lines = [f"W2: Fashion-MNIST, 1,000 clients Dirichlet(0.5), 100 per round, E = 1, B = 32; {r['rounds']} rounds, "
             f"{r['repeats']} interleaved repeat(s), each side its own process; {_stages(r)}", ""]
    for model, rows in r["table"].items():
        # the ratio's baseline: the fastest bare loop, or (DP sides alone) Opacus one client at a time
        base_label, base_sides = (("fastest bare", ("bare", "bare_procs")) if {"bare", "bare_procs"} & set(rows)
                                  else ("dp_sequential", ("dp_sequential",)))
        bare = min((rows[s]["s_per_round"] for s in base_sides if s in rows), default=float("nan"))
        flower = rows.get("flower", {}).get("s_per_round")
        flower_e2e = rows.get("flower", {}).get("end_to_end_s")
        lines += [f"**{model}**", "",
                  f"| side | s / round | samples / s | x {base_label} | Flower / side (per round) | end to end s "
                  "| Flower / side (end to end) | peak RSS MB | CPU s | test acc |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for side, row in rows.items():
            per, e2e, acc = row["s_per_round"], row["end_to_end_s"], row["test_accuracy"]
            vs_flower = "" if flower is None else f"{flower / per:.2f}"
            vs_flower_e2e = "" if flower_e2e is None else f"{flower_e2e / e2e:.2f}"
            accuracy = "" if acc is None else f"{acc:.4f}"
            lines.append(
                f"| {LABELS.get(side, side)} | {per:.2f} | {r['samples_per_round'] / per:,.0f} | {per / bare:.2f} | "
                f"{vs_flower} | {e2e:.1f} | {vs_flower_e2e} | {row['peak_rss_mb']:,.0f} | {row['cpu_s']:.1f} | "
                f"{accuracy} |")
        lines.append("")
    return lines


def write_readme(r: dict[str, Any], readme: Path = ROOT / "README.md") -> None:
    from fedops_benchmarks.readme import replace_block

    replace_block(readme, begin="<!-- engine-table:begin -->", end="<!-- engine-table:end -->",
                  lines=format_table(r))


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


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process, MB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def scale(*, clients: int = 10_000, per_round: int = 100, rounds: int = 20, workdir: Path | None = None,
          executor: str = "auto") -> dict[str, Any]:
    """``clients`` simulated clients over Fashion-MNIST's training rows (IID index partitions, no
    copies), ``per_round`` a round, the 2NN MLP, in process: the resident set after rounds 1 and
    ``rounds`` (growth over rounds would be a leak) and the seconds per round."""
    import numpy as np

    from fedops.round import world_from_bundle
    from fedops.simulation import simulate
    from fedops_benchmarks.w1 import prepare

    workdir = workdir or ROOT / ".cache" / "bench" / "w2"
    workdir.mkdir(parents=True, exist_ok=True)
    base = config("mlp", rounds=rounds)
    prepare(base, workdir)
    cfg = config("mlp", rounds=rounds, overrides={
        "partition": {"num_clients": clients, "name": "iid"}, "server.fraction": per_round / clients,
        "execution.executor": executor})
    raw = cfg.data.load_raw(workdir / "data" / "raw" / cfg.data.name)
    bundle = cfg.data.to_bundle(raw)
    order = np.random.default_rng(cfg.seed).permutation(bundle.y_train.shape[0])
    world = world_from_bundle(cfg, bundle, partition_indices=np.array_split(order, clients))
    rss: dict[int, tuple[float, float]] = {}
    ends: list[float] = []

    def on_round(row: dict[str, Any]) -> None:
        ends.append(time.time())
        rss[int(row["round"])] = _rss_mb()

    start = time.time()
    simulate(world, cfg, on_round=on_round)
    gaps = [b - a for a, b in zip([start] + ends, ends)]
    return {"clients": clients, "per_round": per_round, "rounds": rounds, "executor": executor,
            "rss_mb": {r: rss[r] for r in (1, rounds)}, "rss_mb_by_round": {r: round(v[0]) for r, v in rss.items()},
            "s_per_round": statistics.median(gaps[1:-1] or gaps)}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--side", required=True, choices=SIDES + DP_SIDES)
    ap.add_argument("--model", required=True, choices=tuple(MODELS))
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    a = ap.parse_args()
    print(json.dumps(run_side(a.side, a.model, rounds=a.rounds, workdir=a.workdir)))
