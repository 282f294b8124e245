"""A simulated data owner's side: the data set prepared on this machine (the same data stages as
the pipeline), split into partitions, each described by the fingerprint an owner registers: its
schema, row count, label histogram, the result of its Great Expectations suite and its binding
(which partition of which partitioning it is). The rows never leave the owner's side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedops.config import Config
from fedops.market.eligibility import binding_of


def prepare(cfg: Config, workdir: Path) -> None:
    """Prepare, validate and partition the data set in ``workdir`` (Prefect flows, as the pipeline)."""
    from flows.pipeline import run_stage

    for stage in ("prepare", "validate", "partition"):
        run_stage(stage, cfg, str(workdir), wait=True)


def fingerprints(cfg: Config, workdir: Path, *, name: str = "data") -> list[dict[str, Any]]:
    """One fingerprint per partition of the prepared data set (``prepare`` first)."""
    import json

    from fedops.paths import Paths

    paths = Paths.at(workdir)
    manifest = json.loads(paths.manifest.read_text())
    raw = cfg.data.load_raw(paths.raw_dir(cfg.data.name))
    bundle = cfg.data.to_bundle(raw)
    frame = getattr(raw, "frame_train", None)
    columns = [str(c) for c in frame.columns] if frame is not None else \
        [f"x{i}" for i in range(int(bundle.x_train[0].numel()))]
    suite = f"fedops {cfg.data.name} client suite"
    binding = binding_of(cfg)
    out = []
    for c in manifest["clients"]:
        failed = [str(f)[:200] for f in c.get("validation_failures", [])][:200]
        out.append({
            "name": f"{name}-{c['id']}", "kind": cfg.data.name, "columns": columns, "rows": int(c["size"]),
            "labels": {str(bundle.class_names[k]): int(n) for k, n in enumerate(c["label_histogram"])},
            "validation": {"suite": suite, "success": c.get("validation", "passed") != "failed", "failed": failed},
            "binding": {**binding, "partition": int(c["id"])},
        })
    return out
