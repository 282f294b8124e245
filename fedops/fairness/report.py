"""The per-run fairness report (JSON, a DVC metric and an MLflow artifact) and its picture: the
distribution of client accuracies over the evaluation rounds and the group gaps per round."""

from __future__ import annotations

from typing import Any

KEYS = ("test/accuracy", "fairness/dpd", "fairness/eqodds", "fairness/eopp", "fairness/spd", "fairness/eod",
        "fairness/client_acc_mean", "fairness/client_acc_std", "fairness/client_acc_worst10",
        "fairness/client_acc_best10", "fairness/client_acc_min", "fairness/jain_index", "fairness/client_dpd",
        "fairness/client_eqodds", "fairness/client_eopp")


def fairness_report(run: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    """What the run released about fairness: the final values, the checks, the per-round series
    and the per-client accuracies (``full`` release only)."""
    from fedops.fairness.checks import evaluate_checks, final_metrics

    cfg = run.config
    if not cfg.fairness_on:
        return {"enabled": False}
    final = final_metrics(history)
    checks = [c.to_dict() for c in evaluate_checks(cfg.fairness.checks.active(), final)]
    world = run.world
    return {
        "enabled": True,
        "dataset": cfg.data.name,
        "sensitive_attribute": cfg.data.sensitive_attribute,
        "groups": list(world.group_names),
        "aggregator": cfg.server.aggregator.model_dump(mode="json"),
        "release": run.release.mode,
        "final": {k: final[k] for k in KEYS if k in final},
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
        "rounds": [{"round": h["round"], **{k: h[k] for k in KEYS if k in h}} for h in history if "test/accuracy" in h],
        "client_accuracy": [dict(a) for a in run.client_accuracy],
        "holdout_fraction": cfg.fairness.holdout,
    }


def report_figure(report: dict[str, Any]):
    """Left: the per-client held-out accuracy at each evaluation round (box plots); right: the group
    gaps (|SPD|, |EOD| on the test set) and the client-accuracy spread per round."""
    from matplotlib.figure import Figure

    if not report.get("enabled") or not report.get("rounds"):  # DVC tracks the picture: always write one
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "fairness not measured in this run (no sensitive attribute and fairness.enabled unset,\n"
                "or no evaluated round): set fairness.enabled: true for client-level fairness",
                ha="center", va="center", fontsize=8)
        ax.set_axis_off()
        return fig

    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    acc = report.get("client_accuracy") or []
    if acc:
        step = max(1, len(acc) // 15)
        shown = acc[::step] if acc[-1] in acc[::step] else [*acc[::step], acc[-1]]
        left.boxplot([a["accuracy"] for a in shown], positions=[a["round"] for a in shown],
                     widths=max(0.5, 0.6 * step))
        left.set_xlabel("round")
        left.set_ylabel("client held-out accuracy")
        left.set_title(f"global model on each client's held-out split ({len(acc[-1]['accuracy'])} clients)")
    else:
        left.text(0.5, 0.5, "per-client accuracies not released\n(release: " + report.get("release", "?") + ")",
                  ha="center", va="center")
        left.set_axis_off()
    rounds = [r["round"] for r in report["rounds"]]
    for key, label in (("fairness/spd", "|SPD| (test)"), ("fairness/eod", "|EOD| (test)"),
                       ("fairness/client_acc_std", "client accuracy std")):
        ys = [abs(r[key]) if key in r else float("nan") for r in report["rounds"]]
        if any(y == y for y in ys):
            right.plot(rounds, ys, marker=".", label=label)
    right.set_xlabel("round")
    right.set_ylabel("gap")
    right.set_title(f"group gaps by {report.get('sensitive_attribute') or '-'}")
    if right.get_legend_handles_labels()[0]:
        right.legend()
    return fig
