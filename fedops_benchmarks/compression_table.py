"""Final accuracy and bytes on the wire per codec (configs/compression.yaml: Fashion-MNIST, 100
clients Dirichlet 0.5, 10 per round, the same rounds for every codec); writes the README table.

Runs use fedops' client and server code (:func:`fedops.simulation.simulate`), so the bytes are
the byte accounting of the real payloads; they are spread over worker processes, one CPU thread
each. "Final accuracy" is the mean test accuracy of the last ``LAST`` rounds (single rounds of
non-IID FedAvg move by about a point). The small-CNN block is one seed per codec; the block on
RPN's own model repeats every codec over ``PAPER_SEEDS`` (a seed changes the partition, the
initial model and the client sampling) and compares each codec with float32 seed by seed.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from fedops.config import load_config
from fedops.paths import Paths
from fedops_benchmarks.readme import replace_block

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "compression.yaml"
BEGIN, END = "<!-- compression-table:begin -->", "<!-- compression-table:end -->"
LAST = 5
RPN_FILTERS = {"name": "rpn", "unpooled_filters": 0.25}
"""RPN with a quarter of each convolution's filters sent whole (the per-filter selection)."""
RUNS: list[tuple[str, dict[str, Any]]] = [
    ("none (float32)", {"name": "none"}),
    ("fp16", {"name": "fp16"}),
    ("QSGD 8 bits", {"name": "qsgd", "bits": 8}),
    ("QSGD 4 bits", {"name": "qsgd", "bits": 4}),
    ("top-k 10%", {"name": "topk", "fraction": 0.1}),
    ("top-k 10% + error feedback", {"name": "topk", "fraction": 0.1, "error_feedback": True}),
    ("top-k 1%", {"name": "topk", "fraction": 0.01}),
    ("top-k 1% + error feedback", {"name": "topk", "fraction": 0.01, "error_feedback": True}),
    ("random-k 10%", {"name": "randk", "fraction": 0.1}),
    ("RPN", {"name": "rpn"}),
    ("RPN, 25% of filters whole", RPN_FILTERS),
]
PAPER_MODEL = "mnist_cnn"
"""RPN's own model (the 1,199,882-parameter MNIST CNN of the RPN paper): conv features matter less
than in the small CNN, whose 3x3 kernels hold a larger share of what the model learns."""
PAPER_MODEL_RUNS: list[tuple[str, dict[str, Any]]] = [
    ("none (float32)", {"name": "none"}), ("RPN", {"name": "rpn"}), ("RPN, 25% of filters whole", RPN_FILTERS)]
PAPER_SEEDS = (0, 1, 2)


def _workdir(base: Path, seed: int) -> Path:
    return base / f"seed-{seed}"


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One run; ``job`` holds label, model, codec, seed, rounds and the work directory."""
    import torch

    from fedops.round import load_world
    from fedops.simulation import simulate

    torch.set_num_threads(1)
    overrides: dict[str, Any] = {"execution.max_workers": 1, "execution.torch_threads": 1, "seed": job["seed"],
                                 "transport.codec": job["codec"], "model": {"name": job["model"]}}
    if job.get("rounds"):
        overrides["server.rounds"] = job["rounds"]
    cfg = load_config(CONFIG, overrides)
    world = load_world(cfg, Paths.at(job["workdir"]))
    res = simulate(world, cfg, evaluate_last=LAST)
    tail = [h["test/accuracy"] for h in res.history[-LAST:]]
    last = res.history[-1]
    return {
        **{k: v for k, v in job.items() if k != "workdir"}, "rounds": len(res.history),
        "accuracy": sum(tail) / len(tail), "up_mb": last["comm/bytes_up_total"] / 1e6,
        "down_mb": last["comm/bytes_down_total"] / 1e6, "seconds": res.seconds, "num_params": world.runtime.layout.size,
    }


def jobs(workdir: Path, *, rounds: int | None = None) -> list[dict[str, Any]]:
    out = [{"label": label, "model": "small_cnn", "codec": codec, "seed": 0, "rounds": rounds,
            "workdir": str(_workdir(workdir, 0))} for label, codec in RUNS]
    out += [{"label": label, "model": PAPER_MODEL, "codec": codec, "seed": seed, "rounds": rounds,
             "workdir": str(_workdir(workdir, seed))} for seed in PAPER_SEEDS for label, codec in PAPER_MODEL_RUNS]
    return out


def main(*, workdir: Path | None = None, rounds: int | None = None, processes: int = 2,
         log=print) -> list[dict[str, Any]]:
    from fedops_benchmarks.w1 import prepare

    workdir = workdir or ROOT / ".cache" / "bench" / "compression"
    start = time.perf_counter()
    for seed in sorted({0, *PAPER_SEEDS}):
        prepare(load_config(CONFIG, {"seed": seed}), _workdir(workdir, seed))
    todo = jobs(workdir, rounds=rounds)
    log(f"{len(todo)} runs on {processes} processes")
    rows = []
    with ProcessPoolExecutor(max_workers=processes) as pool:
        for r in pool.map(run_one, todo):
            rows.append(r)
            log(f"  {r['model']} seed {r['seed']} {r['label']}: accuracy {r['accuracy']:.4f}, up {r['up_mb']:.2f} MB, "
                f"down {r['down_mb']:.2f} MB, {r['seconds']:.0f} s ({time.perf_counter() - start:.0f} s so far)")
    write_readme(summarise(rows), minutes=(time.perf_counter() - start) / 60, processes=processes)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per model, one line per codec: the mean over seeds, and the difference from float32 taken
    seed by seed (mean, min, max) so that a seed's partition affects both sides alike."""
    out: dict[str, list[dict[str, Any]]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        ref = {r["seed"]: r for r in mine if r["codec"]["name"] == "none"}
        lines = []
        for label in dict.fromkeys(r["label"] for r in mine):
            runs = [r for r in mine if r["label"] == label]
            diffs = [100 * (r["accuracy"] - ref[r["seed"]]["accuracy"]) for r in runs]
            acc = [r["accuracy"] for r in runs]
            up = sum(r["up_mb"] for r in runs) / len(runs)
            lines.append({
                "label": label, "model": model, "seeds": len(runs), "rounds": runs[0]["rounds"],
                "num_params": runs[0]["num_params"], "accuracy": sum(acc) / len(acc), "spread": max(acc) - min(acc),
                "vs_none": sum(diffs) / len(diffs), "vs_none_min": min(diffs), "vs_none_max": max(diffs),
                "up_mb": up, "down_mb": sum(r["down_mb"] for r in runs) / len(runs),
                "up_ratio": sum(ref[r["seed"]]["up_mb"] for r in runs) / len(runs) / up,
            })
        out[model] = lines
    return out


def _table(lines: list[dict[str, Any]]) -> list[str]:
    seeds = lines[0]["seeds"]
    acc = f"final accuracy (mean of last {LAST} rounds{f', mean ± spread over {seeds} seeds' if seeds > 1 else ''})"
    vs = "vs none (per seed: mean [min, max])" if seeds > 1 else "vs none"
    out = [f"| codec | {acc} | {vs} | upload MB | upload ratio | download MB |", "| --- | --- | --- | --- | --- | --- |"]
    for r in lines:
        a = f"{r['accuracy']:.4f}" + (f" ± {r['spread']:.4f}" if seeds > 1 else "")
        d = f"{r['vs_none']:+.2f} pts" + (f" [{r['vs_none_min']:+.2f}, {r['vs_none_max']:+.2f}]" if seeds > 1 else "")
        out.append(f"| {r['label']} | {a} | {d} | {r['up_mb']:.2f} | {r['up_ratio']:.2f}x | {r['down_mb']:.2f} |")
    return out


def write_readme(summary: dict[str, list[dict[str, Any]]], *, minutes: float | None = None, processes: int = 2,
                 readme: Path = ROOT / "README.md") -> None:
    lines: list[str] = []
    for model, group in summary.items():
        lines += ["", f"**{model}** ({group[0]['num_params']:,} parameters, {group[0]['rounds']} rounds):", "",
                  *_table(group)]
    lines += ["", "Bytes are the serialised payloads (headers, indices, scales included), summed over all "
              "clients and rounds (per run; the mean over seeds where there are several)."
              + (f" The runs took {minutes:.1f} min on {processes} CPU processes." if minutes is not None else ""), ""]
    replace_block(readme, begin=BEGIN, end=END, lines=lines)
