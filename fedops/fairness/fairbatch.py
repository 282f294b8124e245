"""FairBatch's reweighting for equal opportunity or equalized odds (Roh, Lee, Whang & Suh,
"FairBatch: Batch Selection for Model Fairness", ICLR 2021), as local debiasing
(``client.reweighing: fairbatch`` / ``fairbatch_global``).

FairBatch treats the share of each group within each label as a variable of an outer problem:
for binary groups ``a`` and labels ``y``, ``lam[y]`` is the share of group 1 in label ``y``'s
weight. FairBatch steps once per epoch on the current model; here it steps once per round, on the
global model before local training (however many local epochs follow): the client measures that
model's mean loss ``L[a, y]`` on its rows; for equalized odds the label whose loss gap ``|L[1, y] - L[0, y]|`` is larger gets its
``lam`` moved by ``alpha`` towards the group with the higher loss, clamped to ``[0, 1]``
(Alg. 1 of the paper); for equal opportunity only the positive label's ``lam`` moves. Rather than sampling batches in those proportions, every
row of ``(a, y)`` gets the weight

    w[a, y] = lam_a[y] * n_y / n[a, y]          (lam_1 = lam, lam_0 = 1 - lam)

so that label ``y`` keeps its total weight ``n_y`` and group ``a`` takes ``lam_a[y]`` of it; the
weights average to 1. ``lam`` starts at the client's natural share ``n[1, y] / n_y`` (weights all 1)
and lives across rounds on the client (in a simulation, in the run's state, checkpointed with it):
the global model each round plays FairBatch's current model. A label with rows of only one group
keeps weight 1 for them and its ``lam`` never moves. Pure functions, numpy, float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _counts(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != 2 or (c < 0).any():
        raise ValueError(f"FairBatch needs counts[a, y] >= 0 for two groups, got shape {c.shape}")
    return c


def natural_lambda(counts) -> np.ndarray:
    """The starting ``lam[y] = n[1, y] / n_y`` (0.5 for a label with no rows)."""
    c = _counts(counts)
    ny = c.sum(0)
    return np.where(ny > 0, c[1] / np.where(ny > 0, ny, 1.0), 0.5)


TARGETS = ("eqopp", "eqodds")


def fairbatch_step(lam, *, loss_sums, counts, alpha: float, target: str = "eqodds") -> np.ndarray:
    """One FairBatch update of ``lam`` from the current model's loss sums ``loss_sums[a, y]`` over
    the rows counted in ``counts[a, y]``: for equalized odds (``eqodds``) the label with the larger
    gap moves; for equal opportunity (``eqopp``, the true-positive-rate gap that FairFed's EOD
    measures) only the positive label (the last) moves."""
    if not 0 < alpha <= 1:
        raise ValueError(f"FairBatch's alpha must be in (0, 1], got {alpha}")
    if target not in TARGETS:
        raise ValueError(f"FairBatch target {target!r} unknown; known: {', '.join(TARGETS)}")
    c = _counts(counts)
    s = np.asarray(loss_sums, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64).copy()
    if s.shape != c.shape or lam.shape != (c.shape[1],):
        raise ValueError(f"FairBatch: loss sums {s.shape}, counts {c.shape} and lambda {lam.shape} do not match")
    if not np.isfinite(s).all():
        raise ValueError(f"FairBatch: the global model's loss sums per (group, label) are not finite ({s.tolist()})")
    both = (c > 0).all(0)  # labels with rows of both groups
    if target == "eqopp":
        both[:-1] = False
    if not both.any():
        return lam
    mean = s / np.where(c > 0, c, 1.0)
    gap = np.where(both, mean[1] - mean[0], 0.0)
    y = int(np.argmax(np.abs(gap)))
    if gap[y] != 0:
        lam[y] = float(np.clip(lam[y] + alpha * np.sign(gap[y]), 0.0, 1.0))
    return lam


def fairbatch_table(lam, counts) -> np.ndarray:
    """``w[a, y]`` (see the module docstring); 0 for a cell with no rows."""
    c = _counts(counts)
    lam = np.asarray(lam, dtype=np.float64)
    share = np.stack([1.0 - lam, lam])
    both = (c > 0).all(0)
    w = np.where(c > 0, share * c.sum(0)[None, :] / np.where(c > 0, c, 1.0), 0.0)
    return np.where(both[None, :], w, (c > 0).astype(np.float64))


LOSS_SCALE = 1000.0
"""Loss sums cross as integers ``rint(sum * LOSS_SCALE)``, split into base-``DIGIT`` digits so
that every number is a count a secure sum carries exactly: their sum is exact, in the clear and
through secure aggregation alike."""
DIGIT = 2 ** 20


@dataclass
class GlobalFairBatch:
    """``client.reweighing: fairbatch_global``: FairBatch on the population. The group shares
    ``lam`` live in the run (the server's state); every round each client adds its loss sums per
    (group, label) at the global model to a sum (a secure sum under secure aggregation), and the
    pooled mean losses move ``lam`` one step. The weight table from ``lam`` and the population's
    counts (pooled once) goes to every client with the next round's model, so a client whose rows
    are all of one group is reweighed too. One round of lag: round ``t`` trains with the shares
    from the losses at round ``t - 1``'s global model."""

    counts: np.ndarray
    alpha: float
    target: str
    lam: np.ndarray = field(init=False)
    last: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = _counts(self.counts)
        self.lam = natural_lambda(self.counts)

    def table(self) -> np.ndarray:
        return fairbatch_table(self.lam, self.counts)

    def update(self, reports: dict[int, np.ndarray], *, summer) -> None:
        """One step from the clients' reports ``[loss_sums[a, y], counts[a, y]]`` (``summer`` sums
        one vector per client: only the sum crosses). The mean losses are over the rows of this
        round's clients."""
        if not reports:
            return
        ints = {}
        for c, v in reports.items():
            v = np.asarray(v, dtype=np.float64)
            if v.shape != (2, *self.counts.shape):
                raise ValueError(f"FairBatch: client {c} reported shape {v.shape}, expected {(2, *self.counts.shape)}")
            if not np.isfinite(v).all() or (v < 0).any():
                raise ValueError(f"FairBatch: client {c} reported non-finite or negative loss sums or counts")
            loss = np.rint(v[0] * LOSS_SCALE).reshape(-1)
            ints[c] = np.concatenate([np.mod(loss, DIGIT), np.floor_divide(loss, DIGIT), v[1].reshape(-1)])
        pooled = np.asarray(summer(ints, "counts"), dtype=np.float64)
        size = self.counts.size
        loss_sum = pooled[:size] + DIGIT * pooled[size:2 * size]
        sums, counts = loss_sum.reshape(self.counts.shape) / LOSS_SCALE, pooled[2 * size:].reshape(self.counts.shape)
        self.lam = fairbatch_step(self.lam, loss_sums=sums, counts=counts, alpha=self.alpha, target=self.target)
        self.last = {f"fairbatch/lambda_y{y}": float(v) for y, v in enumerate(self.lam)}

    def state_dict(self) -> dict:
        return {"lam": [float(v) for v in self.lam]}

    def load_state_dict(self, state: dict) -> None:
        self.lam = np.asarray(state["lam"], dtype=np.float64)
