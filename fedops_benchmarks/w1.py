"""W1: the full pipeline (Prefect flow + tasks, MLflow tracking, per-round evaluation, model
registration) against the same SGD steps in a bare PyTorch loop, in one process, side by side.

The bare loop is the physical limit of the simulation: the same clients, the same minibatch
order, the same weighted averaging, written as plain torch with no fedops code on its hot path,
run at its own best thread setting (all cores in one thread).  Both final models are compared, to
show the two runs really did the same steps.
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

ROOT = Path(__file__).resolve().parents[1]


def prepare(cfg: Config, workdir: Path) -> None:
    from flows.pipeline import run_stage

    for stage in ("prepare", "validate", "partition"):
        run_stage(stage, cfg, str(workdir))


def bare_loop(cfg: Config, workdir: Path) -> tuple[float, float, float, torch.Tensor]:
    """Plain PyTorch FedAvg with the pipeline's exact client selection and batch order, and the
    same test-set evaluation at the same cadence (timed apart).
    Returns (total s, eval s, final test accuracy, final params)."""
    from fedops.partition import load_manifest

    raw = cfg.data.load_raw(workdir / "data" / "raw" / cfg.data.name)
    bundle = cfg.data.to_bundle(raw)
    part, _ = load_manifest(workdir / "data" / "partitions" / "manifest.json")
    x, y = bundle.x_train, bundle.y_train
    idx = [torch.tensor(np.asarray(ix), dtype=torch.long) for ix in part.indices]
    model = cfg.model.build(input_shape=bundle.input_shape, num_classes=bundle.num_classes,
                            seed=derive_seed(cfg.seed, STREAM_MODEL_INIT))
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    k = len(idx)
    per_round = max(1, round(cfg.server.fraction * k))
    c = cfg.client
    torch.set_num_threads(os.cpu_count() or 1)
    x_test, y_test = bundle.x_test, bundle.y_test
    eval_s, accuracy = 0.0, float("nan")
    start = time.perf_counter()
    for r in range(1, cfg.server.rounds + 1):
        chosen = np.sort(numpy_rng(cfg.seed, STREAM_SELECTION, r).choice(k, size=per_round, replace=False))
        acc = {name: torch.zeros_like(v, dtype=torch.float64) for name, v in global_state.items()}
        total = 0
        for cid in chosen:
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=c.lr)
            gen = torch_generator(cfg.seed, STREAM_CLIENT, r, int(cid))
            ix = idx[cid]
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
        global_state = {name: (v / total).float() for name, v in acc.items()}
        if r % cfg.server.eval_every == 0 or r == cfg.server.rounds:
            t0 = time.perf_counter()
            model.load_state_dict(global_state)
            model.eval()
            with torch.inference_mode():
                correct = sum(int((model(x_test[i : i + 512]).argmax(1) == y_test[i : i + 512]).sum())
                              for i in range(0, x_test.shape[0], 512))
            accuracy = correct / x_test.shape[0]
            model.train()
            eval_s += time.perf_counter() - t0
    seconds = time.perf_counter() - start
    return seconds, eval_s, accuracy, torch.cat([v.reshape(-1) for v in global_state.values()])


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
    t_bare, t_bare_eval, bare_accuracy, bare_params = bare_loop(cfg, workdir)
    t_pipe, summary = pipeline_run(cfg, workdir)
    saved = torch.load(workdir / "models" / "global.pt", weights_only=True)["state_dict"]
    pipe_params = torch.cat([v.reshape(-1).float() for v in saved.values() if v.is_floating_point()])
    diff = float((pipe_params - bare_params).abs().max())
    result = {
        "workload": "W1: Fashion-MNIST, 100 clients Dirichlet(0.5), 10/round, E=1, B=32, small CNN",
        "rounds": cfg.server.rounds,
        "pipeline_s": t_pipe,
        "bare_loop_s": t_bare,
        "bare_eval_s": t_bare_eval,
        "ratio": t_pipe / t_bare,
        "ratio_sgd_only": t_pipe / (t_bare - t_bare_eval),
        "pipeline_workers": cfg.execution.max_workers,
        "max_abs_param_diff": diff,
        "pipeline_test_accuracy": summary["final_test_accuracy"],
        "bare_test_accuracy": bare_accuracy,
    }
    return result
