"""Typed data that crosses module boundaries (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedops.lazy import torch, nn  # torch on first use: configs load without it


@dataclass(frozen=True)
class TensorSlot:
    """One tensor of a model inside the flat parameter vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True)
class ParamLayout:
    """Where each floating-point tensor of a model's state lives in the flat float32 vector.

    Covers parameters and floating buffers (e.g. BatchNorm statistics), in ``state_dict`` order,
    so that averaging flat vectors averages the whole model state.  Codecs that need structure
    (RPN pools conv kernels) view slices through :meth:`view`.
    """

    slots: tuple[TensorSlot, ...]

    @property
    def size(self) -> int:
        return self.slots[-1].offset + self.slots[-1].numel if self.slots else 0

    @classmethod
    def from_module(cls, model: nn.Module) -> "ParamLayout":
        slots, offset = [], 0
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            slots.append(TensorSlot(name, tuple(tensor.shape), offset, tensor.numel()))
            offset += tensor.numel()
        return cls(tuple(slots))

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """The model's state as one float32 vector (a copy)."""
        state = model.state_dict()
        return torch.cat([state[s.name].detach().reshape(-1).float() for s in self.slots])

    def load_into(self, model: nn.Module, vector: torch.Tensor) -> None:
        """Copy ``vector`` into the model's tensors in place."""
        if vector.ndim != 1 or vector.numel() != self.size:
            raise ValueError(f"expected a flat vector of length {self.size}, got shape {tuple(vector.shape)}")
        state = model.state_dict()
        with torch.no_grad():
            for s in self.slots:
                state[s.name].copy_(vector[s.offset : s.offset + s.numel].view(s.shape))

    def view(self, vector: torch.Tensor, name: str) -> torch.Tensor:
        for s in self.slots:
            if s.name == name:
                return vector[s.offset : s.offset + s.numel].view(s.shape)
        raise KeyError(f"no tensor {name!r} in layout; known: {[s.name for s in self.slots]}")


@dataclass(frozen=True)
class ClientUpdate:
    """What local training returns: the model delta (local - global) and how it was made."""

    client_id: int
    delta: torch.Tensor
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    group_counts: Any = None
    """FairFed: ``counts[a, y, p]`` of the global model on the client's rows (numpy), else None."""
    group_losses: Any = None
    """``client.reweighing: fairbatch_global``: ``[loss_sums[a, y], counts[a, y]]`` of the global
    model on the client's rows (numpy), what the client adds to the round's sum; else None."""
    state: Any = None
    """The client's own state after this round (FairBatch's group shares), else None: it stays on
    the client and is handed back to it next round; it is never uploaded."""


@dataclass(frozen=True)
class EncodedUpdate:
    """An update as it travels on the wire: the codec's serialised payload (``bytes``, or for the
    identity codec a read-only ``memoryview`` of the update's own float32 memory; under
    secure aggregation the quantised vector that enters the protocol) and its exact size in
    bytes. ``clip_indicator`` is client-level DP's one-byte report ``1[||u|| <= C]`` that
    adaptive clipping needs (``None`` when not sent)."""

    client_id: int
    payload: Any
    nbytes: int
    num_samples: int
    clip_indicator: int | None = None
    weight: float | None = None
    """The client's aggregation weight when a rule sets it (FairFed); None: its sample count."""


@dataclass(frozen=True)
class RoundOutcome:
    """What the server produced in one round."""

    round: int
    params: torch.Tensor
    metrics: dict[str, float]
    client_table: list[dict[str, Any]]
