"""Selection for crowdsourced tasks (pure): CrowdFL's weighted device and reputation score, a
FedCS-style deadline rule on the virtual clock, reputation-threshold exclusion, and backups.

- :func:`crowdfl_scores`: each feature (CPU cores, free RAM, free storage, reputation) min-max
  normalised over the candidates (all equal: 1), then ``sum_f weight_f * feature_f``; weights >= 0
  and summing to 1. :func:`rank` orders by score, ties to the lower id.
- :func:`fedcs_select` (Nishio & Yonetani, "Client Selection for Federated Learning with
  Heterogeneous Resources in Mobile Edge", ICC 2019): clients compute in parallel and upload one
  after another; greedily add the client that ends the round soonest while the round still ends by
  the deadline, so as many clients as possible meet it.
- :func:`cohort_with_backups`: the top ``k`` of a ranking take part; when one of them drops, the
  next ranked backup (up to ``b``) is promoted within the round, so the cohort keeps its size.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

FEATURES = ("cpu", "ram", "storage", "reputation")


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(FEATURES))
    if unknown:
        raise ValueError(f"selection weights {unknown} unknown; known: {', '.join(FEATURES)}")
    w = {f: float(weights.get(f, 0.0)) for f in FEATURES}
    bad = {f: v for f, v in w.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"selection weights must be finite and >= 0, got {bad}")
    if not math.isclose(sum(w.values()), 1.0, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"selection weights must sum to 1, got {sum(w.values()):g} ({w})")
    return w


def crowdfl_scores(features: Mapping[int, Mapping[str, float]], *, weights: Mapping[str, float]) -> dict[int, float]:
    """Score per candidate from ``features[id] = {"cpu", "ram", "storage", "reputation"}``."""
    w = check_weights(weights)
    ids = sorted(features)
    out = dict.fromkeys(ids, 0.0)
    for f in FEATURES:
        if w[f] == 0:
            continue
        vals = {c: float(features[c][f]) for c in ids}
        lo, hi = min(vals.values()), max(vals.values())
        for c in ids:
            out[c] += w[f] * (1.0 if hi == lo else (vals[c] - lo) / (hi - lo))
    return out


def rank(scores: Mapping[int, float]) -> list[int]:
    """Ids by score, highest first; ties to the lower id."""
    return sorted(scores, key=lambda c: (-scores[c], c))


def exclude_below(reputations: Mapping[int, float], *, threshold: float) -> tuple[list[int], dict[int, str]]:
    """The candidates whose reputation reaches ``threshold``, and why each other one is left out."""
    kept = sorted(c for c, r in reputations.items() if r >= threshold)
    reasons = {c: f"reputation {r:.3f} below threshold {threshold:g}" for c, r in sorted(reputations.items())
               if r < threshold}
    return kept, reasons


def fedcs_order(*, compute_s: Mapping[int, float], upload_s: Mapping[int, float], deadline_s: float) -> list[tuple[int, float]]:
    """FedCS's greedy rule: the clients whose round, with parallel compute and sequential uploads
    in the chosen order, ends by ``deadline_s``, in the order chosen, each with the round's end
    once it is added."""
    remaining = set(compute_s)
    chosen: list[tuple[int, float]] = []
    end = 0.0  # when the last chosen upload finishes
    while remaining:
        def finish(c):  # the round's end if c uploads next: after its compute and the uploads before it
            return max(end, compute_s[c]) + upload_s[c]
        best = min(sorted(remaining), key=finish)
        t = finish(best)
        if t > deadline_s:
            break
        chosen.append((best, t))
        end = t
        remaining.discard(best)
    return chosen


def fedcs_select(*, compute_s: Mapping[int, float], upload_s: Mapping[int, float], deadline_s: float) -> list[int]:
    """The clients (sorted) FedCS's greedy rule fits into ``deadline_s``."""
    return sorted(c for c, _ in fedcs_order(compute_s=compute_s, upload_s=upload_s, deadline_s=deadline_s))


def cohort_with_backups(ranked: Sequence[int], *, k: int, backups: int, dropped: set[int]) -> tuple[list[int], list[int]]:
    """The cohort after promotions, and the backups promoted (in rank order). ``dropped`` are the
    clients that drop in this round (the main cohort's or backups')."""
    if k < 1 or backups < 0:
        raise ValueError(f"cohort of k = {k} with {backups} backups: k must be >= 1 and backups >= 0")
    main = list(ranked[:k])
    reserve = list(ranked[k:k + backups])
    cohort = [c for c in main if c not in dropped]
    promoted = []
    for c in reserve:
        if len(cohort) >= k:
            break
        if c not in dropped:
            cohort.append(c)
            promoted.append(c)
    return cohort, promoted
