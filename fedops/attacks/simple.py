"""Model attacks that need nothing but the client's own update: ``none``, ``sign_flip``,
``gaussian`` and ``free_rider``."""

from __future__ import annotations

from typing import Literal

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.attacks.base import ATTACKS, Attack, PositiveFloat


@ATTACKS.register("none")
class NoAttack(Attack):
    """Honest: sends its own update (the same tensor, not a copy)."""

    name: Literal["none"] = "none"


@ATTACKS.register("sign_flip")
class SignFlip(Attack):
    """Sends ``-scale * own`` (reversed-gradient attack, e.g. Damaskinos et al. 2018)."""

    name: Literal["sign_flip"] = "sign_flip"
    scale: PositiveFloat = 1.0

    def craft(self, own, *, view, generator):
        self._check_own(own, view)
        return own * (-self.scale)


@ATTACKS.register("gaussian")
class GaussianNoise(Attack):
    """Sends ``N(0, std^2 I)`` ignoring its own update (Blanchard et al. 2017's Gaussian attack).

    ``std`` is absolute, in the units of the update.  The noise is drawn on the generator's device
    in the update's dtype and moved to the update's device, so it depends only on the generator.
    """

    name: Literal["gaussian"] = "gaussian"
    std: PositiveFloat = 1.0

    def craft(self, own, *, view, generator):
        self._check_own(own, view)
        dtype = own.dtype if own.is_floating_point() else torch.float32
        noise = torch.randn(own.shape, generator=generator, device=generator.device, dtype=dtype)
        return (noise * self.std).to(own.device)


@ATTACKS.register("free_rider")
class FreeRider(Attack):
    """Sends a zero update: reports the global model back unchanged (Lin et al. 2019)."""

    name: Literal["free_rider"] = "free_rider"

    def craft(self, own, *, view, generator):
        self._check_own(own, view)
        return torch.zeros_like(own)
