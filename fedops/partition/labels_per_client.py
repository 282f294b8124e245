"""Label skew with a fixed number of classes per client ("#C=k")."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedops.partition.base import PARTITIONERS, Partition, Partitioner, near_equal_sizes


def client_class_sets(
    num_classes: int, *, num_clients: int, labels_per_client: int, rng: np.random.Generator
) -> np.ndarray:
    """``[num_clients, labels_per_client]`` array of distinct class positions per client.

    The ``num_clients * labels_per_client`` slots are filled by successive random permutations of
    the classes and client ``i`` takes slots ``i*k .. i*k+k-1``.  Where a client's window crosses
    from one permutation into the next, the next permutation starts with classes not in the
    window yet, so each client's classes are distinct.  Every class therefore appears
    ``floor`` or ``ceil`` of ``num_clients * k / num_classes`` times (all classes are covered once
    ``num_clients * k >= num_classes``).
    """
    k, total = labels_per_client, num_clients * labels_per_client
    slots = np.empty(total, dtype=np.int64)
    filled = 0
    while filled < total:
        tail = slots[filled - filled % k : filled]  # classes already in the open window
        rest = np.setdiff1d(np.arange(num_classes), tail)
        rng.shuffle(rest)
        head, rest = rest[: k - tail.size], np.concatenate([rest[k - tail.size :], tail])
        perm = np.concatenate([head, rng.permutation(rest)])
        take = min(num_classes, total - filled)
        slots[filled : filled + take] = perm[:take]
        filled += take
    return slots.reshape(num_clients, k)


def labels_per_client_assignment(
    labels: np.ndarray, *, num_clients: int, labels_per_client: int, rng: np.random.Generator
) -> np.ndarray:
    """``assignment[i] = client of sample i`` where every client holds exactly
    ``labels_per_client`` distinct classes (the "#C=k" label skew of Li et al., 2021,
    "Federated Learning on Non-IID Data Silos: An Experimental Study", as in FedLab/NIID-Bench).

    Class sets come from :func:`client_class_sets`; each class's samples are shuffled and split
    into near-equal parts among the clients holding it.  Unlike NIID-Bench, no sample is dropped:
    every class is held by at least one client, which needs ``num_clients * k >= num_classes``.
    """
    classes, inverse, class_sizes = np.unique(labels, return_inverse=True, return_counts=True)
    num_classes = classes.size
    k = labels_per_client
    if k > num_classes:
        raise ValueError(
            f"labels_per_client={k} exceeds the number of classes present ({num_classes})"
        )
    if num_clients * k < num_classes:
        raise ValueError(
            f"labels_per_client={k} with {num_clients} clients covers at most {num_clients * k} "
            f"of the {num_classes} classes; every sample must belong to a client"
        )
    sets = client_class_sets(num_classes, num_clients=num_clients, labels_per_client=k, rng=rng)
    holders_count = np.bincount(sets.ravel(), minlength=num_classes)
    short = np.flatnonzero(class_sizes < holders_count)
    if short.size:
        c = short[0]
        raise ValueError(
            f"class {classes[c]} has {class_sizes[c]} samples but is held by {holders_count[c]} "
            f"clients (labels_per_client={k}, num_clients={num_clients}); each would not get one"
        )
    slot_client = np.repeat(np.arange(num_clients, dtype=np.int64), k)
    holders_by_class = np.split(
        slot_client[np.argsort(sets.ravel(), kind="stable")], np.cumsum(holders_count)[:-1]
    )
    members_by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(class_sizes)[:-1])
    assignment = np.empty(labels.size, dtype=np.int64)
    for members, holders in zip(members_by_class, holders_by_class):
        counts = near_equal_sizes(members.size, holders.size)
        assignment[rng.permutation(members)] = np.repeat(rng.permutation(holders), counts)
    return assignment


@PARTITIONERS.register("labels_per_client")
class LabelsPerClientPartitioner(Partitioner):
    """Each client gets exactly ``labels_per_client`` classes ("#C=k", Li et al., 2021).  See
    :func:`labels_per_client_assignment`."""

    name: Literal["labels_per_client"] = "labels_per_client"
    labels_per_client: int = Field(2, ge=1)

    def _split(
        self,
        labels: np.ndarray,
        *,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> Partition:
        assignment = labels_per_client_assignment(
            labels, num_clients=num_clients, labels_per_client=self.labels_per_client, rng=rng
        )
        return Partition.from_assignment(assignment, num_clients)
