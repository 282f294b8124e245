"""Final accuracy and bytes on the wire per codec (configs/compression.yaml: Fashion-MNIST, 100
clients Dirichlet 0.5, 10 per round, the same rounds for every codec); writes the README table.

Runs use fedops' client and server code through the sequential executor, so the bytes are the
byte accounting of the real payloads. "Final accuracy" is the mean test accuracy of the last
``LAST`` rounds (single rounds of non-IID FedAvg move by about a point).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedops.config import load_config
from fedops.paths import Paths
from fedops_benchmarks.readme import replace_block

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- compression-table:begin -->", "<!-- compression-table:end -->"
LAST = 5
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
]
PAPER_MODEL = {"model": {"name": "mnist_cnn"}}
"""RPN's own model (the 1,199,882-parameter MNIST CNN of the RPN paper): conv features matter less
than in the small CNN, whose 3x3 kernels hold a larger share of what the model learns."""
PAPER_MODEL_RUNS: list[tuple[str, dict[str, Any]]] = [("none (float32)", {"name": "none"}), ("RPN", {"name": "rpn"})]


def run_one(codec: dict[str, Any], *, workdir: Path, rounds: int | None = None, log=print,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from fedops.simulation import simulate
    from fedops_benchmarks.w1 import prepare
    from flows.training import build_runtime

    overrides: dict[str, Any] = {"execution.max_workers": 1, "transport.codec": codec, **(extra or {})}
    if rounds:
        overrides["server.rounds"] = rounds
    cfg = load_config(ROOT / "configs" / "compression.yaml", overrides)
    prepare(cfg, workdir)
    runtime, bundle, _ = build_runtime(cfg, Paths.at(workdir))
    res = simulate(runtime, x_test=bundle.x_test, y_test=bundle.y_test, num_classes=bundle.num_classes,
                   rounds=cfg.server.rounds, evaluate_last=LAST)
    tail = [h["test/accuracy"] for h in res.history[-LAST:]]
    last = res.history[-1]
    row = {
        "codec": codec, "rounds": len(res.history), "accuracy": sum(tail) / len(tail),
        "up_mb": last["comm/bytes_up_total"] / 1e6, "down_mb": last["comm/bytes_down_total"] / 1e6,
        "seconds": res.seconds, "num_params": runtime.layout.size,
    }
    log(f"  {codec}: accuracy {row['accuracy']:.4f}, up {row['up_mb']:.2f} MB, down {row['down_mb']:.2f} MB, "
        f"{row['seconds']:.0f} s")
    return row


def main(*, workdir: Path | None = None, rounds: int | None = None, log=print) -> list[dict[str, Any]]:
    workdir = workdir or ROOT / ".cache" / "bench" / "compression"
    rows = [{"label": label, "model": "small_cnn", **run_one(codec, workdir=workdir, rounds=rounds, log=log)}
            for label, codec in RUNS]
    rows += [{"label": label, "model": "mnist_cnn",
              **run_one(codec, workdir=workdir, rounds=rounds, log=log, extra=PAPER_MODEL)}
             for label, codec in PAPER_MODEL_RUNS]
    write_readme(rows)
    return rows


def _table(rows: list[dict[str, Any]]) -> list[str]:
    ref = rows[0]
    lines = [f"| codec | final accuracy (mean of last {LAST} rounds) | vs none | upload MB | upload ratio | download MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        delta = 100 * (r["accuracy"] - ref["accuracy"])
        lines.append(f"| {r['label']} | {r['accuracy']:.4f} | {delta:+.2f} pts | {r['up_mb']:.2f} | "
                     f"{ref['up_mb'] / r['up_mb']:.2f}x | {r['down_mb']:.2f} |")
    return lines


def write_readme(rows: list[dict[str, Any]], readme: Path = ROOT / "README.md") -> None:
    lines: list[str] = []
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        lines += ["", f"**{model}** ({group[0]['num_params']:,} parameters, {group[0]['rounds']} rounds):", "",
                  *_table(group)]
    lines += ["", "Bytes are the serialised payloads (headers, indices, scales included), summed over all "
              "clients and rounds.", ""]
    replace_block(readme, begin=BEGIN, end=END, lines=lines)
