"""Reputation that lasts across runs and tasks: an append-only ledger of client events in a real
database (SQLAlchemy: a SQLite file by default, any SQLAlchemy URL by config) and a subjective-logic
reputation computed from it (:mod:`fedops.reputation.opinion`)."""

from fedops.reputation.ledger import EVENT_KINDS, Ledger, LedgerError, LedgerEvent
from fedops.reputation.opinion import Opinion, ReputationParams, opinion

__all__ = ["EVENT_KINDS", "Ledger", "LedgerError", "LedgerEvent", "Opinion", "ReputationParams", "opinion"]
