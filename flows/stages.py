"""Data-side stage flows: prepare -> validate -> partition.  Each DVC stage calls one of these."""

from __future__ import annotations

from typing import Any

from prefect import flow

from fedops.config import Config, resolve_config
from fedops.errors import MissingInput, ValidationFailed
from fedops.io import write_json_atomic
from fedops.paths import Paths
from fedops.round.world import client_raw, load_raw


def _cfg(config: str | dict[str, Any] | Config, overrides: dict[str, Any] | None = None) -> Config:
    """A flow's config: a preset name or YAML path, or a mapping, with dotted-key overrides."""
    return resolve_config(config, overrides)


@flow(name="prepare-data")
def prepare_flow(config: dict[str, Any], workdir: str = ".") -> dict[str, Any]:
    """Copy the raw data set files into ``data/raw/<dataset>/`` and record their hashes.

    System data extracted by the bootstrap script, and relative ``data.path`` values, are
    found from the project home (the repository), whatever the work directory."""
    from fedops.env import project_home

    cfg, paths = _cfg(config), Paths.at(workdir)
    return cfg.data.prepare(raw_dir=paths.raw_dir(cfg.data.name), project_dir=project_home())


@flow(name="validate-data")
def validate_flow(config: dict[str, Any], workdir: str = ".") -> dict[str, Any]:
    """Great Expectations on the whole data set. A failure writes the report, then stops."""
    from fedops.data import DataError, validate_dataset, write_report

    cfg, paths = _cfg(config), Paths.at(workdir)
    out = paths.validation_report
    if not cfg.validation.enabled:
        write_json_atomic({"dataset": cfg.data.name, "success": True, "skipped": True, "reports": []}, out)
        return {"success": True, "skipped": True}
    try:
        raw = load_raw(cfg, paths)
    except DataError as exc:
        write_json_atomic({"dataset": cfg.data.name, "success": False, "error": str(exc), "reports": []}, out)
        raise ValidationFailed(f"data validation failed: {exc} (report: {out})") from None
    reports = validate_dataset(cfg.data, raw)
    write_report(reports, out)
    failed = [r for r in reports if not r.success]
    if failed:
        from fedops.data.validation import failed_expectations

        what = "; ".join(f"{r.name}: {', '.join(failed_expectations(r))}" for r in failed)
        raise ValidationFailed(f"data validation failed: {what} (report: {out})")
    return {"success": True, "reports": len(reports)}


@flow(name="partition-data")
def partition_flow(config: dict[str, Any], workdir: str = ".") -> dict[str, Any]:
    """Split the training set over clients, write the manifest and heatmap, validate each client."""
    import numpy as np

    from fedops.partition import build_manifest, partition_labels, plot_label_heatmap, save_manifest

    cfg, paths = _cfg(config), Paths.at(workdir)
    _require_validated(paths)
    raw = load_raw(cfg, paths)
    bundle = cfg.data.to_bundle(raw)
    labels = bundle.y_train.numpy()
    spec = cfg.partition
    check_client_count(cfg, num_train=len(labels))
    part = partition_labels(
        spec.partitioner, labels, num_clients=spec.num_clients, seed=cfg.seed, groups=partition_groups(cfg, bundle)
    )
    manifest = build_manifest(
        part, labels, dataset=cfg.data.name, partitioner=spec.partitioner, seed=cfg.seed,
        num_classes=bundle.num_classes,
    )
    client_summary: dict[str, Any] = {"enabled": False}
    if cfg.validation.enabled and cfg.validation.clients:
        from fedops.data import failed_expectations, validate_clients, write_report

        reports = validate_clients(cfg.data, client_raw(cfg, raw, part.indices), part.indices)
        write_report(reports, paths.client_validation_report)
        failing = {i: r for i, r in enumerate(reports) if not r.success}
        client_summary = {"enabled": True, "failed_clients": sorted(failing)}
        for i, c in enumerate(manifest["clients"]):
            c["validation"] = "passed" if i not in failing else "failed"
            if i in failing:
                c["validation_failures"] = failed_expectations(failing[i])
    else:
        write_json_atomic({"enabled": False, "reports": []}, paths.client_validation_report)
    save_manifest(manifest, paths.manifest)
    plot_label_heatmap(manifest, paths.heatmap, class_names=bundle.class_names)
    sizes = np.array([c["size"] for c in manifest["clients"]])
    return {
        "num_clients": len(sizes),
        "min_size": int(sizes.min()),
        "max_size": int(sizes.max()),
        "clients_validation": client_summary,
    }


def partition_groups(cfg: Config, bundle: Any):
    """What a partitioner groups by: a named column (``natural_id`` with ``column``), the sensitive
    attribute (``sensitive_dirichlet``), or the data set's own group ids."""
    from fedops.config import ConfigError

    partitioner = cfg.partition.partitioner
    column = getattr(partitioner, "column", None)
    if column is not None:
        if not bundle.columns_train or column not in bundle.columns_train:
            known = ", ".join(bundle.columns_train or ()) or "none"
            raise ConfigError(f"partition.column = {column!r} is not a categorical column of {cfg.data.name!r} "
                              f"(known: {known})")
        return bundle.columns_train[column]
    if getattr(partitioner, "uses_sensitive", False):
        return bundle.sensitive_train
    return bundle.groups_train


def check_client_count(cfg: Config, *, num_train: int) -> None:
    """Refuse, in one line, more clients than the training set can give each at least
    ``min_size`` examples (1 for partitioners without one)."""
    from fedops.config import ConfigError

    spec = cfg.partition
    per_client = max(1, int(getattr(spec.partitioner, "min_size", 1) or 1))
    if spec.num_clients * per_client > num_train:
        raise ConfigError(
            f"partition.num_clients = {spec.num_clients} needs at least {spec.num_clients * per_client} training "
            f"examples ({per_client} per client), but {cfg.data.name!r} has {num_train}; allowed: "
            f"1..{num_train // per_client} clients"
        )


def _require_validated(paths: Paths) -> None:
    import json

    report = paths.validation_report
    if not report.is_file():
        raise MissingInput(f"no validation report at {report}: run the validate stage first")
    if not json.loads(report.read_text()).get("success", False):
        raise ValidationFailed(f"the data failed validation ({report}); fix the data before partitioning")
