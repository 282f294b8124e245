"""A training job's outputs in the work directory (what DVC tracks), written when it finishes:
``models/global.pt`` (state dict and parameter sha256) and ``reports/rounds.csv`` (per-round plot
data) first, ``reports/train.json`` (the summary) last. Every number in them went through the
release policy; writes are atomic, and writing them again gives the same files."""

from __future__ import annotations

import csv
import io
from typing import Any

import torch

from fedops.io import write_bytes_atomic, write_json_atomic
from fedops.paths import Paths

ROUND_COLUMNS = ("round", "test/accuracy", "test/loss", "train/loss", "clients/aggregated", "comm/bytes_up",
                 "privacy/epsilon", "time/round_s")


def rounds_csv(history: list[dict[str, Any]]) -> str:
    """The per-round plot data (a column a release policy withholds stays empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.replace("/", "_") for c in ROUND_COLUMNS])
    for row in history:
        w.writerow([row.get(c, "") for c in ROUND_COLUMNS])
    return buf.getvalue()


class _Quiet:
    def abandoned(self, extras: dict[str, Any]) -> None:
        pass

    def started(self, run, *, resumed_from: int | None) -> None:
        pass

    def round_done(self, run, record) -> None:
        pass

    def failed(self, run, *, status: str, error: BaseException) -> None:
        pass


class ModelOutputs(_Quiet):
    """Observer that writes the trained model and the round curves as soon as training ends,
    before anything (tracking, registration) can fail: nothing trained is lost to a late error."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def finished(self, run, result) -> None:
        model = run.final_model()
        buf = io.BytesIO()
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "params_sha256": result.digest}, buf)
        write_bytes_atomic(buf.getvalue(), self.paths.model)
        write_bytes_atomic(rounds_csv(result.history).encode(), self.paths.rounds_csv)


class FairnessOutputs(_Quiet):
    """Observer that writes ``reports/fairness.json`` (a DVC metric: the final fairness numbers and
    the checks) and ``reports/fairness.png`` when training ends, before tracking."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def finished(self, run, result) -> None:
        from fedops.fairness.report import fairness_report, report_figure

        report = fairness_report(run, result.history)
        run.extras["fairness"] = {"passed": report.get("passed", True),
                                  "failed": [c["message"] for c in report.get("checks", []) if not c["passed"]]}
        write_json_atomic(report, self.paths.fairness_report)
        buf = io.BytesIO()
        report_figure(report).savefig(buf, format="png", dpi=90)
        write_bytes_atomic(buf.getvalue(), self.paths.fairness_plot)  # a DVC output: written in every run


class SummaryOutput(_Quiet):
    """Observer that writes ``reports/train.json`` last (it names the tracking run and version)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.summary: dict[str, Any] | None = None

    def finished(self, run, result) -> None:
        self.summary = summary(run, result)
        write_json_atomic(self.summary, self.paths.train_summary)


def summary(run, result) -> dict[str, Any]:
    """The job's summary: released numbers only (a withheld one is None)."""
    final = result.final
    tracking = run.extras.get("mlflow") or {}
    return {
        "run_id": tracking.get("run_id"),
        "experiment_id": tracking.get("experiment_id"),
        "tracking_uri": tracking.get("tracking_uri"),
        "rounds": result.rounds,
        "stopped": result.stopped,
        "resumed_from": result.resumed_from,
        "release": run.release.mode,
        "privacy_epsilon": final.get("privacy/epsilon"),
        "final_test_accuracy": final.get("test/accuracy"),
        "final_test_loss": final.get("test/loss"),
        "comm_bytes_up_total": final.get("comm/bytes_up_total"),
        "comm_bytes_down_total": final.get("comm/bytes_down_total"),
        "model_params_sha256": result.digest,
        "registered_model": tracking.get("registered_model"),
        "registered_version": tracking.get("registered_version"),
        "promoted": tracking.get("promoted"),
        "promotion": tracking.get("promotion"),
        "registration_error": tracking.get("registration_error"),
        "num_params": run.layout.size,
        "fairness_passed": (run.extras.get("fairness") or {}).get("passed", True),
        "fairness_failed": (run.extras.get("fairness") or {}).get("failed", []),
        "simulated_time_s": final.get("time/simulated_total_s"),
        "incentive_points": {str(c): p for c, p in ((run.extras.get("incentives") or {}).get("points") or {}).items()},
        "reputation_task": None if getattr(run, "crowd", None) is None or run.crowd.ledger is None else run.crowd.task,
    }
