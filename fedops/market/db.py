"""The marketplace's records: SQLAlchemy models in the reputation ledger's database (a SQLite file
by default, Postgres by URL), their schema kept by Alembic migrations (``market_alembic_version``).

Only identifiers, hashes, requirements and fingerprints live here: never an owner's data, never a
token (its SHA-256 only), never a copy of what Prefect and MLflow hold (a task's progress and
results are read from them). On SQLite every transaction starts with ``BEGIN IMMEDIATE``: writers
queue on the file lock (with a busy timeout) instead of failing with "database is locked".
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "market_alembic_version"


class Base(DeclarativeBase):
    pass


def now() -> float:
    return time.time()


class Account(Base):
    """A requester or a data owner; ``token_hash`` is the SHA-256 of its bearer token."""

    __tablename__ = "market_accounts"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(100))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True, index=True)
    device: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(sa.Float, default=now)


class Dataset(Base):
    """A data set an owner holds, as its fingerprint (schema, rows, label histogram, validation)."""

    __tablename__ = "market_datasets"
    __table_args__ = (sa.UniqueConstraint("owner_id", "name", name="uq_market_dataset_owner_name"),)
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.ForeignKey("market_accounts.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    fingerprint: Mapped[dict] = mapped_column(sa.JSON)
    created_at: Mapped[float] = mapped_column(sa.Float, default=now)


class Task(Base):
    """A training task; ``state`` is the market's (open, starting, launched, cancelled); the training
    run's own state is Prefect's, read through ``flow_run_id``."""

    __tablename__ = "market_tasks"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    requester_id: Mapped[str] = mapped_column(sa.ForeignKey("market_accounts.id"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text)
    spec: Mapped[dict] = mapped_column(sa.JSON)
    start_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    min_owners: Mapped[int] = mapped_column(sa.Integer)
    max_owners: Mapped[int] = mapped_column(sa.Integer)
    state: Mapped[str] = mapped_column(sa.String(16), default="open", index=True)
    flow_run_ids: Mapped[list] = mapped_column(sa.JSON, default=list)
    note: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[float] = mapped_column(sa.Float, default=now)
    started_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)


class Enrollment(Base):
    """An owner in a task, with its training ID (unguessable) and the data set it brings; one row
    per (task, owner): leaving marks it ``left``, joining again reopens it with a new ID."""

    __tablename__ = "market_enrollments"
    __table_args__ = (sa.UniqueConstraint("task_id", "owner_id", name="uq_market_enrollment_task_owner"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(sa.ForeignKey("market_tasks.id"), index=True)
    owner_id: Mapped[str] = mapped_column(sa.ForeignKey("market_accounts.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("market_datasets.id"))
    training_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    state: Mapped[str] = mapped_column(sa.String(16), default="joined")
    client_index: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    joined_at: Mapped[float] = mapped_column(sa.Float, default=now)
    left_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                                  pool_size=20, max_overflow=40)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):  # pragma: no cover - driver hook
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover - driver hook
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the market's tables to ``revision`` with Alembic (creates them on a new database; the
    ledger's own table is left alone)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
