"""The ledger's state as tables (pandas): its events, and each client's opinion from them."""

from __future__ import annotations

from typing import Iterable

from fedops.reputation.ledger import Ledger
from fedops.reputation.opinion import ReputationParams


def ledger_tables(ledger: Ledger, *, task: str | None = None, clients: Iterable | None = None,
                  params: ReputationParams = ReputationParams()):
    """``(events, clients)``: the events (of ``task``, or all) in the order written, and per
    client (``clients``, or every client with an event) its faded counts, belief, disbelief,
    uncertainty and reputation over all tasks."""
    import pandas as pd

    events = ledger.events(task=task)
    named = {str(c) for c in clients} if clients is not None else None
    if named is None:
        named = {e["client"] for e in (events if task is None else ledger.events())}
    ids = sorted(named, key=lambda c: (len(c), c))
    rows = []
    for c, op in ledger.opinions(ids, params=params).items():
        rows.append({"client": c, "positive": op.positive, "negative": op.negative, "belief": op.belief,
                     "disbelief": op.disbelief, "uncertainty": op.uncertainty, "reputation": op.reputation})
    columns = ["id", "task", "run", "round", "client", "kind", "stage", "reason", "value", "created_at"]
    return pd.DataFrame(events, columns=columns), pd.DataFrame(
        rows, columns=["client", "positive", "negative", "belief", "disbelief", "uncertainty", "reputation"])
