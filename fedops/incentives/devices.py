"""Simulated devices: each client's profile (CPU cores, free RAM, free storage, bandwidth, a
compute-speed factor and a dropout probability), drawn with an explicit generator or given as a
table, and the time a round costs it on a virtual clock (no sleeping):

    compute_s = steps * step_s / speed          upload_s = bytes_up * 8 / (bandwidth_mbps * 1e6)

``step_s`` is the seconds one optimisation step takes on a device of speed 1 (the task's model
and batch size set it). Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class DeviceProfile:
    cpu_cores: float
    ram_mb: float
    storage_mb: float
    bandwidth_mbps: float
    speed: float
    """Compute speed relative to the reference device (1.0)."""
    dropout_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cpu_cores", "ram_mb", "storage_mb", "bandwidth_mbps", "speed"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"device profile: {name} must be a finite number > 0, got {v}")
        if not 0 <= self.dropout_prob <= 1:
            raise ValueError(f"device profile: dropout_prob must be in [0, 1], got {self.dropout_prob}")


def draw_profiles(num_clients: int, *, ranges: Mapping[str, tuple[float, float]],
                  rng: np.random.Generator) -> list[DeviceProfile]:
    """``num_clients`` profiles, each field uniform in its ``(low, high)`` range (every field of
    :class:`DeviceProfile` needs one; ``low == high`` fixes it)."""
    fields = ("cpu_cores", "ram_mb", "storage_mb", "bandwidth_mbps", "speed", "dropout_prob")
    missing = [f for f in fields if f not in ranges]
    unknown = sorted(set(ranges) - set(fields))
    if missing or unknown:
        raise ValueError(f"device ranges: missing {missing}, unknown {unknown}; expected {', '.join(fields)}")
    for f in fields:
        lo, hi = ranges[f]
        if not lo <= hi:
            raise ValueError(f"device ranges: {f} = ({lo}, {hi}) needs low <= high")
    cols = {f: rng.uniform(ranges[f][0], ranges[f][1], size=num_clients) for f in fields}
    return [DeviceProfile(**{f: float(cols[f][i]) for f in fields}) for i in range(num_clients)]


def client_time(profile: DeviceProfile, *, steps: int, step_s: float, bytes_up: int, bytes_down: int = 0) -> dict[str, float]:
    """A client's simulated seconds in a round: compute, download, upload and their total."""
    if steps < 0 or bytes_up < 0 or bytes_down < 0 or not step_s >= 0:
        raise ValueError(f"client_time: steps, step_s and bytes must be >= 0, got {steps}, {step_s}, {bytes_up}, {bytes_down}")
    compute = steps * step_s / profile.speed
    per_byte = 8.0 / (profile.bandwidth_mbps * 1e6)
    down, up = bytes_down * per_byte, bytes_up * per_byte
    return {"compute_s": compute, "download_s": down, "upload_s": up, "total_s": compute + down + up}


CROWDFL_TABLE2 = (
    # free RAM and storage: CrowdFL's Table 2; CPU cores, bandwidth and speed factors: fedops' own
    # choices (the table gives none), with the device of least free RAM also the slowest.
    DeviceProfile(cpu_cores=2, ram_mb=113, storage_mb=109, bandwidth_mbps=20, speed=0.75),
    DeviceProfile(cpu_cores=4, ram_mb=254, storage_mb=193, bandwidth_mbps=20, speed=1.0),
    DeviceProfile(cpu_cores=4, ram_mb=186, storage_mb=21, bandwidth_mbps=20, speed=0.95),
    DeviceProfile(cpu_cores=4, ram_mb=251, storage_mb=23, bandwidth_mbps=20, speed=0.9),
)


def profiles_for(spec, *, num_clients: int, seed: int) -> list[DeviceProfile] | None:
    """The run's device profiles from ``config.devices`` (None when off): drawn from the seed's
    device stream, given as a table, or CrowdFL's Table 2."""
    from fedops.rng import STREAM_DEVICES, numpy_rng

    if spec.source == "none":
        return None
    if spec.source == "crowdfl_table2":
        return list(CROWDFL_TABLE2)
    if spec.source == "table":
        return [DeviceProfile(**row.model_dump()) for row in spec.table]
    ranges = {name: tuple(v) for name, v in spec.ranges}
    return draw_profiles(num_clients, ranges=ranges, rng=numpy_rng(seed, STREAM_DEVICES))


def dropout_draw(*, seed: int, round_idx: int, client_id: int, prob: float) -> tuple[bool, float]:
    """Whether a client drops out in a round, and when (a fraction of its compute time): the
    round's seeded dropout stream, so a replayed round drops the same clients at the same time."""
    from fedops.rng import STREAM_DROPOUT, numpy_rng

    rng = numpy_rng(seed, STREAM_DROPOUT, round_idx, client_id)
    return bool(rng.random() < prob), float(rng.random())


def local_steps(*, num_samples: int, epochs: int, batch_size: int | None) -> int:
    """Optimisation steps of one round's local training: ``epochs * ceil(n / batch)``."""
    per_epoch = 1 if batch_size is None else math.ceil(num_samples / batch_size)
    return epochs * max(per_epoch, 1)
