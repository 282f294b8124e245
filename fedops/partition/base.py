"""The partitioner plug-in family: a partition is one sorted index array per client.

A partitioner is a pure function of ``(labels, num_clients, rng[, groups])``: it never looks at
the data itself, never copies it, and draws every random number from the explicit
``numpy.random.Generator`` it is given, so the same seed always gives the same partition.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedops.registry import PluginModel, Registry

PARTITIONERS: Registry = Registry("partitioner", entry_points="fedops.partitioners")


@dataclass(frozen=True, eq=False)
class Partition:
    """Which sample indices each client holds (client id = position in ``indices``).

    ``indices`` holds one sorted, read-only ``int64`` array per client.  ``client_meta`` holds one
    dict per client with feature-transform parameters (``feature_skew``) or descriptive metadata
    (``natural_id``); it is ``{}`` for label and quantity partitioners and defaults to that.
    """

    indices: tuple[np.ndarray, ...]
    client_meta: tuple[dict, ...] = field(default=())

    def __post_init__(self) -> None:
        arrays = []
        for client, idx in enumerate(self.indices):
            arr = np.asarray(idx)
            if arr.size == 0:
                arr = np.empty(0, dtype=np.int64)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise ValueError(
                    f"client {client}: indices must be a 1-D integer array, got dtype "
                    f"{arr.dtype} with shape {arr.shape}"
                )
            arr = arr.astype(np.int64, copy=True)
            if arr.size > 1 and np.any(arr[1:] < arr[:-1]):
                arr.sort()
            arr.setflags(write=False)
            arrays.append(arr)
        meta = tuple(dict(m) for m in self.client_meta) or tuple({} for _ in arrays)
        if len(meta) != len(arrays):
            raise ValueError(
                f"client_meta has {len(meta)} entries but there are {len(arrays)} clients"
            )
        object.__setattr__(self, "indices", tuple(arrays))
        object.__setattr__(self, "client_meta", meta)

    @classmethod
    def from_assignment(
        cls, assignment: np.ndarray, num_clients: int, client_meta: tuple[dict, ...] = ()
    ) -> "Partition":
        """Build a partition from ``assignment[i] = client of sample i`` (vectorised)."""
        assignment = np.asarray(assignment, dtype=np.int64)
        counts = np.bincount(assignment, minlength=num_clients)
        if counts.size != num_clients:
            raise ValueError(f"assignment names client {assignment.max()} >= {num_clients}")
        order = np.argsort(assignment, kind="stable")  # ascending sample index within a client
        return cls(tuple(np.split(order, np.cumsum(counts)[:-1])), client_meta)

    @property
    def num_clients(self) -> int:
        return len(self.indices)

    def sizes(self) -> np.ndarray:
        """Number of samples per client, as an ``int64`` array."""
        return np.array([idx.size for idx in self.indices], dtype=np.int64)

    def label_counts(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """``[num_clients, num_classes]`` matrix of per-client class counts."""
        labels = np.asarray(labels)
        if not self.indices:
            return np.zeros((0, num_classes), dtype=np.int64)
        return np.stack([np.bincount(labels[idx], minlength=num_classes) for idx in self.indices])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Partition):
            return NotImplemented
        return (
            self.num_clients == other.num_clients
            and all(np.array_equal(a, b) for a, b in zip(self.indices, other.indices))
            and self.client_meta == other.client_meta
        )

    __hash__ = None  # type: ignore[assignment]


def check_labels(labels: Any) -> np.ndarray:
    """Labels as a 1-D non-negative integer array, or ``ValueError`` saying what is wrong."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.min() < 0:
        raise ValueError(f"labels must be non-negative, got {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def check_num_clients(num_clients: Any, num_samples: int) -> int:
    """``num_clients`` as an int in ``[1, num_samples]``, or ``ValueError``."""
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise ValueError(f"num_clients must be an integer, got {num_clients!r}")
    k = int(num_clients)
    if k < 1:
        raise ValueError(f"num_clients must be >= 1, got {k}")
    if k > num_samples:
        raise ValueError(f"num_clients={k} exceeds the number of samples ({num_samples})")
    return k


def near_equal_sizes(n: int, k: int) -> np.ndarray:
    """Sizes of ``k`` parts of ``n`` items that differ by at most one (larger parts first)."""
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    return sizes


def iid_assignment(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random ``assignment[i] = client`` with near-equal client sizes."""
    assignment = np.empty(n, dtype=np.int64)
    assignment[rng.permutation(n)] = np.repeat(np.arange(k, dtype=np.int64), near_equal_sizes(n, k))
    return assignment


class Partitioner(PluginModel):
    """A partitioner plug-in: hyperparameters are pydantic fields, ``split`` does the work.

    ``split`` checks its inputs (``ValueError`` naming the bad value) and calls the subclass's
    ``_split`` with a validated ``int64`` label array and ``num_clients``.
    """

    def split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None = None,
    ) -> Partition:
        """Partition ``range(len(labels))`` among ``num_clients`` clients."""
        labels = check_labels(labels)
        num_clients = check_num_clients(num_clients, labels.size)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != labels.shape:
                raise ValueError(
                    f"groups must have the same shape as labels {labels.shape}, got {groups.shape}"
                )
        return self._split(labels, num_clients=num_clients, rng=rng, groups=groups)

    @abstractmethod
    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        """Subclass hook; inputs are already validated."""
