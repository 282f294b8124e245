"""What the marketplace's API takes and returns: pydantic models, unknown fields refused, every
string and list bounded. A task's training config is validated by the training config models
(:class:`fedops.config.Config`) when the task is published, not when it starts."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

IDENT = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
"""Data set kinds, column names and labels: identifiers (they reach configs and file names)."""

Ident = Annotated[str, StringConstraints(pattern=IDENT)]
Text = Field(min_length=1, max_length=200)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DeviceProfile(Strict):
    """An owner's device, as CrowdFL's selection reads it (the ``devices.table`` row of a task)."""

    cpu_cores: float = Field(gt=0, le=4096)
    ram_mb: float = Field(gt=0, le=1e8)
    storage_mb: float = Field(gt=0, le=1e10)
    bandwidth_mbps: float = Field(gt=0, le=1e6)
    speed: float = Field(1.0, gt=0, le=1000)
    dropout_prob: float = Field(0.0, ge=0, lt=1)


class AccountIn(Strict):
    role: Literal["requester", "owner"]
    name: str = Text
    device: DeviceProfile | None = None

    @model_validator(mode="after")
    def _device(self) -> "AccountIn":
        if self.device is not None and self.role != "owner":
            raise ValueError("only a data owner has a device profile")
        return self


class Binding(Strict):
    """Where a simulated owner's rows come from: partition ``partition`` of the data set split into
    ``num_clients`` by ``partitioner`` with ``seed`` (the demo's owners; a remote owner has none)."""

    num_clients: int = Field(ge=1, le=100_000)
    partitioner: dict[str, Any] = Field(max_length=20)
    seed: int = Field(ge=0)
    partition: int = Field(ge=0)

    @model_validator(mode="after")
    def _in_range(self) -> "Binding":
        if self.partition >= self.num_clients:
            raise ValueError(f"binding.partition = {self.partition}: allowed 0..{self.num_clients - 1}")
        return self


class ValidationResult(Strict):
    """The data set's Great Expectations suite, as run by its owner."""

    suite: str = Field(min_length=1, max_length=200)
    success: bool
    failed: list[str] = Field(default_factory=list, max_length=200)


class DatasetIn(Strict):
    """A data set's fingerprint: never its rows."""

    name: str = Field(pattern=IDENT)
    kind: str = Field(pattern=IDENT)
    columns: list[Ident] = Field(min_length=1, max_length=1000)
    rows: int = Field(ge=0, le=10**12)
    labels: dict[str, int] = Field(max_length=1000)
    validation: ValidationResult
    binding: Binding | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 0 or len(k) > 100 or not k}
        if bad:
            raise ValueError(f"label histogram entries must be a non-empty label and a count >= 0: {list(bad)[:5]}")
        return v


class DataRequirements(Strict):
    dataset: str = Field(pattern=IDENT)
    columns: list[Ident] = Field(default_factory=list, max_length=1000)
    min_samples: int = Field(0, ge=0, le=10**12)
    labels: list[Ident] = Field(default_factory=list, max_length=1000)
    """The task's label set: an owner's rows must carry labels from it only."""
    validated: bool = True
    """The owner's Great Expectations suite must have passed."""


class DeviceRequirements(Strict):
    min_cpu_cores: float = Field(0, ge=0)
    min_ram_mb: float = Field(0, ge=0)
    min_storage_mb: float = Field(0, ge=0)
    min_bandwidth_mbps: float = Field(0, ge=0)


class TaskIn(Strict):
    """A training task as a requester publishes it."""

    title: str = Text
    description: str = Field("", max_length=5000)
    requirements: DataRequirements
    device: DeviceRequirements = DeviceRequirements()
    start_at: datetime | None = None
    min_owners: int = Field(1, ge=1, le=10_000)
    max_owners: int = Field(100, ge=1, le=10_000)
    config: dict[str, Any] = Field(max_length=40)
    """The training config (the sections of ``params.yaml``); the market sets the rest: the
    enrolled owners' partitions, their devices, the ledger and the reward budget."""
    initial_model: str | None = Field(None, pattern=IDENT)
    """A model registry key (``mlp``, ``small_cnn``, ...); it must be the config's model."""
    reward_budget: float = Field(0.0, ge=0, le=1e12)

    @field_validator("config", mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        _check_shape(v)
        return v

    @model_validator(mode="after")
    def _checks(self) -> "TaskIn":
        if self.max_owners < self.min_owners:
            raise ValueError(f"max_owners = {self.max_owners} is below min_owners = {self.min_owners}")
        if self.start_at is not None:
            at = self.start_at if self.start_at.tzinfo else self.start_at.replace(tzinfo=timezone.utc)
            if at.timestamp() <= time.time():
                raise ValueError(f"start_at = {self.start_at.isoformat()} is in the past; expected a future time")
            self.start_at = at
        return self


class JoinIn(Strict):
    dataset: str = Field(min_length=1, max_length=32)


class LeaveIn(Strict):
    training_id: str = Field(min_length=1, max_length=64)


MAX_DEPTH, MAX_NODES = 8, 5000


def _check_shape(value: Any) -> None:
    """A config is a small tree: at most ``MAX_DEPTH`` levels and ``MAX_NODES`` values (a YAML alias
    bomb or a self-referencing mapping stops here, before anything walks or copies it)."""
    seen = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ValueError(f"config has more than {MAX_NODES} values; a training config needs far fewer")
        if isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ValueError(f"config is nested deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
