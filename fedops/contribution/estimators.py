"""Contribution estimators over a coalition game ``v`` (see the package docstring).

- ``loo``: leave-one-out, ``phi_i = v(N) - v(N \\ {i})`` (n + 1 evaluations).
- ``exact_shapley``: ``phi_i = sum_{S ⊆ N\\{i}} |S|! (n-|S|-1)! / n! (v(S ∪ {i}) - v(S))``, every
  coalition (2^n evaluations); refused above ``max_players``.
- ``tmc_shapley``: Truncated Monte Carlo Shapley (Ghorbani & Zou, "Data Shapley", ICML 2019):
  random permutations; within a permutation, once ``|v(N) - v(S)|`` falls below
  ``tolerance * |v(N)|`` the remaining marginals are taken as 0 without evaluating.
- ``gtg_shapley``: GTG-Shapley (Liu, Xu, Yu et al., "GTG-Shapley: Efficient and Accurate
  Participant Contribution Evaluation in Federated Learning", ACM TIST 2022): between-round
  truncation (a round whose ``|v(N) - v(∅)|`` is below ``eps_between`` gives every client 0),
  within-round truncation as TMC's with an absolute ``eps_within``, and guided permutations
  (permutation k starts with player k mod n, so every player is early in some permutation); stops
  when a full cycle of n permutations changes the estimates by less than ``convergence`` (mean
  relative change) or after ``max_permutations``.

Player ids are any distinct integers (client ids), not positions. Every estimator sees ``v``
through :class:`Utility`, which evaluates each coalition once and counts the evaluations.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import Field

from fedops.registry import PluginModel, Registry

ESTIMATORS = Registry("contribution estimator", entry_points="fedops.contribution_estimators")


class Utility:
    """``v(S)`` for coalitions of ``players``, each evaluated once (cached) and counted."""

    def __init__(self, fn: Callable[[frozenset[int]], float], players: Sequence[int]) -> None:
        ids = [int(p) for p in players]
        if len(set(ids)) != len(ids):
            raise ValueError(f"contribution: player ids must be distinct, got {ids}")
        self.players = tuple(ids)
        self._fn = fn
        self._cache: dict[frozenset[int], float] = {}

    def __call__(self, coalition) -> float:
        key = frozenset(int(p) for p in coalition)
        if not key <= set(self.players):
            raise ValueError(f"contribution: coalition {sorted(key)} has ids outside the players {list(self.players)}")
        if key not in self._cache:
            value = float(self._fn(key))
            if not math.isfinite(value):
                raise ValueError(f"contribution: utility of coalition {sorted(key)} is {value}, not finite")
            self._cache[key] = value
        return self._cache[key]

    @property
    def evaluations(self) -> int:
        """Distinct coalitions evaluated so far (the empty and the full coalition included)."""
        return len(self._cache)


@dataclass(frozen=True)
class ContributionResult:
    values: dict[int, float]
    """One value per player (client id)."""
    evaluations: int
    """Distinct coalitions whose utility was computed: the portable cost."""
    permutations: int = 0
    truncated: bool = False
    """GTG-Shapley's between-round truncation: the round changed the utility too little to score."""


class Estimator(PluginModel):
    """Turns a coalition game into one value per player."""

    @abstractmethod
    def estimate(self, utility: Utility, *, rng: np.random.Generator) -> ContributionResult:
        ...

    def check_players(self, n: int) -> None:
        """Refuse a game it cannot score (e.g. exact Shapley above its limit); nothing by default."""


@ESTIMATORS.register("loo")
class LeaveOneOut(Estimator):
    name: Literal["loo"] = "loo"

    def estimate(self, utility, *, rng):
        full = frozenset(utility.players)
        vn = utility(full)
        values = {p: vn - utility(full - {p}) for p in utility.players}
        return ContributionResult(values, utility.evaluations)


@ESTIMATORS.register("exact_shapley")
class ExactShapley(Estimator):
    name: Literal["exact_shapley"] = "exact_shapley"
    max_players: int = Field(12, ge=1, le=20)
    """The most players it scores (2^n coalitions); more are refused."""

    def check_players(self, n: int) -> None:
        if n > self.max_players:
            raise ValueError(f"exact_shapley evaluates all 2^n coalitions; {n} clients per round is above its "
                             f"max_players = {self.max_players} (use gtg_shapley or tmc_shapley, or raise max_players)")

    def estimate(self, utility, *, rng):
        players = utility.players
        n = len(players)
        self.check_players(n)
        weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
        values = {}
        for p in players:
            others = [q for q in players if q != p]
            total = 0.0
            for size in range(n):
                for subset in combinations(others, size):
                    s = frozenset(subset)
                    total += weight[size] * (utility(s | {p}) - utility(s))
            values[p] = total
        return ContributionResult(values, utility.evaluations)


def _scan(utility: Utility, order: Sequence[int], *, v_empty: float, v_full: float, threshold: float) -> dict[int, float]:
    """The marginal contributions along one permutation, 0 once ``|v(N) - v(S)| < threshold``."""
    out, prefix, prev = {}, frozenset(), v_empty
    for p in order:
        if abs(v_full - prev) < threshold:
            out[p] = 0.0
            continue
        prefix = prefix | {p}
        cur = utility(prefix)
        out[p] = cur - prev
        prev = cur
    return out


class _MonteCarlo(Estimator):
    max_permutations: int = Field(500, ge=1)
    convergence: float = Field(0.05, ge=0)
    """Stop when a block of n permutations changes the estimates by less than this (mean relative change)."""

    def _run(self, utility: Utility, *, rng, threshold: float, guided: bool) -> ContributionResult:
        players = list(utility.players)
        n = len(players)
        v_empty, v_full = utility(frozenset()), utility(frozenset(players))
        sums = dict.fromkeys(players, 0.0)
        before: dict[int, float] | None = None
        k = 0
        while k < self.max_permutations:
            if guided:
                first = players[k % n]
                rest = [p for p in players if p != first]
                order = [first] + [rest[i] for i in rng.permutation(len(rest))]
            else:
                order = [players[i] for i in rng.permutation(n)]
            for p, m in _scan(utility, order, v_empty=v_empty, v_full=v_full, threshold=threshold).items():
                sums[p] += m
            k += 1
            if k % n == 0:
                now = {p: sums[p] / k for p in players}
                if before is not None:
                    change = np.mean([abs(now[p] - before[p]) / (abs(now[p]) + 1e-12) for p in players])
                    if change < self.convergence:
                        break
                before = now
        return ContributionResult({p: sums[p] / k for p in players}, utility.evaluations, permutations=k)


@ESTIMATORS.register("tmc_shapley")
class TMCShapley(_MonteCarlo):
    name: Literal["tmc_shapley"] = "tmc_shapley"
    tolerance: float = Field(0.01, ge=0)
    """Truncate a permutation once ``|v(N) - v(S)| < tolerance * |v(N)|``."""

    def estimate(self, utility, *, rng):
        vn = utility(frozenset(utility.players))
        return self._run(utility, rng=rng, threshold=self.tolerance * abs(vn), guided=False)


@ESTIMATORS.register("gtg_shapley")
class GTGShapley(_MonteCarlo):
    name: Literal["gtg_shapley"] = "gtg_shapley"
    eps_between: float = Field(0.001, ge=0)
    """Between-round truncation: a round with ``|v(N) - v(∅)| < eps_between`` scores every client 0."""
    eps_within: float = Field(0.001, ge=0)
    """Within-round truncation: marginals after ``|v(N) - v(S)| < eps_within`` are 0, not evaluated."""
    guided: bool = True

    def estimate(self, utility, *, rng):
        players = utility.players
        v_empty, v_full = utility(frozenset()), utility(frozenset(players))
        if abs(v_full - v_empty) < self.eps_between:
            return ContributionResult(dict.fromkeys(players, 0.0), utility.evaluations, truncated=True)
        return self._run(utility, rng=rng, threshold=self.eps_within, guided=self.guided)


__all__ = ["ESTIMATORS", "ContributionResult", "Estimator", "ExactShapley", "GTGShapley", "LeaveOneOut",
           "TMCShapley", "Utility"]
