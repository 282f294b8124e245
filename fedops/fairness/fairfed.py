"""FairFed's fairness-aware aggregation weights (Ezzeldin, Yan, He, Ferrara & Avestimehr,
"FairFed: Enabling Group Fairness in Federated Learning", AAAI 2023, Alg. 1).

Each round every participating client ``k`` evaluates the global model on its own data and
forms its group counts ``counts_k[a, y, p]``. The global metric ``F_global`` (signed EOD or SPD)
comes from the *pooled* counts ``sum_k counts_k`` (one secure sum under secure aggregation), not
from a mean of client values. Then

    Delta_k = |F_global - F_k|        (|Acc_global - Acc_k| when client k lacks a group)
    w_k    <- w_k - beta * (Delta_k - mean_k Delta_k)
    w_k    <- max(w_k, 0), renormalised

and the round's update is ``sum_k w_k u_k / sum_k w_k``.

Units. Weights are kept in sample units: they start at ``n_k`` (the paper's ``n_k / n`` times
``n``) and the step is ``beta * n * (...)``, which is the paper's update scaled by the constant
``n``; so ``beta = 0`` leaves every weight exactly ``n_k`` and the aggregate is FedAvg's bit for
bit. Departure for partial participation: the update and the renormalisation run over the
round's participants, keeping their total weight (with every client taking part this is the
paper's renormalisation to sum 1, in units of ``n``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fedops.fairness.metrics import accuracy_from_counts, signed_eod, signed_spd

METRICS: dict[str, Callable[[np.ndarray], float]] = {"eod": signed_eod, "spd": signed_spd}

Summer = Callable[[dict[int, np.ndarray], str], np.ndarray]
"""Sums one vector per client: in the clear, or through secure aggregation (``kind`` is
``"counts"`` for integers or ``"reals"``)."""


def plain_sum(vectors: dict[int, np.ndarray], kind: str) -> np.ndarray:
    return np.sum([np.asarray(vectors[c], dtype=np.float64) for c in sorted(vectors)], axis=0)


def metric_gap(local: np.ndarray, pooled: np.ndarray, *, metric: str) -> float:
    """``Delta_k``: the gap between the client's metric and the pooled one; the accuracy gap when
    the client's metric is undefined (it lacks a group, or positives of a group for EOD)."""
    f = METRICS[metric]
    fk, fg = f(local), f(pooled)
    if math.isnan(fk) or math.isnan(fg):
        return abs(accuracy_from_counts(pooled) - accuracy_from_counts(local))
    return abs(fg - fk)


def fairfed_step(weights: dict[int, float], gaps: dict[int, float], *, beta: float, scale: float,
                 mean_gap: float | None = None) -> dict[int, float]:
    """One FairFed update of the participants' weights (pure). ``scale`` is the weight unit ``n``;
    ``mean_gap`` defaults to the mean of ``gaps`` (given when it came from a secure sum)."""
    if beta < 0:
        raise ValueError(f"FairFed beta must be >= 0, got {beta}")
    ids = sorted(gaps)
    if beta == 0 or not ids:
        return {c: weights[c] for c in ids}
    mean = float(np.mean([gaps[c] for c in ids])) if mean_gap is None else float(mean_gap)
    stepped = {c: max(0.0, weights[c] - beta * scale * (gaps[c] - mean)) for c in ids}
    before, after = sum(weights[c] for c in ids), sum(stepped.values())
    if not after > 0:  # every weight clamped to zero: keep the previous ones
        return {c: weights[c] for c in ids}
    factor = before / after
    return {c: w * factor for c, w in stepped.items()}


@dataclass
class FairFedState:
    """The weights across rounds (checkpointed with the run) and the last round's facts."""

    beta: float
    metric: str
    weights: dict[int, float]
    last: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, *, beta: float, metric: str, sizes: list[int]) -> "FairFedState":
        if metric not in METRICS:
            raise ValueError(f"FairFed metric {metric!r} unknown; known: {', '.join(METRICS)}")
        return cls(beta=beta, metric=metric, weights={c: float(n) for c, n in enumerate(sizes)})

    @property
    def scale(self) -> float:
        return float(sum(self.weights.values()))

    def round_weights(self, counts: dict[int, np.ndarray], *, summer: Summer = plain_sum) -> dict[int, float]:
        """This round's weights of the clients in ``counts`` (their counts on the global model).

        What crosses to the server: the pooled counts and the sum of the gaps (through ``summer``);
        each client computes its own gap and weight from them."""
        if not counts:
            return {}
        pooled = summer({c: np.asarray(v, dtype=np.float64).reshape(-1) for c, v in counts.items()}, "counts")
        pooled = np.asarray(pooled, dtype=np.float64).reshape(np.asarray(next(iter(counts.values()))).shape)
        gaps = {c: metric_gap(np.asarray(v), pooled, metric=self.metric) for c, v in counts.items()}
        # the mean gap is what the server learns (a sum): the same number in the step and in the metrics
        mean_gap = float(np.asarray(summer({c: np.array([g]) for c, g in gaps.items()}, "reals"))[0]) / len(gaps)
        new = fairfed_step(self.weights, gaps, beta=self.beta, scale=self.scale, mean_gap=mean_gap)
        self.weights.update(new)
        self.last = {"fairfed/global_metric": METRICS[self.metric](pooled),
                     "fairfed/global_accuracy": accuracy_from_counts(pooled), "fairfed/mean_gap": mean_gap}
        return new

    def state_dict(self) -> dict:
        return {"weights": {int(c): float(w) for c, w in self.weights.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.weights = {int(c): float(w) for c, w in state["weights"].items()}
