"""Helpers for the server's tests: one round of the server's update path on hand-made messages."""

import numpy as np

from fedops.round.transport import PlainTransport
from fedops.types import EncodedUpdate


def msg(cid, values, *, dtype="<f4", n=10, indicator=None):
    payload = np.asarray(values, dtype=dtype).tobytes()
    return EncodedUpdate(client_id=cid, payload=payload, nbytes=len(payload), num_samples=n, clip_indicator=indicator)


def finish(server, messages, *, selected=None, round_idx=1, failures=None, reports=None, delivery=None):
    """The server's half of round ``round_idx``: returns (metrics, rows by client id)."""
    selected = sorted({m.client_id for m in messages}) if selected is None else selected
    plan = server.plan(round_idx, selected=selected)
    rows = server.rows(plan, failures or {})
    for cid, report in (reports or {}).items():
        rows[cid].update(report)
    delivery = delivery or PlainTransport().deliver(round_idx, messages)
    return server.finish(plan, delivery, rows), rows
