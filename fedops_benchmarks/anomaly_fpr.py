"""The anomaly flag's false-positive rate on clean runs (no attacker: every flag is false), per
configuration of clients per round x partition skew, on Fashion-MNIST and Pima. Writes the README
block between the anomaly-fpr markers.

Each run goes through fedops' round with the sequential executor
(:func:`fedops.simulation.simulate`) and reads the client table each round releases. The rate is
flagged client-rounds / scored client-rounds. The same runs also give the rate of the previous
rule (norm z-score over 3, or cosine to the aggregate below 0, at any cohort size), recomputed
from the same released norms and cosines, for comparison.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- anomaly-fpr:begin -->", "<!-- anomaly-fpr:end -->"

DATASETS: dict[str, dict[str, Any]] = {
    "Fashion-MNIST": {
        "config": ROOT / "configs" / "attacks.yaml",  # 50 clients, one-hidden-layer MLP
        "num_clients": 50, "rounds": 15, "per_round": (3, 5, 10, 20),
    },
    "Pima": {
        "config": ROOT / "configs" / "pima.yaml",  # logistic regression
        "num_clients": 20, "rounds": 30, "per_round": (3, 5, 10, 20),
    },
}
SKEWS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "Fashion-MNIST": [("IID", {"name": "iid"}),
                      ("Dirichlet 1.0", {"name": "dirichlet", "alpha": 1.0, "min_size": 10}),
                      ("Dirichlet 0.1", {"name": "dirichlet", "alpha": 0.1, "min_size": 10})],
    # 614 training rows, 2 classes: 20 clients of >= 5 rows each rule out alpha = 0.1
    "Pima": [("IID", {"name": "iid"}),
             ("Dirichlet 1.0", {"name": "dirichlet", "alpha": 1.0, "min_size": 5}),
             ("Dirichlet 0.3", {"name": "dirichlet", "alpha": 0.3, "min_size": 5})],
}


def _overrides(dataset: str, skew: dict[str, Any], per_round: int | None = None) -> dict[str, Any]:
    spec = DATASETS[dataset]
    out: dict[str, Any] = {
        "partition": {"num_clients": spec["num_clients"], **skew},
        "quality": {"anomaly_scores": True},
        "server": {"rounds": spec["rounds"], "eval_every": spec["rounds"]},
        "execution": {"max_workers": 1, "torch_threads": 1},
        "baseline": {"enabled": False},
    }
    if per_round is not None:
        out["server"]["fraction"] = per_round / spec["num_clients"]
    return out


def _workdir(base: Path, dataset: str, skew_label: str) -> Path:
    return base / f"{dataset}-{skew_label}".replace(" ", "_").lower()


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from fedops.config import load_config
    from fedops.paths import Paths
    from fedops.quality import robust_z
    from fedops.round import load_world
    from fedops.simulation import simulate

    torch.set_num_threads(1)
    cfg = load_config(DATASETS[job["dataset"]]["config"], _overrides(job["dataset"], job["skew"], job["per_round"]))
    counts = {"scored": 0, "flagged": 0, "flagged_old": 0, "rounds_with_flags": 0}

    def on_record(record) -> None:
        rows = [r for r in record.client_table or [] if "flagged" in r]
        counts["scored"] += len(rows)
        flags = sum(bool(r["flagged"]) for r in rows)
        counts["flagged"] += flags
        counts["rounds_with_flags"] += flags > 0
        if rows:  # the previous rule: robust z of the plain norm over 3, or cosine below 0
            old_z = robust_z(torch.tensor([float(r["update_norm"]) for r in rows], dtype=torch.float64))
            counts["flagged_old"] += sum(float(z) > 3.0 or r["cosine_to_aggregate"] < 0.0 for z, r in zip(old_z, rows))

    start = time.perf_counter()
    world = load_world(cfg, Paths.at(job["workdir"]))
    res = simulate(world, cfg, on_record=on_record)
    return {**{k: v for k, v in job.items() if k not in ("workdir", "skew")}, **counts,
            "accuracy": res.history[-1].get("test/accuracy"), "seconds": time.perf_counter() - start}


def jobs(base: Path) -> list[dict[str, Any]]:
    return [{"dataset": d, "skew_label": label, "skew": skew, "per_round": k, "workdir": str(_workdir(base, d, label))}
            for d, spec in DATASETS.items() for label, skew in SKEWS[d] for k in spec["per_round"]]


def main(*, workdir: Path | None = None, processes: int = 2, log=print) -> dict[str, Any]:
    from fedops.config import load_config
    from fedops_benchmarks.w1 import prepare

    base = workdir or ROOT / ".cache" / "bench" / "anomaly"
    start = time.perf_counter()
    for dataset, spec in DATASETS.items():
        for label, skew in SKEWS[dataset]:
            prepare(load_config(spec["config"], _overrides(dataset, skew)), _workdir(base, dataset, label))
    todo = jobs(base)
    log(f"{len(todo)} clean runs on {processes} processes")
    with ProcessPoolExecutor(max_workers=processes) as pool:
        results = list(pool.map(run_one, todo))
    summary = {"results": results, "seconds": time.perf_counter() - start, "processes": processes}
    write_readme(summary)
    return summary


def _rate(flagged: int, scored: int) -> str:
    return f"{100 * flagged / scored:.1f}% ({flagged}/{scored})" if scored else "-"


def table(summary: dict[str, Any]) -> str:
    lines = ["| data set | partition | clients per round | flag rate (this rule) | rounds with a flag | "
             "flag rate (previous rule: z > 3 or cosine < 0) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in summary["results"]:
        rounds = DATASETS[r["dataset"]]["rounds"]
        lines.append(f"| {r['dataset']} | {r['skew_label']} | {r['per_round']} | {_rate(r['flagged'], r['scored'])} | "
                     f"{r['rounds_with_flags']}/{rounds} | {_rate(r['flagged_old'], r['scored'])} |")
    total = sum(r["scored"] for r in summary["results"])
    flagged = sum(r["flagged"] for r in summary["results"])
    old = sum(r["flagged_old"] for r in summary["results"])
    return ("\n".join(lines) + f"\n\nOver all {len(summary['results'])} clean runs: {_rate(flagged, total)} of "
            f"client-rounds flagged (previous rule: {_rate(old, total)}). "
            f"{summary['processes']} processes, {summary['seconds'] / 60:.1f} min.")


def write_readme(summary: dict[str, Any], readme: Path = ROOT / "README.md") -> None:
    from fedops_benchmarks.readme import replace_block

    replace_block(readme, begin=BEGIN, end=END, lines=["", table(summary), ""])
