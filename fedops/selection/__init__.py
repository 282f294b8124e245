"""Client selection plug-ins: which clients train in a round, and in what order of preference.

A selector ranks the round's candidates (every client, less those a reputation threshold left
out): the first ``count`` are the round's cohort, the next ``extra`` its backups, promoted in rank
order when a cohort member drops (``server.backups``). What a selector may read besides the
candidates is in :class:`SelectionContext`: device features, reputations and expected times on
the virtual clock. Every selector records why each ranked client is where it is (the client
table's ``selection`` column).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from fedops.registry import PluginModel, Registry
from fedops.selection.crowd import check_weights, crowdfl_scores, fedcs_order, rank

SELECTORS = Registry("client selector", entry_points="fedops.selectors")


@dataclass(frozen=True)
class SelectionContext:
    """What the server knows about the candidates when it selects (all optional)."""

    num_clients: int
    features: dict[int, dict[str, float]] | None = None
    """Device features per client: ``cpu`` (cores), ``ram`` (free MB), ``storage`` (free MB)."""
    reputation: dict[int, float] | None = None
    """Each client's reputation (``reputation.enabled``: from the ledger and this run's rounds)."""
    times: dict[int, tuple[float, float]] | None = None
    """Expected ``(compute_s, upload_s)`` per client on the virtual clock (``devices``)."""


@dataclass(frozen=True)
class Ranking:
    """Candidates in order of preference (cohort first, then backups) and why each one is there."""

    order: list[int]
    notes: dict[int, str] = field(default_factory=dict)
    cohort: int | None = None
    """How many of ``order`` form the cohort (the rest are backups); None: the round's count."""


class Selector(PluginModel):
    #: True when the realised cohort size is random (Poisson sampling)
    variable_cohort: bool = False
    #: what the selector reads from the context: "devices", "reputation"
    needs: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def select(self, *, num_clients: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """Sorted ids of the ``count`` clients that train this round (all clients are candidates)."""

    def rank(self, *, candidates: list[int], count: int, extra: int, context: SelectionContext,
             rng: np.random.Generator) -> Ranking:
        """Up to ``count + extra`` candidates in order of preference. By default: :meth:`select`
        when every client is a candidate and there are no backups, else a uniform draw."""
        if extra == 0 and candidates == list(range(context.num_clients)):
            chosen = [int(c) for c in self.select(num_clients=context.num_clients, count=count, rng=rng)]
            return Ranking(chosen, dict.fromkeys(chosen, f"drawn by {self.name}"))
        take = min(len(candidates), count + extra)
        order = [int(candidates[i]) for i in rng.choice(len(candidates), size=take, replace=False)]
        return Ranking(order, {c: f"drawn by {self.name}, rank {i + 1}" for i, c in enumerate(order)})


@SELECTORS.register("uniform")
class UniformSelector(Selector):
    """Uniform sampling without replacement (McMahan et al. 2017: a random fraction C)."""

    name: Literal["uniform"] = "uniform"

    def select(self, *, num_clients, count, rng):
        if not 1 <= count <= num_clients:
            raise ValueError(f"cannot select {count} of {num_clients} clients")
        return np.sort(rng.choice(num_clients, size=count, replace=False))


@SELECTORS.register("poisson")
class PoissonSelector(Selector):
    """Each client joins independently with probability q = fraction: the subsampling that
    DP accountants (Opacus RDP/PRV) analyse. ``count`` is only the expected cohort size."""

    name: Literal["poisson"] = "poisson"
    variable_cohort: bool = True

    def select(self, *, num_clients, count, rng):
        q = count / num_clients
        return np.flatnonzero(rng.random(num_clients) < q)

    def rank(self, *, candidates, count, extra, context, rng):
        if extra:
            raise ValueError("poisson selection has no ranking to take backups from")
        allowed = set(candidates)
        chosen = [int(c) for c in self.select(num_clients=context.num_clients, count=count, rng=rng) if c in allowed]
        return Ranking(chosen, dict.fromkeys(chosen, "poisson draw"))


@SELECTORS.register("crowdfl")
class CrowdFLSelector(Selector):
    """CrowdFL (Zhang et al.): the top ``count`` candidates by ``sum_f weight_f * feature_f`` over
    CPU cores, free RAM, free storage and reputation, each min-max normalised over the candidates;
    weights >= 0 summing to 1; ties to the lower id."""

    name: Literal["crowdfl"] = "crowdfl"
    weights: dict[str, float] = Field(default_factory=lambda: {"cpu": 0.25, "ram": 0.25, "storage": 0.25,
                                                               "reputation": 0.25})

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        return check_weights(v)

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        w = self.weights
        return frozenset({"devices"} if any(w[f] > 0 for f in ("cpu", "ram", "storage")) else set()) | (
            {"reputation"} if w["reputation"] > 0 else set())

    def select(self, *, num_clients, count, rng):
        raise ValueError("crowdfl selection ranks clients by their devices and reputations; the round passes them")

    def rank(self, *, candidates, count, extra, context, rng):
        feats = {}
        for c in candidates:
            f = (context.features or {}).get(c, {})
            feats[c] = {"cpu": f.get("cpu", 0.0), "ram": f.get("ram", 0.0), "storage": f.get("storage", 0.0),
                        "reputation": (context.reputation or {}).get(c, 0.0)}
        scores = crowdfl_scores(feats, weights=self.weights) if feats else {}
        order = rank(scores)[: count + extra]
        return Ranking(order, {c: f"crowdfl rank {i + 1}, score {scores[c]:.3f}" for i, c in enumerate(order)})


@SELECTORS.register("fedcs")
class FedCSSelector(Selector):
    """FedCS (Nishio & Yonetani, ICC 2019): as many candidates as meet ``deadline_s`` on the
    virtual clock (parallel compute, sequential uploads; greedy), at most ``count``; the backups
    are the next candidates by their own expected finishing time."""

    name: Literal["fedcs"] = "fedcs"
    deadline_s: float = Field(..., gt=0)
    needs: ClassVar[frozenset[str]] = frozenset({"devices"})

    def select(self, *, num_clients, count, rng):
        raise ValueError("fedcs selection needs the clients' expected times; the round passes them")

    def rank(self, *, candidates, count, extra, context, rng):
        times = context.times or {}
        compute = {c: times[c][0] for c in candidates}
        upload = {c: times[c][1] for c in candidates}
        fitted = fedcs_order(compute_s=compute, upload_s=upload, deadline_s=self.deadline_s)[:count]
        order = [c for c, _ in fitted]
        notes = {c: f"fedcs: round ends by {t:.1f} s <= deadline {self.deadline_s:g} s" for c, t in fitted}
        rest = sorted((c for c in candidates if c not in notes), key=lambda c: (compute[c] + upload[c], c))
        for c in rest[:extra]:
            order.append(c)
            notes[c] = f"fedcs backup: expected {compute[c] + upload[c]:.1f} s alone"
        return Ranking(order, notes, cohort=len(fitted))


__all__ = ["SELECTORS", "CrowdFLSelector", "FedCSSelector", "PoissonSelector", "Ranking", "SelectionContext",
           "Selector", "UniformSelector"]
