"""Differential privacy for fedops: clipping, client-level DP-FedAvg (with adaptive clipping),
Opacus-backed accounting, and sample-level DP-SGD inside a client (``fedops.privacy.local_dp``,
imported on use: opacus takes seconds to import)."""

from fedops.privacy.accountant import (
    ACCOUNTANTS,
    PRV,
    RDP,
    Accountant,
    PrivacyLedger,
    solve_noise_multiplier,
)
from fedops.privacy.clipping import clip_by_norm
from fedops.privacy.randomness import PrivacyRandomness
from fedops.privacy.dp_fedavg import (
    DPFedAvg,
    DPFedAvgConfig,
    effective_noise_multiplier,
    split_noise_multiplier,
)

__all__ = [
    "ACCOUNTANTS",
    "PRV",
    "RDP",
    "Accountant",
    "DPFedAvg",
    "DPFedAvgConfig",
    "PrivacyLedger",
    "PrivacyRandomness",
    "clip_by_norm",
    "effective_noise_multiplier",
    "solve_noise_multiplier",
    "split_noise_multiplier",
]
