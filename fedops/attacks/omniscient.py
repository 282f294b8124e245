"""Model attacks of colluding omniscient clients that use the round's honest updates:
``alie`` and ``ipm``.

Statistics of the honest stack are computed in float64 and the result has the own update's
dtype and device.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import ClassVar, Literal

from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.attacks.base import ATTACKS, Attack, FiniteFloat, PositiveFloat


def alie_z_max(num_selected: int, num_malicious: int) -> float:
    """ALIE's z_max (Baruch et al. 2019, Alg. 3): ``s = floor(n/2 + 1) - f``,
    ``z = Phi^-1((n - s) / n)``.

    ``s`` is the number of honest "supporters" the attackers must win over for a majority.
    The quantile ``p = (n - s) / n`` leaves (0, 1) only in degenerate cohorts: ``p >= 1`` when the
    attackers already hold a majority (``f >= floor(n/2 + 1)``), ``p <= 0`` when ``s >= n`` (only
    ``f = 0`` with ``n <= 2``).  There ``p`` is clamped to ``[1/(2n), 1 - 1/(2n)]`` (half a client
    from either end), so ``z`` stays finite; inside that range the formula is used as is (note
    that it gives ``z <= 0`` when ``f`` is small, e.g. ``z = 0`` for ``n = 10, f = 1``).
    """
    n, f = num_selected, num_malicious
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"need n >= 1 and 0 <= f <= n, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    lo, hi = 1 / (2 * n), 1 - 1 / (2 * n)
    p = min(max(p, lo), hi)
    return NormalDist().inv_cdf(p)


@ATTACKS.register("alie")
class ALIE(Attack):
    """"A Little Is Enough" (Baruch et al., NeurIPS 2019): every malicious client sends
    ``mu - z * sigma``, with ``mu`` and ``sigma`` the coordinate-wise mean and standard deviation
    of the round's honest updates.

    ``sigma`` is the sample standard deviation (Bessel-corrected, ``k_b - 1`` in the denominator),
    as ``torch.std`` in the authors' reference code; with a single honest update it is 0.
    ``z = None`` uses :func:`alie_z_max` of the round's ``n`` and ``f``.
    """

    name: Literal["alie"] = "alie"
    needs_benign: ClassVar[bool] = True
    z: FiniteFloat | None = None

    def z_for(self, num_selected: int, num_malicious: int) -> float:
        return self.z if self.z is not None else alie_z_max(num_selected, num_malicious)

    def craft(self, own, *, view, generator):
        self._check_own(own, view)
        b = self._benign(view).to(torch.float64)
        mu = b.mean(dim=0)
        sigma = b.std(dim=0, correction=1) if b.shape[0] > 1 else torch.zeros_like(mu)
        z = self.z_for(view.num_selected, view.num_malicious)
        return (mu - z * sigma).to(dtype=own.dtype, device=own.device)


@ATTACKS.register("ipm")
class IPM(Attack):
    """Inner-Product Manipulation (Xie et al., UAI 2020): sends ``-epsilon * mean(benign)``.

    Small ``epsilon`` (the paper's 0.1-0.5) evades distance-based robust rules; large ones (> 1
    with enough attackers) reverse the aggregate's direction under the mean.
    """

    name: Literal["ipm"] = "ipm"
    needs_benign: ClassVar[bool] = True
    epsilon: PositiveFloat = 0.5

    def craft(self, own, *, view, generator):
        self._check_own(own, view)
        mu = self._benign(view).to(torch.float64).mean(dim=0)
        return (-self.epsilon * mu).to(dtype=own.dtype, device=own.device)
