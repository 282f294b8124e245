"""Differential privacy for fedops: clipping, client-level DP-FedAvg (with adaptive clipping),
Opacus-backed accounting, and sample-level DP-SGD inside a client."""

from fedops.privacy.accountant import (
    ACCOUNTANTS,
    PRV,
    RDP,
    Accountant,
    PrivacyLedger,
    solve_noise_multiplier,
)
from fedops.privacy.clipping import clip_by_norm
from fedops.privacy.dp_fedavg import (
    DPFedAvg,
    DPFedAvgConfig,
    effective_noise_multiplier,
    split_noise_multiplier,
)
from fedops.privacy.local_dp import dp_sgd_train, offending_modules

__all__ = [
    "ACCOUNTANTS",
    "PRV",
    "RDP",
    "Accountant",
    "DPFedAvg",
    "DPFedAvgConfig",
    "PrivacyLedger",
    "clip_by_norm",
    "dp_sgd_train",
    "effective_noise_multiplier",
    "offending_modules",
    "solve_noise_multiplier",
    "split_noise_multiplier",
]
