"""The fairness checks that gate a model: thresholds from ``fairness.checks`` against the final
evaluated round's released metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

CHECKS: dict[str, tuple[str, str]] = {
    "max_dpd": ("fairness/dpd", "max"),
    "max_eqodds": ("fairness/eqodds", "max"),
    "max_eopp": ("fairness/eopp", "max"),
    "max_abs_spd": ("fairness/spd", "max_abs"),
    "max_abs_eod": ("fairness/eod", "max_abs"),
    "max_client_acc_std": ("fairness/client_acc_std", "max"),
    "min_client_acc_worst10": ("fairness/client_acc_worst10", "min"),
    "min_client_acc_min": ("fairness/client_acc_min", "min"),
    "min_jain_index": ("fairness/jain_index", "min"),
}
"""Fairness check -> (the metric it reads, how it bounds it)."""
GROUP_CHECKS = frozenset({"max_dpd", "max_eqodds", "max_eopp", "max_abs_spd", "max_abs_eod"})

EXIT_FAIRNESS = 3
"""``fedops run``'s exit status when the trained model fails a fairness check."""


@dataclass(frozen=True)
class CheckResult:
    check: str
    metric: str
    bound: float
    value: float | None
    passed: bool

    @property
    def by(self) -> float | None:
        """How far past the bound the value is (None when it was not measured)."""
        if self.value is None or math.isnan(self.value):
            return None
        kind = CHECKS[self.check][1]
        v = abs(self.value) if kind == "max_abs" else self.value
        return v - self.bound if kind.startswith("max") else self.bound - v

    def describe(self) -> str:
        kind = CHECKS[self.check][1]
        if self.value is None or math.isnan(self.value):
            return f"{self.check}: {self.metric} was not measured in the final round"
        shown = f"|{self.metric}| = {abs(self.value):.4f}" if kind == "max_abs" else f"{self.metric} = {self.value:.4f}"
        op = ">" if kind.startswith("max") else "<"
        if self.passed:
            return f"{self.check}: {shown} within {self.bound:g}"
        return f"{self.check}: {shown} {op} {self.bound:g} (by {self.by:.4f})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "by": self.by, "message": self.describe()}


def evaluate_checks(checks: dict[str, float], metrics: dict[str, float]) -> list[CheckResult]:
    """Each configured check on ``metrics``; a metric missing or NaN fails its check."""
    out = []
    for name, bound in sorted(checks.items()):
        metric, kind = CHECKS[name]
        value = metrics.get(metric)
        value = None if value is None else float(value)
        if value is None or math.isnan(value):
            ok = False
        elif kind == "max":
            ok = value <= bound
        elif kind == "max_abs":
            ok = abs(value) <= bound
        else:
            ok = value >= bound
        out.append(CheckResult(name, metric, float(bound), value, ok))
    return out


def final_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last evaluated round's metrics (the rounds after it were not evaluated)."""
    for row in reversed(history):
        if "test/accuracy" in row:
            return row
    return history[-1] if history else {}
