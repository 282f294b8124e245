"""The simulated world a training job runs in, loaded from a prepared work directory: the clients'
data (their partitions as index arrays), the server's test set, and what each client reported
about its own data (its Great Expectations result from the partition stage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedops.client.runtime import ClientRuntime
from fedops.config import Config
from fedops.errors import MissingInput
from fedops.evaluation import TestSet
from fedops.io import sha256_bytes
from fedops.paths import Paths


@dataclass(frozen=True, eq=False)
class World:
    runtime: ClientRuntime
    testset: TestSet
    data_failures: dict[int, list[str]] = field(default_factory=dict)
    """Clients whose own data failed validation (client id -> failed expectations), as they
    reported it; ``quality.bad_data`` decides whether they are excluded, down-weighted or kept."""
    manifest_sha256: str = ""
    holdout: list | None = None
    """Each client's held-out rows (indices into the training data; never trained on), with
    ``fairness`` on; None otherwise."""
    sensitive_train: Any = None
    sensitive_test: Any = None
    group_names: tuple[str, ...] = ()


def load_raw(cfg: Config, paths: Paths):
    raw_dir = paths.raw_dir(cfg.data.name)
    if not (raw_dir / "hashes.json").is_file():
        raise MissingInput(f"no prepared data at {raw_dir}: run the prepare stage first (fedops stage prepare)")
    return cfg.data.load_raw(raw_dir)


def client_raw(cfg: Config, raw, indices):
    """The training data as the clients hold it: with ``simulation.missing_values``, the listed
    clients' rows have gaps (see :mod:`fedops.data.corrupt`); otherwise ``raw`` itself."""
    mv = cfg.simulation.missing_values
    if not mv.clients:
        return raw
    from fedops.data.corrupt import with_missing_values

    return with_missing_values(raw, rows={c: indices[c] for c in mv.clients}, rate=mv.rate, seed=cfg.seed)


def load_world(cfg: Config, paths: Paths) -> World:
    """Data on device, partitions as index arrays, from the prepared raw data and the manifest."""
    from fedops.partition import load_manifest

    if not paths.manifest.is_file():
        raise MissingInput(f"no partition manifest at {paths.manifest}: run the partition stage first")
    manifest_bytes = paths.manifest.read_bytes()
    partition, manifest = load_manifest(paths.manifest)
    if manifest["dataset"] != cfg.data.name or manifest["num_clients"] != cfg.partition.num_clients:
        raise MissingInput(
            f"the manifest at {paths.manifest} is for {manifest['dataset']!r} with "
            f"{manifest['num_clients']} clients, the config asks for {cfg.data.name!r} with "
            f"{cfg.partition.num_clients}: rerun the partition stage"
        )
    keep = cfg.partition.keep or list(range(partition.num_clients))  # client j holds partition keep[j]
    indices = [partition.indices[k] for k in keep]
    meta = [partition.client_meta[k] for k in keep]
    bundle = cfg.data.to_bundle(client_raw(cfg, load_raw(cfg, paths), indices))
    position = {k: j for j, k in enumerate(keep)}
    failures: dict[int, list[str]] = {
        position[c["id"]]: c.get("validation_failures", ["client data validation"])
        for c in manifest["clients"] if c.get("validation") == "failed" and c["id"] in position
    }
    return world_from_bundle(cfg, bundle, partition_indices=indices, client_meta=meta,
                             data_failures=failures, manifest_sha256=sha256_bytes(manifest_bytes))


def world_from_bundle(cfg: Config, bundle: Any, *, partition_indices: list, client_meta: list | None = None,
                      data_failures: dict[int, list[str]] | None = None, manifest_sha256: str = "") -> World:
    """The world from data in memory: with ``fairness`` on, each client's rows are split into the
    rows it trains on and its held-out rows (:func:`fedops.partition.holdout.holdout_split`)."""
    indices, holdout = list(partition_indices), None
    if cfg.fairness_on:
        from fedops.partition.holdout import holdout_split

        indices, holdout = holdout_split(indices, fraction=cfg.fairness.holdout, seed=cfg.seed)
        empty = [c for c, ix in enumerate(indices) if len(ix) == 0]
        if empty:
            raise ValueError(f"clients {empty[:10]} have fewer than 2 rows: nothing left to train on after "
                             f"fairness.holdout = {cfg.fairness.holdout}")
    runtime = ClientRuntime(
        config=cfg, x_train=bundle.x_train, y_train=bundle.y_train, partition_indices=indices,
        client_meta=list(client_meta or []), input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes,
        sensitive=getattr(bundle, "sensitive_train", None),
    )
    return World(runtime=runtime, testset=TestSet(bundle.x_test, bundle.y_test, num_classes=bundle.num_classes),
                 data_failures=dict(data_failures or {}), manifest_sha256=manifest_sha256, holdout=holdout,
                 sensitive_train=getattr(bundle, "sensitive_train", None),
                 sensitive_test=getattr(bundle, "sensitive_test", None),
                 group_names=tuple(getattr(bundle, "sensitive_groups", ()) or ()))
