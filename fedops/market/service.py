"""The marketplace's rules over its database: accounts and tokens, data-set fingerprints, tasks,
eligibility, enrolment, and the training config a task runs with. Every public method runs in one
transaction: it commits everything or, on a :class:`MarketError`, nothing.

The web app and the REST API (:mod:`fedops.market.app`) call these; the launcher
(:mod:`fedops.market.launcher`) starts due tasks through Prefect.
"""

from __future__ import annotations

import copy
import hashlib
import os
import secrets
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedops.market import db
from fedops.market.db import Account, Dataset, Enrollment, Task
from fedops.market.eligibility import binding_of, unmet
from fedops.market.schemas import AccountIn, DatasetIn, DeviceProfile, TaskIn

OPEN, STARTING, LAUNCHED, CANCELLED = "open", "starting", "launched", "cancelled"
MARKET_OWNED = ("partition.keep", "reputation.ledger", "reputation.task", "reputation.client_ids",
                "reputation.enabled", "devices.source", "devices.table", "devices.ranges", "incentives.budget",
                "tracking.uri", "tracking.model_name", "tracking.register_model")
"""Config keys the market sets itself (from the enrolment, the ledger and the reward budget)."""
REQUESTER_SECTIONS = ("name", "seed", "data", "partition", "model", "client", "server", "transport", "privacy",
                      "secagg", "quality", "fairness", "contribution", "reputation", "incentives")
"""The config sections a requester may set; execution, tracking, devices, validation, simulation and
the baseline are the service's (its machine, its stores, the owners' devices)."""
MARKET_DATA = ("pima", "adult", "compas", "fashion_mnist", "synthetic")
"""Data sets a task may name: the built-in sources, read from the service's offline packages (a
requester never names a file on the service's machine)."""
LIMITS = {"server.rounds": 1000, "client.epochs": 100}
"""Upper bounds on the work one task may ask of the service."""


class MarketError(Exception):
    """A refused request: ``status`` is the HTTP status (4xx), ``message`` says what and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def token_hash(token: str) -> str:
    """SHA-256 of a bearer token. Tokens are 256 random bits (``secrets``), so a fast hash is
    enough: there is nothing to guess a dictionary word from."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Eligibility:
    task_id: str
    eligible: bool
    reasons: list[str]
    """Task-level reasons (closed, full, already joined) and, when no data set fits, each data set's."""
    datasets: dict[str, list[str]]
    """Each of the owner's data sets (by id) and what it fails (empty: it fits)."""


class Market:
    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.engine = db.make_engine(url)
        db.migrate(self.engine)
        self._sessions = db.session_factory(self.engine)

    @classmethod
    def at(cls, root: Path, url: str | None = None) -> "Market":
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(url or f"sqlite:///{root / 'market.db'}", root)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    # --- accounts --------------------------------------------------------------------------------
    def register(self, body: AccountIn) -> tuple[Account, str]:
        token = secrets.token_urlsafe(32)
        account = Account(id=uuid.uuid4().hex, role=body.role, name=body.name, token_hash=token_hash(token),
                          device=None if body.device is None else body.device.model_dump(), created_at=time.time())
        with self.session() as s:
            s.add(account)
        return account, token

    def authenticate(self, token: str | None, *, role: str | None = None) -> Account:
        if not token:
            raise MarketError(401, "no token: send 'Authorization: Bearer <token>' (or log in)")
        if len(token) > 200:
            raise MarketError(401, "invalid token")
        with self.session() as s:
            account = s.scalar(sa.select(Account).where(Account.token_hash == token_hash(token)))
        if account is None:
            raise MarketError(401, "invalid token")
        if role is not None and account.role != role:
            raise MarketError(403, f"this needs a {role} account; yours is a {account.role} account")
        return account

    def set_device(self, owner: Account, device: DeviceProfile) -> Account:
        with self.session() as s:
            row = s.get(Account, owner.id)
            row.device = device.model_dump()
        return row

    def add_dataset(self, owner: Account, body: DatasetIn) -> Dataset:
        row = Dataset(id=uuid.uuid4().hex, owner_id=owner.id, name=body.name,
                      fingerprint=body.model_dump(exclude={"name"}), created_at=time.time())
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError:
            raise MarketError(409, f"you already registered a data set named {body.name!r}") from None
        return row

    def datasets(self, owner: Account) -> list[Dataset]:
        with self.session() as s:
            return list(s.scalars(sa.select(Dataset).where(Dataset.owner_id == owner.id).order_by(Dataset.created_at)))

    # --- tasks ----------------------------------------------------------------------------------
    def publish(self, requester: Account, body: TaskIn) -> Task:
        spec = body.model_dump(mode="json")
        config, binding = self._validated_config(body)
        task = Task(id=uuid.uuid4().hex, requester_id=requester.id, title=body.title, description=body.description,
                    spec={**spec, "config": config, "binding": binding}, start_at=None if body.start_at is None else body.start_at.timestamp(),
                    min_owners=body.min_owners, max_owners=body.max_owners, state=OPEN, flow_run_ids=[],
                    created_at=time.time())
        with self.session() as s:
            s.add(task)
        return task

    def _validated_config(self, body: TaskIn) -> tuple[dict[str, Any], dict[str, Any]]:
        from fedops.config import ConfigError, parse_config

        config = copy.deepcopy(body.config)
        extra = sorted(set(config) - set(REQUESTER_SECTIONS))
        if extra:
            raise MarketError(422, f"config sets {', '.join(extra)}, which a task cannot set (the service runs and "
                                   f"tracks it); allowed sections: {', '.join(REQUESTER_SECTIONS)}")
        given = _dotted(config)
        if "data.path" in given:
            raise MarketError(422, "config sets data.path: a task names a built-in data set, never a file on the "
                                   "service's machine")
        for dotted, most in LIMITS.items():
            section, key = dotted.split(".")
            value = (config.get(section) or {}).get(key) if isinstance(config.get(section), dict) else None
            if isinstance(value, (int, float)) and value > most:
                raise MarketError(422, f"config {dotted} = {value}: a market task allows at most {most}")
        owned = sorted(k for k in given if any(k == m or k.startswith(m + ".") for m in MARKET_OWNED))
        if owned:
            raise MarketError(422, f"config sets {', '.join(owned)}, which the market sets itself (from the "
                                   "enrolled owners, the ledger and reward_budget); remove them")
        data = config.get("data")
        kind = data.get("name") if isinstance(data, dict) else data
        if kind not in MARKET_DATA:
            raise MarketError(422, f"config data = {kind!r}; a market task trains on one of {', '.join(MARKET_DATA)}")
        if kind != body.requirements.dataset:
            raise MarketError(422, f"config data is {kind!r} but requirements.dataset is "
                                   f"{body.requirements.dataset!r}; they must name the same data set")
        model = config.get("model")
        model_name = model.get("name") if isinstance(model, dict) else model
        if body.initial_model is not None and body.initial_model != model_name:
            raise MarketError(422, f"initial_model = {body.initial_model!r} but the config's model is "
                                   f"{model_name!r}; name the same registry key (MLflow model URIs are not "
                                   "supported as initial models)")
        try:
            parsed = parse_config(config)
        except (ConfigError, ValueError) as exc:
            raise MarketError(422, f"config: {exc}") from None
        partitions = parsed.partition.num_clients
        if body.min_owners > partitions:
            raise MarketError(422, f"min_owners = {body.min_owners} but the config splits the data into "
                                   f"{partitions} partitions (partition.num_clients); allowed: 1..{partitions}")
        # the config as it would run with min_owners owners: refused now, not when the task starts
        fake = [{"partition": p, "owner": f"owner-{p}", "device": _PLACEHOLDER_DEVICE} for p in range(body.min_owners)]
        try:
            parse_config(training_config(config, enrolled=fake,
                                         ledger=self.url, task_id="0" * 32, reward_budget=body.reward_budget))
        except (ConfigError, ValueError) as exc:
            raise MarketError(422, f"config with {body.min_owners} owners: {exc}") from None
        return config, binding_of(parsed)

    def tasks(self, *, state: str | None = None) -> list[Task]:
        with self.session() as s:
            q = sa.select(Task).order_by(Task.created_at.desc())
            if state:
                q = q.where(Task.state == state)
            return list(s.scalars(q))

    def task(self, task_id: str) -> Task:
        with self.session() as s:
            task = s.get(Task, str(task_id)[:64])
        if task is None:
            raise MarketError(404, f"no task {task_id!r}")
        return task

    def own_task(self, requester: Account, task_id: str) -> Task:
        task = self.task(task_id)
        if task.requester_id != requester.id:
            raise MarketError(403, f"task {task_id} belongs to another requester")
        return task

    def enrollments(self, task_id: str, *, active: bool = True) -> list[Enrollment]:
        with self.session() as s:
            q = sa.select(Enrollment).where(Enrollment.task_id == task_id).order_by(Enrollment.joined_at)
            if active:
                q = q.where(Enrollment.state == "joined")
            return list(s.scalars(q))

    def participants(self, task_id: str) -> list[dict[str, Any]]:
        """The enrolled owners with their names (for the requester's statistics page)."""
        with self.session() as s:
            rows = s.execute(sa.select(Enrollment, Account.name).join(Account, Account.id == Enrollment.owner_id)
                             .where(Enrollment.task_id == task_id, Enrollment.state == "joined")
                             .order_by(Enrollment.client_index, Enrollment.joined_at)).all()
        return [{"owner_id": e.owner_id, "name": name, "client_index": e.client_index, "joined_at": e.joined_at}
                for e, name in rows]

    # --- owners in tasks --------------------------------------------------------------------------
    def eligibility(self, owner: Account, task: Task) -> Eligibility:
        with self.session() as s:
            return self._eligibility(s, s.get(Account, owner.id), task)

    def _eligibility(self, s: Session, owner: Account, task: Task) -> Eligibility:
        reasons: list[str] = []
        if task.state != OPEN:
            reasons.append(f"the task is {task.state}, not open for enrolment")
        joined = s.scalar(sa.select(sa.func.count()).select_from(Enrollment)
                          .where(Enrollment.task_id == task.id, Enrollment.state == "joined"))
        mine = s.scalar(sa.select(Enrollment).where(Enrollment.task_id == task.id, Enrollment.owner_id == owner.id))
        if mine is not None and mine.state == "joined":
            reasons.append("you have already joined this task")
        elif joined >= task.max_owners:
            reasons.append(f"the task is full ({task.max_owners} owners)")
        if owner.device is None:
            reasons.append("no device profile: register your device first")
        taken = {e.dataset_id for e in s.scalars(sa.select(Enrollment).where(
            Enrollment.task_id == task.id, Enrollment.state == "joined"))}
        binding_taken = _bindings_taken(s, task.id)
        per_dataset: dict[str, list[str]] = {}
        for ds in s.scalars(sa.select(Dataset).where(Dataset.owner_id == owner.id).order_by(Dataset.created_at)):
            why = unmet(spec=task.spec, fingerprint=ds.fingerprint, device=owner.device)
            b = ds.fingerprint.get("binding")
            if ds.id in taken or (b is not None and b["partition"] in binding_taken and ds.id not in taken):
                why.append("this data set's partition is already enrolled in the task")
            per_dataset[ds.id] = why
        if not per_dataset:
            reasons.append("you have registered no data set")
        elif not any(not why for why in per_dataset.values()):
            reasons.extend(sorted({w for why in per_dataset.values() for w in why}))
        return Eligibility(task_id=task.id, eligible=not reasons, reasons=reasons, datasets=per_dataset)

    def join(self, owner: Account, task_id: str, dataset_id: str) -> Enrollment:
        try:
            with self.session() as s:  # BEGIN IMMEDIATE on SQLite, the task's row locked elsewhere
                task = s.get(Task, task_id, with_for_update=True)
                if task is None:
                    raise MarketError(404, f"no task {task_id!r}")
                me = s.get(Account, owner.id)
                ds = s.get(Dataset, dataset_id)
                if ds is None or ds.owner_id != owner.id:
                    raise MarketError(404, f"you have no data set {dataset_id!r}")
                elig = self._eligibility(s, me, task)
                task_level = [r for r in elig.reasons if r not in {w for ws in elig.datasets.values() for w in ws}]
                if task_level:
                    conflict = task.state != OPEN or any("already joined" in r or "is full" in r for r in task_level)
                    raise MarketError(409 if conflict else 403, "cannot join: " + "; ".join(task_level))
                if task.start_at is not None and time.time() >= task.start_at:
                    raise MarketError(409, "cannot join: the task's start time has passed")
                if elig.datasets.get(ds.id):
                    raise MarketError(403, "cannot join: " + "; ".join(elig.datasets[ds.id]))
                row = s.scalar(sa.select(Enrollment).where(Enrollment.task_id == task_id,
                                                           Enrollment.owner_id == owner.id))
                if row is None:
                    row = Enrollment(task_id=task_id, owner_id=owner.id, joined_at=time.time())
                    s.add(row)
                row.dataset_id, row.state, row.left_at = ds.id, "joined", None
                row.training_id = secrets.token_urlsafe(24)
                row.joined_at = time.time()
        except IntegrityError:  # a concurrent join of the same owner won the race (Postgres)
            raise MarketError(409, "cannot join: you have already joined this task") from None
        return row

    def enrollment(self, owner: Account, training_id: str) -> Enrollment:
        with self.session() as s:
            row = s.scalar(sa.select(Enrollment).where(Enrollment.training_id == str(training_id)[:64]))
        if row is None or row.owner_id != owner.id:  # another owner's ID reads as unknown
            raise MarketError(404, "no enrolment with that training ID for your account")
        return row

    def my_enrollments(self, owner: Account) -> list[tuple[Enrollment, Task]]:
        with self.session() as s:
            return [(e, t) for e, t in s.execute(
                sa.select(Enrollment, Task).join(Task, Task.id == Enrollment.task_id)
                .where(Enrollment.owner_id == owner.id).order_by(Enrollment.joined_at.desc())).all()]

    def leave(self, owner: Account, task_id: str, training_id: str) -> Enrollment:
        with self.session() as s:
            row = s.scalar(sa.select(Enrollment).where(Enrollment.training_id == str(training_id)[:64]))
            if row is None or row.owner_id != owner.id or row.task_id != task_id:
                raise MarketError(404, "no enrolment with that training ID for your account in this task")
            task = s.get(Task, task_id, with_for_update=True)
            if task.state != OPEN:
                raise MarketError(409, f"cannot leave: the task is {task.state}; owners leave before it starts")
            if row.state != "joined":
                raise MarketError(409, "cannot leave: you already left this task")
            row.state, row.left_at = "left", time.time()
        return row

    # --- starting --------------------------------------------------------------------------------
    def cancel(self, requester: Account, task_id: str) -> Task:
        with self.session() as s:
            task = s.get(Task, task_id, with_for_update=True)
            if task is None:
                raise MarketError(404, f"no task {task_id!r}")
            if task.requester_id != requester.id:
                raise MarketError(403, f"task {task_id} belongs to another requester")
            if task.state != OPEN:
                raise MarketError(409, f"cannot cancel: the task is {task.state}")
            task.state, task.note = CANCELLED, "cancelled by its requester"
        return task

    def due(self, now: float | None = None) -> list[tuple[str, str]]:
        """Open tasks whose start condition holds (``("start", id)``) or whose start time passed with
        too few owners (``("cancel", id)``)."""
        now = time.time() if now is None else now
        out = []
        with self.session() as s:
            for task in s.scalars(sa.select(Task).where(Task.state == OPEN)):
                action = _rule(task, self._joined(s, task.id), now)
                if action:
                    out.append((action, task.id))
        return out

    def begin_start(self, task_id: str, *, requester: Account | None = None) -> Task:
        """Close enrolment and write the task's training config (``open`` -> ``starting``); the
        launcher then triggers the deployment. ``requester``: a requester starting it by hand."""
        with self.session() as s:
            task = s.get(Task, task_id, with_for_update=True)
            if task is None:
                raise MarketError(404, f"no task {task_id!r}")
            if requester is not None and task.requester_id != requester.id:
                raise MarketError(403, f"task {task_id} belongs to another requester")
            if task.state != OPEN:
                raise MarketError(409, f"cannot start: the task is {task.state}")
            rows = s.execute(sa.select(Enrollment, Dataset, Account)
                             .join(Dataset, Dataset.id == Enrollment.dataset_id)
                             .join(Account, Account.id == Enrollment.owner_id)
                             .where(Enrollment.task_id == task_id, Enrollment.state == "joined")).all()
            if not rows:
                raise MarketError(409, "cannot start: no owner has joined")
            if requester is None and _rule(task, len(rows), time.time()) != "start":
                raise MarketError(409, "cannot start: the start rule no longer holds")  # an owner left meanwhile
            rows.sort(key=lambda r: r[1].fingerprint["binding"]["partition"])
            enrolled = [{"partition": d.fingerprint["binding"]["partition"], "owner": a.id, "device": a.device}
                        for _, d, a in rows]
            config = training_config(task.spec["config"], enrolled=enrolled,
                                     ledger=self.url, task_id=task.id, reward_budget=task.spec["reward_budget"])
            from fedops.config import ConfigError, parse_config

            try:
                parse_config(config)
            except (ConfigError, ValueError) as exc:
                raise MarketError(409, f"cannot start with these {len(rows)} owners: {exc}") from None
            for j, (e, _, _) in enumerate(rows):
                e.client_index = j
            self._write_config(task.id, config)
            task.state, task.started_at = STARTING, time.time()
        return task

    def mark_cancelled(self, task_id: str, note: str, *, only_if_due: bool = False) -> bool:
        """Cancel an open task (``only_if_due``: only while its start time has passed with too few
        owners, checked in the same transaction)."""
        with self.session() as s:
            task = s.get(Task, task_id, with_for_update=True)
            if task is None or task.state != OPEN:
                return False
            if only_if_due and _rule(task, self._joined(s, task_id), time.time()) != "cancel":
                return False
            task.state, task.note = CANCELLED, note
            return True

    @staticmethod
    def _joined(s: Session, task_id: str) -> int:
        return s.scalar(sa.select(sa.func.count()).select_from(Enrollment)
                        .where(Enrollment.task_id == task_id, Enrollment.state == "joined"))

    def record_flow_run(self, task_id: str, flow_run_id: str, *, note: str | None = None) -> None:
        with self.session() as s:
            task = s.get(Task, task_id)
            task.flow_run_ids = [*task.flow_run_ids, str(flow_run_id)]
            task.state = LAUNCHED
            if note is not None:
                task.note = note

    def set_note(self, task_id: str, note: str | None) -> None:
        with self.session() as s:
            s.get(Task, task_id).note = note

    # --- files of a task ---------------------------------------------------------------------------
    def task_dir(self, task_id: str) -> Path:
        return self.root / "tasks" / task_id

    def config_path(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "config.yaml"

    def workdir(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "work"

    def _write_config(self, task_id: str, config: dict[str, Any]) -> None:
        import yaml

        path = self.config_path(task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, path)


_PLACEHOLDER_DEVICE = {"cpu_cores": 1.0, "ram_mb": 1000.0, "storage_mb": 1000.0, "bandwidth_mbps": 10.0,
                       "speed": 1.0, "dropout_prob": 0.0}


def training_config(config: dict[str, Any], *, enrolled: list[dict[str, Any]], ledger: str, task_id: str,
                    reward_budget: float) -> dict[str, Any]:
    """The config a task trains with: the requester's (as published) plus what
    the market sets: the enrolled owners' partitions (client ``j`` = ``enrolled[j]``), their names
    in the ledger, their devices, the reward budget and the registered model's name."""
    out = copy.deepcopy(config)
    out.setdefault("partition", {})
    if not isinstance(out["partition"], dict):
        raise ValueError("config partition must be a mapping")
    out["partition"]["keep"] = [int(e["partition"]) for e in enrolled]
    rep = dict(out.get("reputation") or {})
    rep.update(enabled=True, ledger=ledger, task=f"market-{task_id}", client_ids=[str(e["owner"]) for e in enrolled])
    out["reputation"] = rep
    devices = dict(out.get("devices") or {})
    devices.update(source="table", table=[dict(e["device"]) for e in enrolled])
    out["devices"] = devices
    inc = dict(out.get("incentives") or {})
    inc["budget"] = float(reward_budget)
    out["incentives"] = inc
    tracking = dict(out.get("tracking") or {})
    tracking.update(register_model=True, model_name=f"market-{task_id[:12]}")
    out["tracking"] = tracking
    return out


def _rule(task: Task, joined: int, now: float) -> str | None:
    """The start rule: without a start time, start at ``min_owners``; at the start time, start
    with ``min_owners`` or more, else cancel; before it, wait."""
    if task.start_at is None:
        return "start" if joined >= task.min_owners else None
    if now < task.start_at:
        return None
    return "start" if joined >= task.min_owners else "cancel"


def _bindings_taken(s: Session, task_id: str) -> set[int]:
    rows = s.scalars(sa.select(Dataset).join(Enrollment, Enrollment.dataset_id == Dataset.id)
                     .where(Enrollment.task_id == task_id, Enrollment.state == "joined"))
    return {d.fingerprint["binding"]["partition"] for d in rows if d.fingerprint.get("binding")}


def _dotted(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, dict):
            out.extend(_dotted(v, key + "."))
    return out
