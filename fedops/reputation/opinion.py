"""Subjective-logic reputation (Jøsang's binomial opinions, weighted and faded as in Kang, Xiong,
Niyato, Xie & Zhang, "Incentive Mechanism for Reliable Federated Learning: A Joint Optimization
Approach to Combining Reputation and Contract Theory", IEEE IoT Journal 2019).

A client's interactions are positive (it completed a round with an accepted update) or negative
(it dropped out, its update was rejected, or it was flagged as anomalous). With ``k`` the number of
the client's tasks that came after the task of an event (0 for its latest task) and ``z`` in (0, 1]
the fading factor, the evidence is

    r = kappa * sum_{positive events} z^k          s = eta * sum_{negative events} z^k

with ``eta > kappa`` (negatives weigh more). The opinion is

    belief b = r / (r + s + W),  disbelief d = s / (r + s + W),  uncertainty u = W / (r + s + W)

(``W`` the weight of the non-informative prior, 2 in Jøsang's binomial opinion; b + d + u = 1), and
the reputation is the opinion's expected value ``T = b + a * u`` (``a`` the base rate, 0.5): a
client with no history has T = a and u = 1. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, model_validator

POSITIVE = frozenset({"completed"})
NEGATIVE = frozenset({"dropped", "rejected", "flagged"})


class ReputationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kappa: float = Field(1.0, gt=0)
    """Weight of a positive interaction."""
    eta: float = Field(3.0, gt=0)
    """Weight of a negative interaction (more than ``kappa``)."""
    fading: float = Field(0.8, gt=0, le=1)
    """``z``: an event ``k`` tasks old counts ``z^k``."""
    prior_weight: float = Field(2.0, gt=0)
    base_rate: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _negatives_weigh_more(self):
        if self.eta < self.kappa:
            raise ValueError(f"reputation.eta = {self.eta} must be at least reputation.kappa = {self.kappa} "
                             "(negative interactions weigh more)")
        return self


@dataclass(frozen=True)
class Opinion:
    belief: float
    disbelief: float
    uncertainty: float
    reputation: float
    positive: float
    """The faded count of positive events (before ``kappa``)."""
    negative: float


def opinion(events: Iterable[tuple[str, int]], *, params: ReputationParams = ReputationParams()) -> Opinion:
    """The opinion from ``(kind, age)`` pairs: an event's kind and how many of the client's tasks
    came after its task (0: the latest). Kinds other than the positive and negative ones (e.g.
    contribution, points) carry no evidence."""
    pos, neg = faded_counts(events, fading=params.fading)
    return opinion_from_counts(pos, neg, params=params)


def faded_counts(events: Iterable[tuple[str, int]], *, fading: float) -> tuple[float, float]:
    """``(sum over positive events of z^age, sum over negative events of z^age)``."""
    pos = neg = 0.0
    for kind, age in events:
        if age < 0:
            raise ValueError(f"reputation: an event's age must be >= 0, got {age}")
        w = fading ** age
        if kind in POSITIVE:
            pos += w
        elif kind in NEGATIVE:
            neg += w
    return pos, neg


def opinion_from_counts(pos: float, neg: float, *, params: ReputationParams = ReputationParams()) -> Opinion:
    """The opinion from faded counts of positive and negative events."""
    if pos < 0 or neg < 0:
        raise ValueError(f"reputation: event counts must be >= 0, got {pos}, {neg}")
    r, s, W = params.kappa * pos, params.eta * neg, params.prior_weight
    total = r + s + W
    b, d, u = r / total, s / total, W / total
    return Opinion(belief=b, disbelief=d, uncertainty=u, reputation=b + params.base_rate * u, positive=pos, negative=neg)
