"""Attack table: test accuracy under each attack, malicious fraction and aggregation rule
(configs/attacks.yaml: Fashion-MNIST, 50 clients Dirichlet 0.5, 15 per round), mean and spread over
seeds, plus the scaled backdoor against FedAvg, norm bounding and FLTrust. Writes the README block.

Every run goes through fedops' client, attack and server code with the sequential executor
(:func:`fedops.simulation.simulate`); runs are spread over worker processes, one CPU thread each.
"Accuracy" is the mean test accuracy of the last ``LAST`` rounds; the spread is max - min over
seeds. A seed changes the partition, the malicious clients, the model initialisation and every
client's batches.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "attacks.yaml"
BEGIN, END = "<!-- attack-table:begin -->", "<!-- attack-table:end -->"
LAST = 3
SEEDS = (0, 1, 2)
FRACTIONS = (0.1, 0.2, 0.3)
RULES: list[tuple[str, Any]] = [
    ("FedAvg", "fedavg"),
    ("median", "median"),
    ("trimmed mean", {"name": "trimmed_mean", "beta": 0.2}),
    ("Multi-Krum", {"name": "multi_krum", "num_byzantine": 3}),
    ("Bulyan", {"name": "bulyan", "num_byzantine": 3}),
    ("geometric median", "geometric_median"),
    ("FLTrust", {"name": "fltrust", "root_size": 100}),
]
ATTACKS: list[tuple[str, Any]] = [
    ("sign flip", {"name": "sign_flip", "scale": 4.0}),
    ("Gaussian", {"name": "gaussian", "std": 0.5}),
    ("label flip", "label_flip"),
    ("ALIE", "alie"),
    ("IPM", {"name": "ipm", "epsilon": 0.5}),
]
BACKDOOR_FRACTIONS = (0.06, 0.2)
"""3 of 50 clients (about one attacker per round, the regime of Sun et al. 2019), and 10 of 50."""
BACKDOOR = {"name": "backdoor", "target_label": 0}
BACKDOOR_RULES: list[tuple[str, Any]] = [
    ("FedAvg", "fedavg"),
    ("norm bound (tau 0.3)", {"name": "norm_bounded", "max_norm": 0.3}),
    ("norm bound (tau 0.5)", {"name": "norm_bounded", "max_norm": 0.5}),
    ("FLTrust", {"name": "fltrust", "root_size": 100}),
]
"""Honest update norms here have a median of about 0.45 after the first rounds (0.43-0.5)."""


def _workdir(base: Path, seed: int) -> Path:
    return base / f"seed-{seed}"


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One run; ``job`` holds seed, attack, fraction, rule and the work directory."""
    import torch

    from fedops.config import load_config
    from fedops.paths import Paths
    from fedops.round import load_world
    from fedops.simulation import simulate

    torch.set_num_threads(1)
    overrides: dict[str, Any] = {"seed": job["seed"], "server.aggregator": job["rule"]}
    if job["fraction"] > 0:
        overrides["simulation"] = {"attack": job["attack"], "malicious_fraction": job["fraction"]}
    if job.get("rounds"):
        overrides["server.rounds"] = job["rounds"]
    cfg = load_config(CONFIG, overrides)
    start = time.perf_counter()
    world = load_world(cfg, Paths.at(job["workdir"]))
    res = simulate(world, cfg, evaluate_last=LAST)
    tail = res.history[-LAST:]
    out = {k: v for k, v in job.items() if k != "workdir"}
    out["accuracy"] = sum(h["test/accuracy"] for h in tail) / len(tail)
    if "test/backdoor_accuracy" in tail[-1]:
        out["backdoor_accuracy"] = sum(h["test/backdoor_accuracy"] for h in tail) / len(tail)
    elif job["table"] == "backdoor":  # no attack: the trigger's base rate on the final model
        from fedops.attacks import backdoor_accuracy

        model = world.runtime.new_model(seed=0)
        world.runtime.layout.load_into(model, res.params)
        out["backdoor_accuracy"] = backdoor_accuracy(model, world.testset.x, world.testset.y, attack=BACKDOOR)
    out["seconds"] = time.perf_counter() - start
    return out


def jobs(workdir: Path, *, rounds: int | None = None) -> list[dict[str, Any]]:
    out = []
    for seed in SEEDS:
        w = str(_workdir(workdir, seed))
        for rlabel, rule in RULES:
            out.append({"table": "main", "seed": seed, "attack_label": "none", "attack": "none", "fraction": 0.0,
                        "rule_label": rlabel, "rule": rule, "workdir": w, "rounds": rounds})
            for alabel, attack in ATTACKS:
                for fraction in FRACTIONS:
                    out.append({"table": "main", "seed": seed, "attack_label": alabel, "attack": attack,
                                "fraction": fraction, "rule_label": rlabel, "rule": rule, "workdir": w,
                                "rounds": rounds})
        for rlabel, rule in BACKDOOR_RULES:
            for fraction in (0.0, *BACKDOOR_FRACTIONS):
                out.append({"table": "backdoor", "seed": seed, "attack_label": "backdoor",
                            "attack": BACKDOOR if fraction else "none", "fraction": fraction,
                            "rule_label": rlabel, "rule": rule, "workdir": w, "rounds": rounds})
    return out


def main(*, workdir: Path | None = None, rounds: int | None = None, processes: int = 2, log=print) -> dict[str, Any]:
    from fedops.config import load_config
    from fedops_benchmarks.w1 import prepare

    workdir = workdir or ROOT / ".cache" / "bench" / "attacks"
    start = time.perf_counter()
    for seed in SEEDS:
        prepare(load_config(CONFIG, {"seed": seed}), _workdir(workdir, seed))
    todo = jobs(workdir, rounds=rounds)
    log(f"{len(todo)} runs on {processes} processes")
    results = []
    with ProcessPoolExecutor(max_workers=processes) as pool:
        for i, r in enumerate(pool.map(run_one, todo), 1):
            results.append(r)
            if i % 20 == 0 or i == len(todo):
                log(f"  {i}/{len(todo)} runs, {time.perf_counter() - start:.0f} s")
    summary = summarise(results)
    summary["seconds"] = time.perf_counter() - start
    summary["processes"] = processes
    summary["rounds"] = rounds or load_config(CONFIG).server.rounds
    write_readme(summary)
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "spread": max(values) - min(values), "n": len(values)}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[tuple, list[float]] = {}
    bd: dict[tuple, dict[str, list[float]]] = {}
    for r in results:
        if r["table"] == "main":
            cells.setdefault((r["attack_label"], r["fraction"], r["rule_label"]), []).append(r["accuracy"])
        else:
            entry = bd.setdefault((r["rule_label"], r["fraction"]), {"accuracy": [], "backdoor_accuracy": []})
            entry["accuracy"].append(r["accuracy"])
            if "backdoor_accuracy" in r:
                entry["backdoor_accuracy"].append(r["backdoor_accuracy"])
    main_cells = {k: _stats(v) for k, v in cells.items()}
    clean = main_cells[("none", 0.0, "FedAvg")]["mean"]
    checks = {}
    for alabel, _ in ATTACKS:
        best = max(((rl, main_cells[(alabel, 0.2, rl)]["mean"]) for rl, _ in RULES), key=lambda t: t[1])
        checks[alabel] = {"best_rule": best[0], "best": best[1], "gap_pts": 100 * (clean - best[1]),
                          "fedavg": main_cells[(alabel, 0.2, "FedAvg")]["mean"]}
    backdoor = {f"{k[0]}|{k[1]}": {"accuracy": _stats(v["accuracy"]),
                                   "backdoor_accuracy": _stats(v["backdoor_accuracy"]) if v["backdoor_accuracy"] else None}
                for k, v in bd.items()}
    return {"clean": clean, "cells": {"|".join(map(str, k)): v for k, v in main_cells.items()},
            "checks_at_20pct": checks, "backdoor": backdoor}


def write_readme(summary: dict[str, Any], readme: Path = ROOT / "README.md") -> None:
    from fedops_benchmarks.readme import replace_block

    cells = summary["cells"]
    rule_labels = [r for r, _ in RULES]
    lines = ["", f"Test accuracy, mean ± spread (max − min) over {len(SEEDS)} seeds, mean of the last {LAST} of "
             f"{summary['rounds']} rounds. Clean FedAvg: **{summary['clean']:.4f}**.", "",
             "| attack | malicious | " + " | ".join(rule_labels) + " |",
             "| --- | --- | " + " | ".join("---" for _ in rule_labels) + " |"]
    rows = [("none", 0.0)] + [(a, f) for a, _ in ATTACKS for f in FRACTIONS]
    for alabel, fraction in rows:
        vals = [cells[f"{alabel}|{fraction}|{rl}"] for rl in rule_labels]
        best = max(v["mean"] for v in vals)
        text = [(f"**{v['mean']:.3f}**" if v["mean"] == best else f"{v['mean']:.3f}") + f" ± {v['spread']:.3f}"
                for v in vals]
        lines.append(f"| {alabel} | {fraction:.0%} | " + " | ".join(text) + " |")
    lines += ["", "At 20% malicious: best rule per attack against clean FedAvg:", ""]
    for alabel, c in summary["checks_at_20pct"].items():
        lines.append(f"- {alabel}: {c['best_rule']} {c['best']:.4f} ({c['gap_pts']:+.2f} points below clean; "
                     f"FedAvg {c['fedavg']:.4f})")
    head = ["rule", "no attack: accuracy (backdoor base rate)"]
    for f in BACKDOOR_FRACTIONS:
        head += [f"{f:.0%} malicious: accuracy", f"{f:.0%}: backdoor accuracy"]
    lines += ["", "Scaled model-replacement backdoor (Bagdasaryan et al.: half of each attacker's examples "
              "carry a 3×3 bottom-right trigger relabelled to class 0, update boosted by n/f). Backdoor accuracy "
              "is the share of triggered test images of other classes classified as class 0:", "",
              "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for rlabel, _ in BACKDOOR_RULES:
        clean = summary["backdoor"][f"{rlabel}|0.0"]
        cols = [rlabel, f"{clean['accuracy']['mean']:.4f} ({clean['backdoor_accuracy']['mean']:.3f})"]
        for f in BACKDOOR_FRACTIONS:
            hit = summary["backdoor"][f"{rlabel}|{f}"]
            cols += [f"{hit['accuracy']['mean']:.4f} ± {hit['accuracy']['spread']:.4f}",
                     f"{hit['backdoor_accuracy']['mean']:.4f} ± {hit['backdoor_accuracy']['spread']:.4f}"]
        lines.append("| " + " | ".join(cols) + " |")
    lines += ["", f"{sum(v['n'] for v in cells.values()) + sum(v['accuracy']['n'] for v in summary['backdoor'].values())} "
              f"runs in {summary['seconds'] / 60:.1f} min on {summary['processes']} CPU processes "
              "(one thread each).", ""]
    replace_block(readme, begin=BEGIN, end=END, lines=lines)
