"""Test accuracy against epsilon (delta = 1e-5) for client-level DP-FedAvg on Fashion-MNIST with
1,000 clients, and the non-private run with SecAgg+ on; writes the README table.

Runs use fedops' client and server code through the sequential executor; sigma is solved by the
Opacus accountant for each target epsilon over the configured rounds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fedops.config import load_config
from fedops.paths import Paths

ROOT = Path(__file__).resolve().parents[1]
EPSILONS = (1.0, 2.0, 4.0, 8.0, None)
BEGIN, END = "<!-- privacy-table:begin -->", "<!-- privacy-table:end -->"


def run_one(overrides: dict[str, Any], *, workdir: Path, log=print) -> dict[str, Any]:
    from fedops_benchmarks.w1 import prepare
    from flows.training import build_runtime
    from fedops.server.engine import FederatedServer
    from fedops.simulation import simulate

    cfg = load_config(ROOT / "configs" / "dp_fmnist.yaml", {"execution.max_workers": 1, **overrides})
    prepare(cfg, workdir)
    runtime, bundle, _ = build_runtime(cfg, Paths.at(workdir))
    res = simulate(runtime, x_test=bundle.x_test, y_test=bundle.y_test, num_classes=bundle.num_classes,
                   rounds=cfg.server.rounds)
    sigma = FederatedServer(config=cfg, params=runtime.layout.flatten(runtime.new_model(seed=0)),
                            num_clients=runtime.num_clients).noise_multiplier
    last = res.history[-1]
    row = {"epsilon": last.get("privacy/epsilon"), "sigma": sigma, "accuracy": last["test/accuracy"],
           "rounds": len(res.history), "seconds": res.seconds}
    log(f"  {overrides}: accuracy {row['accuracy']:.4f}, epsilon {row['epsilon']}, sigma {sigma}")
    return row


def main(*, workdir: Path | None = None, rounds: int | None = None, log=print) -> list[dict[str, Any]]:
    workdir = workdir or ROOT / ".cache" / "bench" / "dp"
    extra = {"server.rounds": rounds} if rounds else {}
    rows = []
    for eps in EPSILONS:
        if eps is None:
            ov = {**extra, "privacy": {"mode": "none"}, "server.selector": "poisson"}
        else:
            ov = {**extra, "privacy.target_epsilon": eps}
        rows.append({"target": eps, "secagg": False, **run_one(ov, workdir=workdir, log=log)})
    ov = {**extra, "privacy": {"mode": "none"}, "secagg": {"enabled": True}}
    rows.append({"target": None, "secagg": True, **run_one(ov, workdir=workdir, log=log)})
    write_readme(rows)
    return rows


def write_readme(rows: list[dict[str, Any]], readme: Path = ROOT / "README.md") -> None:
    lines = [BEGIN, "", "| target ε (δ = 1e-5) | σ (solved) | ε spent | SecAgg+ | test accuracy |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        target = "∞ (no DP)" if r["target"] is None else f"{r['target']:g}"
        sigma = "-" if not r["sigma"] else f"{r['sigma']:.3f}"
        spent = "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        lines.append(f"| {target} | {sigma} | {spent} | {'on' if r['secagg'] else 'off'} | {r['accuracy']:.4f} |")
    lines += ["", END]
    text = readme.read_text()
    block = "\n".join(lines)
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)
