"""Byzantine-robust aggregation rules over the stacked client updates ``[k, d]``.

Registered keys: ``median``, ``trimmed_mean``, ``krum``, ``multi_krum``, ``bulyan``,
``geometric_median``, ``norm_bounded`` and ``fltrust``.

Common conventions
------------------
* ``n`` (= ``k``) is the number of updates in the round, ``f`` the number of Byzantine clients a
  rule is configured (or able) to tolerate.  Each rule states its assumption on ``f`` and has
  ``check_cohort(n)``, which raises ``ValueError`` naming ``n`` and ``f`` when the configured
  clients per round cannot satisfy it (rules without a constraint just return).
* Arithmetic is done in float64 on the updates' device; the result has the updates' dtype.
* Results do not depend on the order of the clients.  Rules that sum over clients or pick among
  them first put the rows in a canonical order (lexicographic order of the update vectors, then
  the weights; see :func:`canonical_order`), so every later step, including tie-breaking, is a
  function of the multiset of (update, weight) pairs only.  Where a rule picks among tied
  candidates, the tie goes to the lexicographically smallest update vector.
* Metrics are index-free (no client positions), so they are order invariant as well.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

from fedops.lazy import torch  # torch on first use: configs load without it
from pydantic import Field

from fedops.aggregate.base import AGGREGATORS, Aggregator, check_stack

__all__ = [
    "Bulyan",
    "CoordinateMedian",
    "FLTrust",
    "GeometricMedian",
    "Krum",
    "MultiKrum",
    "NormBounded",
    "TrimmedMean",
    "canonical_order",
    "krum_scores",
    "pairwise_sq_distances",
]

# --------------------------------------------------------------------------------------------- #
# helpers


def canonical_order(updates: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Permutation putting the rows in lexicographic order (then by weight).

    Sorts by the first coordinate and only compares whole rows within runs of equal first
    coordinates, so the usual case costs one sort of ``k`` scalars.  Rows equal in every coordinate
    and in weight are interchangeable, so any rule that processes rows in this order gives the same
    result for every permutation of its input.
    """
    k = updates.shape[0]
    if k <= 1:
        return torch.arange(k, device=updates.device)
    first = updates[:, 0]
    order = torch.sort(first, stable=True).indices
    vals = first[order]
    same = vals[1:] == vals[:-1]
    if not bool(same.any()):
        return order

    def cmp(i: int, j: int) -> int:
        ne = updates[i] != updates[j]
        if bool(ne.any()):
            c = int(ne.to(torch.int8).argmax())
            return -1 if bool(updates[i, c] < updates[j, c]) else 1
        if weights is None:
            return 0
        wi, wj = float(weights[i]), float(weights[j])
        return (wi > wj) - (wi < wj)

    idx = order.tolist()
    flags = same.tolist()
    out: list[int] = []
    start = 0
    for pos in range(1, k + 1):
        if pos == k or not flags[pos - 1]:
            run = idx[start:pos]
            if len(run) > 1:
                run = sorted(run, key=functools.cmp_to_key(cmp))
            out.extend(run)
            start = pos
    return torch.tensor(out, dtype=torch.long, device=updates.device)


def _canonical(updates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 copies of (updates, weights) in canonical row order."""
    perm = canonical_order(updates, weights)
    return updates.to(torch.float64)[perm], weights.to(device=updates.device, dtype=torch.float64)[perm]


def work_dtype(updates: torch.Tensor) -> torch.dtype:
    """The dtype the blocked products over ``updates`` ``[k, d]`` run in: float32 for a float32
    stack at least one block (``fedops.aggregate.fedavg.BLOCK`` columns) wide, where the product
    dominates and float32 is ~3x faster; float64 otherwise. Sums across blocks are float64."""
    from fedops.aggregate.fedavg import BLOCK

    return torch.float32 if updates.dtype == torch.float32 and updates.shape[-1] >= BLOCK else torch.float64


def pairwise_sq_distances(updates: torch.Tensor) -> torch.Tensor:
    """``[k, k]`` matrix of squared L2 distances, as float64: symmetric, zero diagonal, >= 0.

    Uses the Gram trick ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product, fast for large ``d``) on the
    updates centred at a robust centre ``c``: the mean of the half of the updates with the
    smallest norms.  Distances do not change under the shift, but the cancellation error does: it
    scales with ``|a - c|^2 + |b - c|^2``, and a robust centre keeps that of the order of the honest
    spread even when the updates share a large common component or Byzantine rows are huge (the
    plain Gram trick, or centring at the mean of all rows, would lose the honest cluster's
    distances to rounding). The arithmetic runs over blocks of columns, so no float64 copy of the
    whole stack is made, in :data:`fedops.aggregate.fedavg.PARTS` parts side by side. Float32
    stacks of at least :func:`work_dtype`'s width (what clients send for any real model) are
    centred and multiplied in float32, each block's ``[k, k]`` product added up in float64: after
    centring, the relative error of a distance is of the order of
    float32's epsilon times the square root of the block width (~1e-5), well below the spread
    between clients that Krum and the anomaly scores rank, at a third of the float64 product's
    time. Narrower stacks and other dtypes are computed in float64 (exact on small integers).
    """
    from fedops.aggregate.fedavg import BLOCK, in_parts

    k, d = updates.shape
    work = work_dtype(updates)
    norms = torch.linalg.vector_norm(updates, dim=1)  # only to pick the rows of the centre
    low = torch.sort(torch.nan_to_num(norms, nan=math.inf), stable=True).indices[: (k + 1) // 2]

    def part(starts: list[int]) -> torch.Tensor:
        gram = torch.zeros(k, k, dtype=torch.float64, device=updates.device)
        for lo in starts:
            block = updates[:, lo:lo + BLOCK].to(work)
            block = block - block[low].to(torch.float64).mean(dim=0).to(work)
            gram += (block @ block.T).to(torch.float64)
        return gram

    gram = torch.zeros(k, k, dtype=torch.float64, device=updates.device)
    for partial in in_parts(d, part, device=updates.device):  # added in part order
        gram += partial
    sq = gram.diagonal().clone()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    dist = ((dist + dist.T) / 2).clamp_min_(0.0)
    dist.fill_diagonal_(0.0)
    return dist


def _scores_from_distances(dist: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Sum of each row's ``neighbours`` smallest off-diagonal entries."""
    k = dist.shape[0]
    d = dist.clone()
    d.fill_diagonal_(math.inf)
    if neighbours <= 0:
        return torch.zeros(k, dtype=dist.dtype, device=dist.device)
    return d.sort(dim=1).values[:, :neighbours].sum(dim=1)


def krum_scores(updates: torch.Tensor, num_byzantine: int) -> torch.Tensor:
    """Krum scores ``[k]`` (Blanchard et al. 2017), row ``i`` belonging to client ``i``.

    score(i) = sum of the squared distances from ``u_i`` to its ``k - f - 2`` nearest other
    updates (float64).  Low = central, high = outlying; usable as per-client anomaly scores.
    Well defined when ``k - f - 2 >= 1``; Krum's resilience guarantee needs the stronger
    ``k > 2f + 2``, which :class:`Krum` enforces.
    """
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty [k, d] stack, got shape {tuple(updates.shape)}")
    n, f = updates.shape[0], int(num_byzantine)
    if f < 0:
        raise ValueError(f"num_byzantine must be >= 0, got f={f}")
    neighbours = n - f - 2
    if neighbours < 1:
        raise ValueError(
            f"krum scores need n - f - 2 >= 1 neighbours per update, got n={n} updates and f={f}"
        )
    return _scores_from_distances(pairwise_sq_distances(updates), neighbours)


def _sorted_median(sorted_vals: torch.Tensor) -> torch.Tensor:
    """Median along dim 0 of values already sorted along dim 0; even count: mean of the middle two."""
    k = sorted_vals.shape[0]
    if k % 2:
        return sorted_vals[k // 2]
    return (sorted_vals[k // 2 - 1] + sorted_vals[k // 2]) / 2


class _RobustAggregator(Aggregator):
    """Shared defaults: needs individual updates; no constraint on the cohort size."""

    needs_individual_updates: bool = True

    def check_cohort(self, n: int) -> None:
        """Raise ``ValueError`` naming ``n`` and ``f`` if ``n`` clients per round break the assumption."""
        if n < 1:
            raise ValueError(f"aggregator {self.name!r} needs at least one client per round, got n={n}")


# --------------------------------------------------------------------------------------------- #
# coordinate-wise rules


@AGGREGATORS.register("median")
class CoordinateMedian(_RobustAggregator):
    """Coordinate-wise median (Yin et al. 2018), unweighted.

    For an even number of updates the median of a coordinate is the mean of the two middle values
    (``numpy.median`` / ``torch.quantile(q=0.5)`` semantics, not ``torch.median``, which returns
    the lower one).  Byzantine assumption: ``f < n / 2`` (breakdown point 1/2); with fewer honest
    than Byzantine values a coordinate can be moved arbitrarily.  Client weights are validated
    and ignored.
    """

    name: Literal["median"] = "median"

    def aggregate(self, updates, *, weights):
        check_stack(updates, weights)
        s = updates.to(torch.float64).sort(dim=0).values
        return _sorted_median(s).to(updates.dtype), {}


@AGGREGATORS.register("trimmed_mean")
class TrimmedMean(_RobustAggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018), unweighted.

    Per coordinate, drops the ``t = floor(beta * n)`` largest and ``t`` smallest values and
    averages the remaining ``n - 2t`` (``floor`` with a 1e-9 allowance so that e.g.
    ``0.29 * 100`` trims 29, not 28).  Byzantine assumption: ``f <= t = floor(beta * n)``.
    Client weights are validated and ignored.
    """

    name: Literal["trimmed_mean"] = "trimmed_mean"
    beta: float = Field(ge=0, lt=0.5)

    def trimmed_per_side(self, n: int) -> int:
        return math.floor(self.beta * n + 1e-9)

    def check_cohort(self, n: int) -> None:
        super().check_cohort(n)
        t = self.trimmed_per_side(n)
        if n - 2 * t < 1:
            raise ValueError(
                f"trimmed_mean(beta={self.beta}) trims t={t} per side of n={n} updates, so nothing remains"
            )
        if self.beta > 0 and t == 0:
            raise ValueError(
                f"trimmed_mean(beta={self.beta}) trims floor(beta * n) = 0 per side with n={n} clients per "
                f"round, so it tolerates f=0 Byzantine clients; raise beta to at least {1 / n:.3g} or the "
                "clients per round (or use beta = 0 for a plain mean)"
            )

    def aggregate(self, updates, *, weights):
        check_stack(updates, weights)
        n = updates.shape[0]
        t = self.trimmed_per_side(n)
        if n - 2 * t < 1:
            raise ValueError(
                f"trimmed_mean(beta={self.beta}) trims t={t} per side of n={n} updates, so nothing remains"
            )
        s = updates.to(torch.float64).sort(dim=0).values
        out = s[t : n - t].mean(dim=0)
        return out.to(updates.dtype), {"trimmed_per_side": float(t), "kept": float(n - 2 * t)}


# --------------------------------------------------------------------------------------------- #
# Krum family


class _KrumBase(_RobustAggregator):
    num_byzantine: int = Field(ge=0)

    def _check_n(self, n: int) -> None:
        f = self.num_byzantine
        if n <= 2 * f + 2:
            raise ValueError(
                f"{self.name} needs n > 2f + 2 updates per round, got n={n} with f={f} "
                f"(at least {2 * f + 3} clients per round)"
            )

    def check_cohort(self, n: int) -> None:
        super().check_cohort(n)
        self._check_n(n)


@AGGREGATORS.register("krum")
class Krum(_KrumBase):
    """Krum (Blanchard et al. 2017): the update with the lowest Krum score (see :func:`krum_scores`).

    Byzantine assumption: ``n > 2f + 2``, refused otherwise.  Among tied lowest scores the
    lexicographically smallest update vector is returned.  Client weights are validated and ignored.
    Metrics: ``selected_score``, ``median_score``.
    """

    name: Literal["krum"] = "krum"

    def aggregate(self, updates, *, weights):
        check_stack(updates, weights)
        self._check_n(updates.shape[0])
        u, _ = _canonical(updates, weights)
        scores = krum_scores(u, self.num_byzantine)
        i = int(torch.argmin(scores))  # first minimum = lexicographically smallest among ties
        metrics = {
            "selected_score": float(scores[i]),
            "median_score": float(_sorted_median(scores.sort().values)),
        }
        return u[i].to(updates.dtype), metrics


@AGGREGATORS.register("multi_krum")
class MultiKrum(_KrumBase):
    """Multi-Krum (Blanchard et al. 2017): the unweighted mean of the ``m`` lowest-score updates.

    ``m`` defaults to ``n - f``.  Byzantine assumption: ``n > 2f + 2`` (refused otherwise) and
    ``1 <= m <= n``.  Ties in score at the cut-off go to the lexicographically smaller update
    vectors.  Client weights are validated and ignored.
    Metrics: ``selected`` (m), ``max_selected_score``, ``mean_selected_score``.
    """

    name: Literal["multi_krum"] = "multi_krum"
    m: int | None = Field(default=None, ge=1)

    def selected_count(self, n: int) -> int:
        m = n - self.num_byzantine if self.m is None else self.m
        if m > n:
            raise ValueError(f"multi_krum(m={m}) averages more updates than the round has (n={n}, f={self.num_byzantine})")
        return m

    def check_cohort(self, n: int) -> None:
        super().check_cohort(n)
        self.selected_count(n)

    def aggregate(self, updates, *, weights):
        check_stack(updates, weights)
        n = updates.shape[0]
        self._check_n(n)
        m = self.selected_count(n)
        u, _ = _canonical(updates, weights)
        scores = krum_scores(u, self.num_byzantine)
        sel = torch.sort(scores, stable=True).indices[:m]
        out = u[sel].mean(dim=0)
        metrics = {
            "selected": float(m),
            "max_selected_score": float(scores[sel].max()),
            "mean_selected_score": float(scores[sel].mean()),
        }
        return out.to(updates.dtype), metrics


@AGGREGATORS.register("bulyan")
class Bulyan(_RobustAggregator):
    """Bulyan (El Mhamdi et al. 2018) over Krum.

    1. Selection: ``theta = n - 2f`` updates by iterated Krum.  Each step computes Krum scores
       over the updates still remaining (``r`` of them, with ``max(r - f - 2, 1)`` neighbours,
       the clamp keeping the last steps defined), moves the lowest-score one (ties: the
       lexicographically smallest vector) into the selection set and removes it.
    2. Aggregation, per coordinate: the ``beta = theta - 2f`` selected values closest to the
       selection's coordinate-wise median (mean of the two middle values for even ``theta``) are
       averaged; a tie in distance goes to the smaller value.

    Byzantine assumption: ``n >= 4f + 3``, refused otherwise.  Client weights are validated and
    ignored.  Metrics: ``selection_size`` (theta), ``kept_per_coordinate`` (beta),
    ``max_selection_score`` (the highest Krum score at the moment of selection).
    """

    name: Literal["bulyan"] = "bulyan"
    num_byzantine: int = Field(ge=0)

    def _check_n(self, n: int) -> None:
        f = self.num_byzantine
        if n < 4 * f + 3:
            raise ValueError(f"bulyan needs n >= 4f + 3 updates per round, got n={n} with f={f} (at least {4 * f + 3})")

    def check_cohort(self, n: int) -> None:
        super().check_cohort(n)
        self._check_n(n)

    def aggregate(self, updates, *, weights):
        check_stack(updates, weights)
        n, f = updates.shape[0], self.num_byzantine
        self._check_n(n)
        theta, beta = n - 2 * f, n - 4 * f
        u, _ = _canonical(updates, weights)
        dist = pairwise_sq_distances(u)
        remaining = list(range(n))  # kept in canonical order, so argmin's first hit breaks ties
        selected: list[int] = []
        max_score = 0.0
        for _ in range(theta):
            r = len(remaining)
            if r == 1:
                j = 0
            else:
                idx = torch.tensor(remaining, device=u.device)
                scores = _scores_from_distances(dist[idx][:, idx], min(max(r - f - 2, 1), r - 1))
                j = int(torch.argmin(scores))
                max_score = max(max_score, float(scores[j]))
            selected.append(remaining.pop(j))
        s = u[torch.tensor(selected, device=u.device)].sort(dim=0).values
        med = _sorted_median(s)
        closest = (s - med).abs().argsort(dim=0, stable=True)[:beta]  # stable: ties -> smaller value
        out = s.gather(0, closest).mean(dim=0)
        metrics = {
            "selection_size": float(theta),
            "kept_per_coordinate": float(beta),
            "max_selection_score": max_score,
        }
        return out.to(updates.dtype), metrics


# --------------------------------------------------------------------------------------------- #
# geometric median, norm bound, FLTrust


@AGGREGATORS.register("geometric_median")
class GeometricMedian(_RobustAggregator):
    """Weighted geometric median by the smoothed Weiszfeld algorithm (RFA, Pillutla et al. 2022).

    Minimises ``g(z) = sum_i a_i ||z - u_i||`` with ``a_i = w_i / sum_j w_j`` (RFA weights
    clients by their sample counts).  Starting from the weighted mean, each iteration sets
    ``b_i = a_i / max(eps, ||z - u_i||)`` and ``z <- sum_i b_i u_i / sum_i b_i`` (``eps`` is the
    smoothing nu), stopping when ``|g_prev - g| <= tol * g`` or after ``max_iter`` iterations.
    Byzantine assumption: breakdown point 1/2, i.e. Byzantine clients hold less than half of the
    total weight (no constraint on ``n``).
    Metrics: ``iterations``, ``objective`` (g at the result), ``converged`` (1.0 / 0.0).
    """

    name: Literal["geometric_median"] = "geometric_median"
    max_iter: int = Field(100, ge=1)
    eps: float = Field(1e-6, gt=0)
    tol: float = Field(1e-7, ge=0)

    def aggregate(self, updates, *, weights):
        check_stack(updates, weights)
        u, w = _canonical(updates, weights)
        a = w / w.sum()
        z = a @ u
        dist = (u - z).norm(dim=1)
        obj = float(a @ dist)
        iterations, converged = 0, obj == 0.0
        while not converged and iterations < self.max_iter:
            b = a / dist.clamp_min(self.eps)
            z = (b @ u) / b.sum()
            dist = (u - z).norm(dim=1)
            new_obj = float(a @ dist)
            iterations += 1
            converged = abs(obj - new_obj) <= self.tol * new_obj
            obj = new_obj
        metrics = {"iterations": float(iterations), "objective": obj, "converged": float(converged)}
        return z.to(updates.dtype), metrics


@AGGREGATORS.register("norm_bounded")
class NormBounded(Aggregator):
    """Norm-bounded mean (Sun et al. 2019, "Can you really backdoor federated learning?").

    Each update is clipped to L2 norm ``max_norm`` (``u * min(1, tau / ||u||)``), then the
    weighted mean is taken.  Clipping is per client, so it could run before a (secure) sum:
    ``needs_individual_updates`` is False.  Byzantine assumption: none on ``f``; it bounds the
    influence of each client to ``w_i tau / sum_j w_j`` rather than removing attackers.
    Metrics: ``clipped_fraction``, ``max_update_norm`` (before clipping).
    """

    name: Literal["norm_bounded"] = "norm_bounded"
    needs_individual_updates: bool = False
    max_norm: float = Field(gt=0)

    def check_cohort(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"aggregator {self.name!r} needs at least one client per round, got n={n}")

    def aggregate(self, updates, *, weights):
        check_stack(updates, weights)
        u, w = _canonical(updates, weights)
        norms = u.norm(dim=1)
        scale = (self.max_norm / norms).clamp(max=1.0)  # norm 0 -> inf -> 1
        out = (w @ (u * scale[:, None])) / w.sum()
        metrics = {
            "clipped_fraction": float((norms > self.max_norm).to(torch.float64).mean()),
            "max_update_norm": float(norms.max()),
        }
        return out.to(updates.dtype), metrics


@AGGREGATORS.register("fltrust")
class FLTrust(_RobustAggregator):
    """FLTrust (Cao et al., NDSS 2021): trust-weighted, magnitude-normalised mean.

    The server computes a root update ``g0`` on a small clean root dataset each round (its own
    local training, with the clients' hyperparameters, from the global model) and passes it as
    ``reference``; ``root_size`` is that data set's size (the paper's default is 100 examples) and
    ``root_epochs`` the passes the server makes over it (``None``: the clients' ``epochs``). The
    paper gives the server the same number of local SGD iterations as a client; every client update
    is rescaled to the root update's norm, so a root update from far fewer steps than the clients
    take shrinks every round's step. With 100 examples and clients holding ~1,000, about ten
    epochs match a client's one.  ``trust_i = ReLU(cos(u_i, g0))`` (0 for a zero update), each ``u_i`` is
    rescaled to norm ``||g0||``, and the result is ``sum_i trust_i u_i' / sum_i trust_i``; if every
    trust is 0 the result is zeros.  Client weights are validated and ignored (as in the paper).
    Byzantine assumption: the root dataset (hence ``g0``) is clean; no bound on ``f``.
    Metrics: ``mean_trust``, ``zero_trust_clients``, ``reference_norm``, ``all_zero_trust``.
    """

    name: Literal["fltrust"] = "fltrust"
    needs_reference: bool = True
    root_size: int = Field(100, ge=1)
    root_epochs: int | None = Field(None, ge=1)

    def aggregate(self, updates, *, weights, reference: torch.Tensor | None = None):
        check_stack(updates, weights)
        if reference is None:
            raise ValueError(
                "fltrust needs the server's root update: call aggregate(updates, weights=..., reference=g0)"
            )
        d = updates.shape[1]
        if reference.shape != (d,):
            raise ValueError(f"reference must have shape ({d},) like one update, got {tuple(reference.shape)}")
        u, _ = _canonical(updates, weights)
        g0 = reference.to(device=u.device, dtype=torch.float64)
        g0_norm = g0.norm()
        norms = u.norm(dim=1)
        denom = norms * g0_norm
        safe = denom > 0
        cos = torch.where(safe, (u @ g0) / torch.where(safe, denom, 1.0), 0.0)
        trust = cos.clamp_min(0.0)
        total = trust.sum()
        metrics = {
            "mean_trust": float(trust.mean()),
            "zero_trust_clients": float((trust == 0).sum()),
            "reference_norm": float(g0_norm),
            "all_zero_trust": float(total == 0),
        }
        if float(total) == 0.0:
            return torch.zeros(d, dtype=updates.dtype, device=updates.device), metrics
        scale = torch.where(norms > 0, g0_norm / torch.where(norms > 0, norms, 1.0), 0.0)
        out = (trust * scale) @ u / total
        return out.to(updates.dtype), metrics
