"""Partition manifests: a JSON record of who holds what, and a label heat map of it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

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
    manifest: dict[str, Any], path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
    max_rows: int = 60,
) -> Path:
    """Save :func:`label_heatmap_figure` as a PNG at ``path``."""
    fig = label_heatmap_figure(manifest, class_names=class_names, max_rows=max_rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def label_heatmap_figure(manifest: dict[str, Any], *, class_names: Sequence[str] | None = None, max_rows: int = 60):
    """A heat map of per-client class counts (clients x classes) with a colour bar.

    Up to ``max_rows`` clients get a row each, labelled with integer client ids; with more clients
    consecutive clients are grouped into ``max_rows`` rows (each row: the group's summed counts,
    labelled with its id range), so 1,000 clients read as well as 20. Classes are labelled with
    ``class_names`` when given. The title (data set, partitioner and its parameters) wraps to the
    figure's width. Uses matplotlib's object API with the Agg canvas: no global backend state.
    """
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    k, n = manifest["num_clients"], manifest["num_classes"]
    counts = np.array([c["label_histogram"] for c in manifest["clients"]], dtype=np.int64).reshape(k, n)
    names = [str(c) for c in class_names] if class_names and len(class_names) == n else [str(c) for c in range(n)]
    if k > max_rows:
        edges = np.linspace(0, k, max_rows + 1).round().astype(int)
        counts = np.add.reduceat(counts, edges[:-1], axis=0)
        row_labels = [f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in zip(edges[:-1], edges[1:])]
        ylabel = f"clients (consecutive ids, {k} in {max_rows} groups)"
    else:
        row_labels = [str(i) for i in range(k)]
        ylabel = "client"
    rows = len(row_labels)
    width = max(5.0, 0.45 * n + 3.0)
    fig = Figure(figsize=(width, max(3.5, 0.16 * rows + 2.2)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label="samples" if k <= max_rows else "samples (summed over the group)")
    slanted = max(map(len, names)) > 2  # class names, not digits
    ax.set_xticks(range(n), names, rotation=45 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
    ticks = np.unique(np.linspace(0, rows - 1, min(rows, 30)).round().astype(int))  # <= 30 labels, first and last
    ax.set_yticks(ticks, [row_labels[i] for i in ticks], fontsize=7 if rows > 20 else 8)
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    params = ", ".join(f"{key}={v}" for key, v in manifest.get("params", {}).items())
    title = f"{manifest['dataset']}: label counts per client, {manifest['partitioner']}({params}), {k} clients"
    ax.set_title("\n".join(textwrap.wrap(title, width=int(width * 9))), fontsize=9)
    return fig
