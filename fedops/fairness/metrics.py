"""Fairness metrics, as pure functions of labels, predictions and groups.

Client-level fairness (Li et al., "Fair Resource Allocation in Federated Learning", ICLR 2020):
the spread of the global model's accuracy over the clients' held-out splits: standard
deviation, the mean of the worst and best 10% (at least one client), the minimum, and Jain's
index ``(sum a)^2 / (K sum a^2)`` (1 = equal accuracy everywhere).

Group fairness over a binary sensitive attribute (group 0 = not privileged, 1 = privileged) and a
binary label (1 = the positive class), as FairFed (Ezzeldin et al., AAAI 2023, Sec. 3) signs them:

* ``SPD = P(yhat = 1 | A = 0) - P(yhat = 1 | A = 1)`` (statistical parity difference);
* ``EOD = P(yhat = 1 | A = 0, Y = 1) - P(yhat = 1 | A = 1, Y = 1)`` (equal opportunity difference).

Both come from per-group counts (:func:`group_counts`), so they can be pooled across clients by
adding counts (a secure sum) instead of averaging client values. The unsigned versions, and
equalized odds, come from fairlearn (:func:`group_fairness`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def tail_mean(values: np.ndarray, *, fraction: float, lowest: bool) -> float:
    """Mean of the lowest (or highest) ``ceil(fraction * K)`` values (at least one)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        raise ValueError("no client accuracies to summarise")
    k = max(1, math.ceil(fraction * v.size - 1e-9))
    return float((v[:k] if lowest else v[-k:]).mean())


def jain_index(values: np.ndarray) -> float:
    """Jain's fairness index ``(sum x)^2 / (K sum x^2)`` (1 when all equal; 1/K when one holds all)."""
    v = np.asarray(values, dtype=np.float64)
    denom = v.size * float((v * v).sum())
    return float(v.sum() ** 2 / denom) if denom > 0 else 1.0


def client_level(accuracies: np.ndarray) -> dict[str, float]:
    """``fairness/client_acc_*`` and ``fairness/jain_index`` of the per-client accuracies."""
    a = np.asarray(accuracies, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected a non-empty vector of client accuracies, got shape {a.shape}")
    return {
        "fairness/client_acc_mean": float(a.mean()),
        "fairness/client_acc_std": float(a.std()),
        "fairness/client_acc_worst10": tail_mean(a, fraction=0.1, lowest=True),
        "fairness/client_acc_best10": tail_mean(a, fraction=0.1, lowest=False),
        "fairness/client_acc_min": float(a.min()),
        "fairness/jain_index": jain_index(a),
    }


def group_counts(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, num_groups: int = 2,
                 num_classes: int = 2) -> np.ndarray:
    """``counts[a, y, p]``: how many rows of group ``a`` with label ``y`` were predicted ``p``."""
    y_true, y_pred, groups = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (y_true, y_pred, groups))
    if not (y_true.size == y_pred.size == groups.size):
        raise ValueError(f"labels, predictions and groups differ in length: {y_true.size}, {y_pred.size}, {groups.size}")
    flat = (groups * num_classes + y_true) * num_classes + y_pred
    return np.bincount(flat, minlength=num_groups * num_classes * num_classes).reshape(
        num_groups, num_classes, num_classes)


def _rate(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def signed_spd(counts: np.ndarray) -> float:
    """FairFed's SPD from binary ``counts[a, y, p]`` (NaN when a group is absent)."""
    c = np.asarray(counts, dtype=np.float64)
    pos = [_rate(c[a, :, 1].sum(), c[a].sum()) for a in (0, 1)]
    return float(pos[0] - pos[1])


def signed_eod(counts: np.ndarray) -> float:
    """FairFed's EOD (true-positive-rate gap) from binary ``counts[a, y, p]`` (NaN when a group has no positives)."""
    c = np.asarray(counts, dtype=np.float64)
    tpr = [_rate(c[a, 1, 1], c[a, 1].sum()) for a in (0, 1)]
    return float(tpr[0] - tpr[1])


def accuracy_from_counts(counts: np.ndarray) -> float:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return float(np.trace(c.sum(axis=0)) / total) if total > 0 else math.nan


def group_fairness(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *,
                   control: np.ndarray | None = None, prefix: str = "fairness/") -> dict[str, float]:
    """fairlearn's demographic-parity difference, equalized-odds difference and equal-opportunity
    difference (the largest true-positive-rate gap between groups) over the whole set; with
    ``control`` (each row's client) the same differences within every control group
    (fairlearn's ``MetricFrame(..., control_features=...)``) and their largest value. For binary
    groups over the whole set also the signed SPD and EOD."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    if control is None:
        tpr = MetricFrame(metrics=true_positive_rate, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
        out = {
            f"{prefix}dpd": float(demographic_parity_difference(y_true, y_pred, sensitive_features=groups)),
            f"{prefix}eqodds": float(equalized_odds_difference(y_true, y_pred, sensitive_features=groups)),
            f"{prefix}eopp": float(tpr.difference()),
        }
        if set(np.unique(groups).tolist()) <= {0, 1}:
            counts = group_counts(y_true, y_pred, groups)
            out[f"{prefix}spd"] = float(signed_spd(counts))
            out[f"{prefix}eod"] = float(signed_eod(counts))
        return out
    frame = MetricFrame(metrics={"sel": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate},
                        y_true=y_true, y_pred=y_pred, sensitive_features=groups, control_features=np.asarray(control))
    diff = frame.difference()  # one row per control group (client), one column per metric

    def worst(values) -> float:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        return float(v.max()) if v.size else math.nan

    return {
        f"{prefix}dpd": worst(diff["sel"]),
        f"{prefix}eqodds": worst(np.fmax(diff["tpr"].to_numpy(dtype=np.float64), diff["fpr"].to_numpy(dtype=np.float64))),
        f"{prefix}eopp": worst(diff["tpr"]),
    }
