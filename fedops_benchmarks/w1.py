"""W1: the full pipeline (Prefect flow + tasks, MLflow tracking, per-round evaluation, model
registration) against the same SGD steps in a bare PyTorch loop, in one process, side by side.

The bare loop is the physical limit of the simulation: the same clients, the same minibatch
order, the same weighted averaging, written as plain torch with no fedops code on its hot path.
It runs with one torch thread (on a busy 2-core machine a 2-thread torch loop is erratic), once in
this process and once split over ``execution.max_workers`` single-threaded worker processes; the
faster of the two is the baseline and both are printed. The final models are compared, to show
the runs really did the same steps.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedops.config import Config, load_config
from fedops.rng import STREAM_CLIENT, STREAM_MODEL_INIT, STREAM_SELECTION, derive_seed, numpy_rng, torch_generator
from fedops_benchmarks.flower_peer import own_cpu_s, tree_cpu_s

ROOT = Path(__file__).resolve().parents[1]


def prepare(cfg: Config, workdir: Path) -> dict[str, float]:
    """Run the data stages into ``workdir``; each stage's wall seconds (what its first use
    imports included)."""
    from flows.pipeline import run_stage

    seconds = {}
    for stage in ("prepare", "validate", "partition"):
        start = time.perf_counter()
        run_stage(stage, cfg, str(workdir))
        seconds[stage] = time.perf_counter() - start
    return seconds


_WORKER: dict[str, Any] = {}


def _load(cfg: Config, workdir: Path) -> dict[str, Any]:
    from fedops.partition import load_manifest

    raw = cfg.data.load_raw(workdir / "data" / "raw" / cfg.data.name)
    bundle = cfg.data.to_bundle(raw)
    part, _ = load_manifest(workdir / "data" / "partitions" / "manifest.json")
    model = cfg.model.build(input_shape=bundle.input_shape, num_classes=bundle.num_classes,
                            seed=derive_seed(cfg.seed, STREAM_MODEL_INIT))
    return {"cfg": cfg, "x": bundle.x_train, "y": bundle.y_train, "model": model,
            "x_test": bundle.x_test, "y_test": bundle.y_test,
            "idx": [torch.tensor(np.asarray(ix), dtype=torch.long) for ix in part.indices]}


def _train_clients(data: dict[str, Any], global_state: dict[str, torch.Tensor], r: int, clients: list[int]):
    """Plain local SGD for ``clients`` from ``global_state``: (sample-weighted sum of their states, samples)."""
    cfg, model, x, y = data["cfg"], data["model"], data["x"], data["y"]
    c = cfg.client
    acc = {name: torch.zeros_like(v, dtype=torch.float64) for name, v in global_state.items()}
    total = 0
    for cid in clients:
        model.load_state_dict(global_state)
        opt = torch.optim.SGD(model.parameters(), lr=c.lr)
        gen = torch_generator(cfg.seed, STREAM_CLIENT, r, int(cid))
        ix = data["idx"][cid]
        n = ix.numel()
        for _ in range(c.epochs):
            order = ix[torch.randperm(n, generator=gen)]
            for b in range(0, n, c.batch_size):
                bi = order[b : b + c.batch_size]
                loss = F.cross_entropy(model(x[bi]), y[bi])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        for name, v in model.state_dict().items():
            acc[name] += n * v.double()
        total += n
    return acc, total


def _worker_init(cfg_params: dict[str, Any], workdir: str) -> None:
    from fedops.config import parse_config

    torch.set_num_threads(1)
    _WORKER.update(_load(parse_config(cfg_params), Path(workdir)))


def _worker_round(global_state, r, clients):
    return _train_clients(_WORKER, global_state, r, clients)


def _correct(data: dict[str, Any], global_state: dict[str, torch.Tensor], lo: int, hi: int) -> int:
    """Test-set hits of ``global_state`` on rows ``lo:hi``, 512 at a time."""
    model = data["model"]
    model.load_state_dict(global_state)
    model.eval()
    x_test, y_test = data["x_test"], data["y_test"]
    with torch.inference_mode():
        correct = sum(int((model(x_test[i : min(i + 512, hi)]).argmax(1) == y_test[i : min(i + 512, hi)]).sum())
                      for i in range(lo, hi, 512))
    model.train()
    return correct


def _worker_eval(global_state, lo, hi):
    return _correct(_WORKER, global_state, lo, hi)


def bare_loop(cfg: Config, workdir: Path, *, processes: int = 1,
              round_ends: list[float] | None = None) -> tuple[float, float, float, torch.Tensor]:
    """Plain PyTorch FedAvg with the pipeline's exact client selection and batch order, and the
    same test-set evaluation at the same cadence (timed apart), with one torch thread: in this
    process (``processes=1``), or over ``processes`` single-threaded worker processes, each round's
    clients split between them by their rows (the pipeline's balanced split) and the test set
    evaluated in ``processes`` contiguous shards at once. Returns (total s, eval s, final test
    accuracy, final params); ``round_ends`` gets each round's end (``time.time()``, from the clock's
    start)."""
    from concurrent.futures import ProcessPoolExecutor

    from fedops.round.executor import groups_of

    data = _load(cfg, workdir)
    model = data["model"]
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    k = len(data["idx"])
    per_round = max(1, round(cfg.server.fraction * k))
    torch.set_num_threads(1)
    x_test = data["x_test"]
    pool = (ProcessPoolExecutor(processes, initializer=_worker_init, initargs=(cfg.to_params(), str(workdir)))
            if processes > 1 else None)
    try:
        if pool is not None:  # start the workers and load their data before the clock starts
            list(pool.map(_worker_round, [global_state] * processes, [0] * processes, [[]] * processes))
        eval_s, accuracy = 0.0, float("nan")
        start = time.perf_counter()
        if round_ends is not None:
            round_ends.append(time.time())
        for r in range(1, cfg.server.rounds + 1):
            chosen = [int(c) for c in np.sort(numpy_rng(cfg.seed, STREAM_SELECTION, r).choice(k, size=per_round,
                                                                                             replace=False))]
            if pool is None:
                parts = [_train_clients(data, global_state, r, chosen)]
            else:
                shares = groups_of(chosen, -(-len(chosen) // processes),
                                   cost={c: data["idx"][c].numel() for c in chosen})
                parts = list(pool.map(_worker_round, [global_state] * len(shares), [r] * len(shares), shares))
            total = sum(n for _, n in parts)
            global_state = {name: (sum(acc[name] for acc, _ in parts) / total).float() for name in global_state}
            if r % cfg.server.eval_every == 0 or r == cfg.server.rounds:
                t0 = time.perf_counter()
                n_test = x_test.shape[0]
                if pool is None:
                    correct = _correct(data, global_state, 0, n_test)
                else:
                    cuts = [n_test * i // processes for i in range(processes + 1)]
                    correct = sum(pool.map(_worker_eval, [global_state] * processes, cuts[:-1], cuts[1:]))
                accuracy = correct / n_test
                eval_s += time.perf_counter() - t0
            if round_ends is not None:
                round_ends.append(time.time())
        seconds = time.perf_counter() - start
    finally:
        if pool is not None:
            pool.shutdown()
    return seconds, eval_s, accuracy, torch.cat([v.reshape(-1) for v in global_state.values()])


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _rounds_s(summary: dict[str, Any]) -> float:
    """The pipeline's seconds inside its rounds (clients, server, evaluation: ``time/round_s`` as
    logged to MLflow); the rest of its wall time is start-up, MLflow run set-up, the per-round
    tracking and checkpoints, and the model's registration."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(summary["tracking_uri"]).get_metric_history(summary["run_id"], "time/round_s")
    return float(sum(m.value for m in history))


def pipeline_run(cfg: Config, workdir: Path) -> tuple[float, dict[str, Any]]:
    from flows.training import run_federated_training

    start = time.perf_counter()
    summary = run_federated_training(cfg, str(workdir))
    return time.perf_counter() - start, summary


def warm_up(cfg: Config, workdir: Path) -> None:
    """Start the Prefect API (ephemeral server) and warm the kernels, untimed, for both sides."""
    from prefect import flow

    @flow(name="warm-up")
    def _noop() -> int:
        return 1

    _noop()
    one = cfg.model_copy(update={"server": cfg.server.model_copy(update={"rounds": 1})})
    bare_loop(one, workdir)


def main(
    *, config: Path = ROOT / "configs" / "w1.yaml", rounds: int | None = None, workdir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    overrides = {**(overrides or {}), **({"server.rounds": rounds} if rounds else {})}
    cfg = load_config(config, overrides)
    workdir = workdir or ROOT / ".cache" / "bench" / cfg.name
    workdir.mkdir(parents=True, exist_ok=True)
    prepare(cfg, workdir)
    warm_up(cfg, workdir)
    workers = cfg.execution.max_workers
    cpu0 = own_cpu_s()
    t_bare, t_bare_eval, bare_accuracy, bare_params = bare_loop(cfg, workdir)
    cpu_bare = own_cpu_s() - cpu0
    cpu0 = tree_cpu_s()  # the pipeline's CPU includes its Prefect API server's, a child process
    t_pipe, summary = pipeline_run(cfg, workdir)
    cpu_pipe = tree_cpu_s() - cpu0
    cpu0 = own_cpu_s()  # the worker processes are reaped when the pool shuts down: counted here
    t_procs, t_procs_eval, _, procs_params = bare_loop(cfg, workdir, processes=workers)
    cpu_procs = own_cpu_s() - cpu0
    saved = torch.load(workdir / "models" / "global.pt", weights_only=True)["state_dict"]
    pipe_params = torch.cat([v.reshape(-1).float() for v in saved.values() if v.is_floating_point()])
    fastest = min(t_bare, t_procs)
    fastest_eval = t_bare_eval if t_bare <= t_procs else t_procs_eval
    return {
        "workload": "W1: Fashion-MNIST, 100 clients Dirichlet(0.5), 10/round, E=1, B=32, small CNN",
        "rounds": cfg.server.rounds,
        "pipeline_s": t_pipe,
        "bare_loop_s": t_bare,
        "bare_eval_s": t_bare_eval,
        "bare_procs_s": t_procs,
        "bare_procs_eval_s": t_procs_eval,
        "bare_procs": workers,
        "ratio": t_pipe / fastest,
        "ratio_one_thread": t_pipe / t_bare,
        "ratio_procs": t_pipe / t_procs,
        "ratio_sgd_only": t_pipe / (fastest - fastest_eval),
        "pipeline_rounds_s": _rounds_s(summary),
        "pipeline_cpu_s": cpu_pipe,
        "bare_loop_cpu_s": cpu_bare,
        "bare_procs_cpu_s": cpu_procs,
        "cpu_ratio": cpu_pipe / (cpu_bare if t_bare <= t_procs else cpu_procs),
        # no overlap finishes the pipeline's CPU seconds faster than all the cores working at once
        "cores": _cores(),
        "pipeline_floor_s": cpu_pipe / _cores(),
        "floor_ratio": cpu_pipe / _cores() / fastest,
        "bare_procs_busy_cores": cpu_procs / t_procs,
        "cpu_ratio_one_thread": cpu_pipe / cpu_bare,
        "cpu_ratio_procs": cpu_pipe / cpu_procs,
        "pipeline_workers": workers,
        "max_abs_param_diff": float((pipe_params - bare_params).abs().max()),
        "max_abs_param_diff_procs": float((procs_params - bare_params).abs().max()),
        "pipeline_test_accuracy": summary["final_test_accuracy"],
        "bare_test_accuracy": bare_accuracy,
    }
