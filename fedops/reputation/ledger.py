"""The reputation ledger: append-only client events in a database through SQLAlchemy (a SQLite
file by default; Postgres or any SQLAlchemy URL). One round's events are written in one
transaction, so a crash never leaves half a round's events; runs and tasks that share the URL see
each other's events.

Event kinds: ``completed`` (a round's update accepted), ``dropped`` (with the stage), ``rejected``
(with the reason), ``flagged`` (with the anomaly score), ``contribution`` (with the value),
``points`` (with the amount). A client is any string id (a data owner); a task is what the events
belong to (a training task: its reputation fades by the tasks that came after it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from fedops import failpoints
from fedops.errors import FedopsError
from fedops.reputation.opinion import Opinion, ReputationParams, faded_counts, opinion_from_counts

EVENT_KINDS = ("completed", "dropped", "rejected", "flagged", "contribution", "points")


class LedgerError(FedopsError):
    """The ledger cannot be reached or written."""


@dataclass(frozen=True)
class LedgerEvent:
    client: str
    kind: str
    stage: str | None = None
    reason: str | None = None
    value: float | None = None

    def check(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"ledger event kind {self.kind!r} unknown; known: {', '.join(EVENT_KINDS)}")
        if not str(self.client):
            raise ValueError("ledger event needs a client id")
        if self.kind in ("contribution", "points", "flagged") and self.value is None:
            raise ValueError(f"ledger event {self.kind!r} of client {self.client!r} needs a value")


def _tables():
    import sqlalchemy as sa

    meta = sa.MetaData()
    events = sa.Table(
        "fedops_ledger_events", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(200), nullable=False, index=True),
        sa.Column("run", sa.String(200), nullable=False),
        sa.Column("round", sa.Integer, nullable=True),
        sa.Column("client", sa.String(200), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("stage", sa.String(100), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    return meta, events


class Ledger:
    """A ledger at ``url`` (the table is created when missing). Unreachable: :class:`LedgerError`."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError

        try:
            args = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
            self.engine = sa.create_engine(url, **args)
            self.meta, self.events_table = _tables()
            with self.engine.begin() as conn:
                self.meta.create_all(conn)
        except (SQLAlchemyError, ArgumentError, ImportError, ValueError) as exc:
            shown = url.split("@")[-1] if "@" in url else url  # no password in the message
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise LedgerError(f"reputation ledger {shown!r} cannot be reached: {type(exc).__name__}: {first}") from exc
        self.url = url

    def record(self, *, task: str, run: str, round_idx: int | None, events: Sequence[LedgerEvent],
               once: bool = False) -> int:
        """Append ``events`` in one transaction (all or none); returns how many were written.
        ``once``: write nothing if ``run`` already has events for ``round_idx`` (checked in the
        same transaction), so a round repeated after a crash is recorded once."""
        for e in events:
            e.check()
        rows = [{"task": str(task), "run": str(run), "round": round_idx, "client": str(e.client), "kind": e.kind,
                 "stage": e.stage, "reason": e.reason, "value": None if e.value is None else float(e.value),
                 "created_at": time.time()} for e in events]
        if not rows:
            return 0
        half = max(1, len(rows) // 2)
        with self.engine.begin() as conn:
            if once:  # a repeated round (a resumed run) writes nothing twice
                import sqlalchemy as sa

                t = self.events_table
                cond = t.c.round.is_(None) if round_idx is None else t.c.round == round_idx
                q = sa.select(sa.func.count()).select_from(t).where(t.c.run == str(run), cond)
                if conn.execute(q).scalar():
                    return 0
            conn.execute(self.events_table.insert(), rows[:half])
            failpoints.hit("ledger.write", round_idx=round_idx)
            if rows[half:]:
                conn.execute(self.events_table.insert(), rows[half:])
        return len(rows)

    def events(self, *, client: str | None = None, task: str | None = None,
               clients: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Events in the order they were written (the ledger's state, exportable as a table), of
        one ``client``, of any of ``clients``, and of one ``task`` when given."""
        t = self.events_table
        q = t.select()
        if client is not None:
            q = q.where(t.c.client == str(client))
        if task is not None:
            q = q.where(t.c.task == str(task))
        if clients is None:
            groups = [q]
        else:
            ids = [str(c) for c in clients]
            groups = [q.where(t.c.client.in_(ids[i:i + 500])) for i in range(0, len(ids), 500)]
        rows: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for g in groups:
                rows += [dict(r._mapping) for r in conn.execute(g)]
        return sorted(rows, key=lambda r: r["id"])

    def evidence(self, clients: Sequence[str], *, params: ReputationParams = ReputationParams(),
                 current_task: str | None = None, exclude_run: str | None = None) -> dict[str, tuple[float, float]]:
        """Each client's faded ``(positive, negative)`` counts. An event's age is how many of the
        client's tasks came after its task (tasks ordered by their first event); ``current_task``
        counts as the newest of every client's tasks (a run about to add events to it), and the
        events of ``exclude_run`` (that run's own, which it keeps itself) are left out."""
        by_client: dict[str, list[dict[str, Any]]] = {str(c): [] for c in clients}
        for e in self.events(clients=list(by_client)):  # one query per 500 clients, in the order written
            if exclude_run is None or e["run"] != exclude_run:
                by_client[e["client"]].append(e)
        out = {}
        for c, evs in by_client.items():
            order: list[str] = []
            for e in evs:  # tasks by their first event
                if e["task"] not in order and e["task"] != current_task:
                    order.append(e["task"])
            if current_task is not None:
                order.append(current_task)
            age = {task: len(order) - 1 - i for i, task in enumerate(order)}
            out[c] = faded_counts([(e["kind"], age[e["task"]]) for e in evs], fading=params.fading)
        return out

    def opinions(self, clients: Sequence[str], *, params: ReputationParams = ReputationParams()) -> dict[str, Opinion]:
        """Each client's opinion; an event's age is how many of that client's tasks came after its task."""
        return {c: opinion_from_counts(*counts, params=params)
                for c, counts in self.evidence(clients, params=params).items()}

    def dispose(self) -> None:
        self.engine.dispose()


def _stage(reason: str) -> str:
    """Where a dropped client was lost, from its client-table reason."""
    if reason.startswith("secure aggregation"):
        return "secure aggregation"
    if reason.startswith("upload failed"):
        return "upload"
    return "training"


def events_from_rows(rows: Sequence[dict[str, Any]]) -> list[LedgerEvent]:
    """A round's ledger events from its client table: ``ok`` -> completed (and flagged, with the
    norm z-score, when the anomaly flag is up), ``dropped`` -> dropped with its stage, ``rejected``
    -> rejected with the reason, a ``contribution`` value -> contribution. Rows of clients that did
    not take part (``excluded``) carry no event."""
    out: list[LedgerEvent] = []
    for row in rows:
        c, status, reason = str(row["client_id"]), row.get("status"), str(row.get("reason") or "")
        if status == "ok":
            out.append(LedgerEvent(c, "completed"))
            if row.get("flagged"):
                out.append(LedgerEvent(c, "flagged", value=float(row.get("norm_z") or 0.0), reason="anomaly flag"))
        elif status == "dropped":
            out.append(LedgerEvent(c, "dropped", stage=_stage(reason), reason=reason[:1000]))
        elif status == "rejected":
            out.append(LedgerEvent(c, "rejected", reason=reason[:1000]))
        if row.get("contribution") is not None:
            out.append(LedgerEvent(c, "contribution", value=float(row["contribution"])))
    return out
