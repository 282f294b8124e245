"""Attack-simulation plug-ins (key -> class in :data:`ATTACKS`): ``none``, ``sign_flip``,
``gaussian``, ``free_rider``, ``alie``, ``ipm``, ``label_flip``, ``backdoor``."""

from fedops.attacks import backdoor, data, omniscient, simple  # noqa: F401  (registration)
from fedops.attacks.backdoor import Backdoor, apply_trigger, backdoor_accuracy
from fedops.attacks.base import ATTACKS, Attack, RoundView
from fedops.attacks.data import LabelFlip
from fedops.attacks.omniscient import ALIE, IPM, alie_z_max
from fedops.attacks.population import STREAM_MALICIOUS, choose_malicious
from fedops.attacks.simple import FreeRider, GaussianNoise, NoAttack, SignFlip

__all__ = [
    "ALIE",
    "ATTACKS",
    "IPM",
    "STREAM_MALICIOUS",
    "Attack",
    "Backdoor",
    "FreeRider",
    "GaussianNoise",
    "LabelFlip",
    "NoAttack",
    "RoundView",
    "SignFlip",
    "alie_z_max",
    "apply_trigger",
    "backdoor_accuracy",
    "choose_malicious",
]
