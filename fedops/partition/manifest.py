"""Partition manifests: a JSON record of who holds what, and a label heat map of it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fedops.partition.base import Partition, Partitioner, check_labels

_REQUIRED_KEYS = ("dataset", "partitioner", "params", "seed", "num_clients", "num_samples",
                  "num_classes", "clients")


def build_manifest(
    partition: Partition,
    labels: np.ndarray,
    *,
    dataset: str,
    partitioner: Partitioner,
    seed: int,
    num_classes: int,
) -> dict[str, Any]:
    """A JSON-ready dict describing ``partition`` of a dataset with these ``labels``.

    Per client: ``id``, ``size``, ``label_histogram`` (counts per class ``0..num_classes-1``),
    ``meta`` (its ``client_meta``) and ``indices`` (sorted sample indices).
    """
    labels = check_labels(labels)
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"label {int(labels.max())} is out of range for num_classes={num_classes}")
    for client, idx in enumerate(partition.indices):
        if idx.size and (idx[0] < 0 or idx[-1] >= labels.size):
            bad = idx[0] if idx[0] < 0 else idx[-1]
            raise ValueError(f"client {client}: index {int(bad)} out of range for {labels.size} labels")
    counts = partition.label_counts(labels, num_classes)
    return {
        "dataset": dataset,
        "partitioner": partitioner.name,
        "params": partitioner.params(),
        "seed": int(seed),
        "num_clients": partition.num_clients,
        "num_samples": int(labels.size),
        "num_classes": int(num_classes),
        "clients": [
            {
                "id": i,
                "size": int(idx.size),
                "label_histogram": counts[i].tolist(),
                "meta": dict(meta),
                "indices": idx.tolist(),
            }
            for i, (idx, meta) in enumerate(zip(partition.indices, partition.client_meta))
        ],
    }


def save_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``manifest`` as JSON atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, separators=(",", ":")) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_manifest(path: str | os.PathLike) -> tuple[Partition, dict[str, Any]]:
    """Read a manifest and rebuild its :class:`Partition`.

    ``ValueError`` (naming the client and index) if an index is out of ``[0, num_samples)`` or
    appears twice, within one client or across clients, or if the record is malformed.
    """
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    missing = [k for k in _REQUIRED_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise ValueError(f"manifest {path}: missing keys {missing}")
    clients, n = manifest["clients"], manifest["num_samples"]
    if len(clients) != manifest["num_clients"]:
        raise ValueError(
            f"manifest {path}: num_clients={manifest['num_clients']} but {len(clients)} clients listed"
        )
    arrays, metas = [], []
    for position, client in enumerate(clients):
        if client.get("id") != position:
            raise ValueError(f"manifest {path}: client at position {position} has id {client.get('id')!r}")
        raw = np.asarray(client.get("indices", []))
        if raw.size == 0:
            raw = np.empty(0, dtype=np.int64)
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise ValueError(f"manifest {path}: client {position} indices are not a list of integers")
        bad = raw[(raw < 0) | (raw >= n)]
        if bad.size:
            raise ValueError(
                f"manifest {path}: client {position} has index {int(bad[0])} outside [0, {n})"
            )
        if client.get("size", raw.size) != raw.size:
            raise ValueError(
                f"manifest {path}: client {position} size={client.get('size')} but {raw.size} indices"
            )
        arrays.append(raw.astype(np.int64))
        metas.append(client.get("meta", {}))
    if arrays:
        flat = np.concatenate(arrays)
        owner = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])
        order = np.argsort(flat, kind="stable")
        dup = np.flatnonzero(flat[order][1:] == flat[order][:-1])
        if dup.size:
            first, second = owner[order[dup[0]]], owner[order[dup[0] + 1]]
            raise ValueError(
                f"manifest {path}: index {int(flat[order[dup[0]]])} appears twice (clients "
                f"{int(first)} and {int(second)})"
            )
    return Partition(tuple(arrays), tuple(metas)), manifest


def plot_label_heatmap(
    manifest: dict[str, Any], path: str | os.PathLike, *, max_clients: int = 100
) -> Path:
    """Save a PNG heat map of per-client class counts (clients x classes) with a colour bar.

    Shows the first ``max_clients`` clients; the title names the partitioner and its params.
    Uses matplotlib's object API with the Agg canvas, so no global backend state is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if max_clients < 1:
        raise ValueError(f"max_clients must be >= 1, got {max_clients}")
    clients = manifest["clients"][:max_clients]
    counts = np.array([c["label_histogram"] for c in clients], dtype=np.int64).reshape(
        len(clients), manifest["num_classes"]
    )
    params = ", ".join(f"{k}={v}" for k, v in manifest.get("params", {}).items())
    shown = "" if len(clients) == manifest["num_clients"] else (
        f" (first {len(clients)} of {manifest['num_clients']} clients)"
    )
    fig = Figure(figsize=(max(4.0, 0.4 * counts.shape[1] + 2.5), max(3.0, 0.12 * len(clients) + 2.0)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label="samples")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title(f"{manifest['dataset']}: {manifest['partitioner']}({params}){shown}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
