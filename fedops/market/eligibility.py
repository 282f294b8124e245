"""Whether an owner's data set and device meet a task's requirements: a pure function that names
every unmet requirement (an empty list: eligible)."""

from __future__ import annotations

from typing import Any


def binding_of(config: Any) -> dict[str, Any]:
    """The partitioning a validated config (:class:`fedops.config.Config`) splits its data set
    with, as an owner's binding states it (without the owner's partition)."""
    return {"num_clients": config.partition.num_clients,
            "partitioner": config.partition.partitioner.model_dump(mode="json"), "seed": config.seed}


def unmet(*, spec: dict[str, Any], fingerprint: dict[str, Any], device: dict[str, Any] | None) -> list[str]:
    """Every requirement of the task (``spec``: a published :class:`TaskIn` as JSON, with the
    ``binding`` of its config) that the data set (``fingerprint``) or the device fails."""
    req, why = spec["requirements"], []
    if fingerprint["kind"] != req["dataset"]:
        why.append(f"data set kind is {fingerprint['kind']!r}; the task needs {req['dataset']!r}")
    missing = [c for c in req.get("columns", []) if c not in fingerprint["columns"]]
    if missing:
        why.append(f"missing required columns: {', '.join(missing)}")
    if fingerprint["rows"] < req.get("min_samples", 0):
        why.append(f"{fingerprint['rows']} samples; the task needs at least {req['min_samples']}")
    if req.get("labels"):
        extra = sorted(k for k, n in fingerprint["labels"].items() if n > 0 and k not in req["labels"])
        if extra:
            why.append(f"labels {', '.join(extra)} are outside the task's label set {{{', '.join(req['labels'])}}}")
    if req.get("validated", True) and not fingerprint["validation"]["success"]:
        failed = ", ".join(fingerprint["validation"].get("failed", [])[:5]) or "its suite"
        why.append(f"the data set failed validation ({failed}); the task needs a validated data set")
    need = spec.get("device") or {}
    names = {"min_cpu_cores": ("cpu_cores", "CPU cores"), "min_ram_mb": ("ram_mb", "MB of RAM"),
             "min_storage_mb": ("storage_mb", "MB of storage"), "min_bandwidth_mbps": ("bandwidth_mbps", "Mbit/s")}
    for key, (field, unit) in names.items():
        if need.get(key, 0) > 0:
            have = None if device is None else device.get(field)
            if have is None:
                why.append(f"no device profile; the task needs at least {need[key]:g} {unit}")
                break
            if have < need[key]:
                why.append(f"device has {have:g} {unit}; the task needs at least {need[key]:g} {unit}")
    binding = fingerprint.get("binding")
    if binding is not None:
        want = spec["binding"]
        have = {k: binding.get(k) for k in want}
        if have != want:
            why.append(f"the data set is a partition of {have}; the task trains on partitions of {want}")
    else:
        why.append("the data set has no simulation binding: this market trains on the owners' partitions of "
                   "a data set prepared on the service's machine")
    return why
