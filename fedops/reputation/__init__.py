"""Reputation that lasts across runs and tasks: an append-only ledger of client events in a real
database (SQLAlchemy: a SQLite file by default, any SQLAlchemy URL by config) and a subjective-logic
reputation computed from it (:mod:`fedops.reputation.opinion`)."""

from fedops.reputation.ledger import EVENT_KINDS, Ledger, LedgerError, LedgerEvent, events_from_rows
from fedops.reputation.opinion import Opinion, ReputationParams, opinion, opinion_from_counts

__all__ = ["EVENT_KINDS", "Ledger", "LedgerError", "LedgerEvent", "Opinion", "ReputationParams", "events_from_rows", "opinion",
           "opinion_from_counts"]
