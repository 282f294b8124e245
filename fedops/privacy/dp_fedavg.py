"""Client-level DP-FedAvg with optional adaptive clipping.

Aggregation (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models",
Alg. 1, fixed-denominator estimator ``f_f``)::

    Δ = ( Σ_i clip(u_i, C) + N(0, (z_Δ C)² I) ) / (q N)

where ``q N`` is the *expected* cohort size, not the realised count, so one client's presence
changes the numerator by at most ``C`` and the sensitivity analysis holds.  Updates are
unweighted (each client contributes at most ``C``).

Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping", Alg. 1, geometric update)::

    b̃ = ( Σ_i 1[||u_i|| <= C] + N(0, σ_b²) ) / (q N)
    C ← C · exp(-η (b̃ - γ))

The count is a second Gaussian query; by the paper's Thm 1 the pair is equivalent to one
Gaussian mechanism with ``z_eff = (z_Δ^-2 + (2 σ_b)^-2)^-1/2``.  The configured
``noise_multiplier`` is that overall ``z`` (what the accountant is told); the update noise uses
``z_Δ = (z^-2 - (2 σ_b)^-2)^-1/2``, which needs ``2 σ_b > z`` (refused otherwise).

Exactness: with ``noise_multiplier=0`` and ``clip_norm=inf`` (non-adaptive) no noise is drawn
and the result is ``(1ᵀ U) / expected_cohort`` accumulated in float64, i.e. the plain unweighted
mean times ``k / expected_cohort``; with ``expected_cohort = k`` it is bit-for-bit
``fedops.aggregate.fedavg.weighted_mean(updates, ones)`` (unweighted FedAvg).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

from fedops.lazy import torch  # torch on first use: configs load without it
from pydantic import ConfigDict, Field

from fedops.privacy.accountant import ACCOUNTANTS, PrivacyLedger, check_delta
from fedops.privacy.clipping import check_updates, clip_by_norm
from fedops.registry import PluginModel

Noise = Callable[[int], "torch.Tensor"]
"""Draws ``n`` standard normal values (float64); each call draws fresh ones. In fedops it is
:meth:`fedops.privacy.randomness.PrivacyRandomness.gaussian`: the OS CSPRNG, or the research
mode's seeded stream."""


def _normals(noise: Noise, count: int) -> torch.Tensor:
    z = noise(count)
    if not isinstance(z, torch.Tensor) or z.shape != (count,):
        raise ValueError(f"noise({count}) must return a tensor of shape ({count},), got {getattr(z, 'shape', type(z))}")
    return z.to(torch.float64)


def effective_noise_multiplier(noise_multiplier_delta: float, clip_count_stddev: float) -> float:
    """``z_eff = (z_Δ^-2 + (2 σ_b)^-2)^-1/2`` (Andrew et al. 2021, Thm 1); 0 if either is 0."""
    z_d, s_b = float(noise_multiplier_delta), float(clip_count_stddev)
    if z_d < 0 or s_b < 0:
        raise ValueError(f"noise multipliers must be >= 0, got z_delta={z_d!r}, sigma_b={s_b!r}")
    if z_d == 0 or s_b == 0:
        return 0.0
    return (z_d**-2 + (2 * s_b) ** -2) ** -0.5


def split_noise_multiplier(noise_multiplier: float, clip_count_stddev: float) -> float:
    """The update's ``z_Δ = (z^-2 - (2 σ_b)^-2)^-1/2`` so that the overall ``z_eff == z``.

    ``z = 0`` (no privacy) gives 0.  Raises ``ValueError`` when ``2 σ_b <= z``: the count query
    alone would already use more than the budget of a ``z`` mechanism.
    """
    z, s_b = float(noise_multiplier), float(clip_count_stddev)
    if z < 0 or s_b < 0 or math.isnan(z) or math.isnan(s_b):
        raise ValueError(f"noise multipliers must be >= 0, got z={noise_multiplier!r}, sigma_b={clip_count_stddev!r}")
    if z == 0:
        return 0.0
    if 2 * s_b <= z:
        raise ValueError(
            f"clip_count_stddev sigma_b={clip_count_stddev!r} is too small for noise_multiplier "
            f"z={noise_multiplier!r}: adaptive clipping needs 2*sigma_b > z"
        )
    return (z**-2 - (2 * s_b) ** -2) ** -0.5


class DPFedAvgConfig(PluginModel):
    """Hyperparameters of :class:`DPFedAvg` (the state lives in the ``DPFedAvg`` object)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True)  # clip_norm=inf: no clipping

    name: Literal["dp_fedavg"] = "dp_fedavg"
    noise_multiplier: float = Field(ge=0)
    """Overall ``z``: what the accountant is told (update + clip-count noise together)."""
    clip_norm: float = Field(default=0.1, gt=0)
    """Fixed ``C``, or the initial ``C0`` when adaptive (paper default 0.1); ``inf`` disables."""
    adaptive: bool = False
    target_quantile: float = Field(default=0.5, ge=0, le=1)
    clip_lr: float = Field(default=0.2, ge=0)
    clip_count_stddev: float | None = Field(default=None, ge=0)
    """``σ_b``; ``None`` means ``expected_cohort / 20`` per round (paper default)."""
    population: int | None = Field(default=None, ge=1)
    """``N``: when given, each round is accounted with sample rate ``expected_cohort / N``."""
    accountant: str = "rdp"
    delta: float = 1e-5


class DPFedAvg:
    """Stateful DP-FedAvg aggregator: the clip norm and the privacy ledger live across rounds."""

    def __init__(self, config: DPFedAvgConfig | dict | None = None, **kwargs: Any) -> None:
        if config is None:
            config = DPFedAvgConfig(**kwargs)
        elif isinstance(config, dict):
            config = DPFedAvgConfig(**{**config, **kwargs})
        elif kwargs:
            raise ValueError(f"pass either a config or keyword arguments, not both (got {sorted(kwargs)})")
        self.config = config
        check_delta(config.delta)
        ACCOUNTANTS.get(config.accountant)  # unknown key: ValueError listing the known ones
        if config.adaptive and math.isinf(config.clip_norm):
            raise ValueError("adaptive clipping needs a finite initial clip_norm, got inf")
        if config.noise_multiplier > 0 and math.isinf(config.clip_norm):
            raise ValueError(
                f"noise_multiplier={config.noise_multiplier!r} needs a finite clip_norm (noise std is z*C), got inf"
            )
        if config.adaptive and config.clip_count_stddev is not None:
            split_noise_multiplier(config.noise_multiplier, config.clip_count_stddev)  # fail early
        self.clip_norm = float(config.clip_norm)
        self.rounds = 0
        self.ledger = PrivacyLedger(config.accountant, config.delta) if config.population else None

    def clip_count_stddev(self, expected_cohort: float) -> float:
        if not self.config.adaptive:
            return 0.0
        if self.config.clip_count_stddev is not None:
            return float(self.config.clip_count_stddev)
        return expected_cohort / 20.0

    def noise_multiplier_delta(self, expected_cohort: float) -> float:
        """Noise multiplier of the update sum (``z`` unless adaptive clipping takes a share)."""
        if not self.config.adaptive:
            return float(self.config.noise_multiplier)
        return split_noise_multiplier(self.config.noise_multiplier, self.clip_count_stddev(expected_cohort))

    def epsilon(self) -> float | None:
        return None if self.ledger is None else self.ledger.epsilon()

    def aggregate(
        self, updates: torch.Tensor, *, expected_cohort: float, noise: Noise, unclipped: int | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One round: the noised average ``[d]`` and metrics; updates the clip norm and ledger.

        ``unclipped`` (how many clients had ``||u|| <= C`` before they clipped on their device)
        replaces the count taken from ``updates`` when the clients clipped already. The server
        clips again (a codec may have changed the norm) with the one clipping implementation,
        :func:`fedops.privacy.clipping.clip_by_norm`."""
        check_updates(updates)
        clipped, norms = clip_by_norm(updates, max_norm=self.clip_norm)
        k = updates.shape[0]
        ones = torch.ones(k, dtype=torch.float64, device=updates.device)
        total = ones @ clipped.to(torch.float64)
        if unclipped is None:
            unclipped = int((norms.to(torch.float64) <= self.clip_norm).sum())
        average, metrics = self.noised_average(
            total, unclipped=unclipped, cohort=k, expected_cohort=expected_cohort, noise=noise,
        )
        return average.to(updates.dtype), metrics

    def noised_average(
        self, total: torch.Tensor, *, unclipped: int | None, cohort: int, expected_cohort: float, noise: Noise
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The server's half of a round whose clipping happened on the clients (under secure
        aggregation the server only ever sees ``total``, the sum of the ``cohort`` clipped
        updates, and ``unclipped``, how many had ``||u|| <= C``, which is needed, and used noised,
        only by adaptive clipping; ``None`` when the clients did not send it). Adds
        ``N(0, (z_Δ C)^2 I)`` to ``total`` (standard normals from ``noise``), divides by the
        expected cohort, then updates the clip norm and the ledger. Returns a float64 ``[d]``
        average and metrics that are functions of the noised outputs and public parameters only
        (nothing computed from an individual update or the exact count)."""
        if not isinstance(total, torch.Tensor) or total.ndim != 1 or not total.is_floating_point():
            raise ValueError(f"total must be a 1-D floating tensor, got {getattr(total, 'shape', type(total))}")
        if not bool(torch.isfinite(total).all()):
            raise ValueError("total contains non-finite values (nan or inf)")
        if unclipped is None and self.config.adaptive:
            raise ValueError("adaptive clipping needs the count of unclipped updates, got unclipped=None")
        if cohort < 1 or not (unclipped is None or 0 <= unclipped <= cohort):
            raise ValueError(f"need cohort >= 1 and 0 <= unclipped <= cohort, got cohort={cohort}, unclipped={unclipped}")
        m = float(expected_cohort)
        if not math.isfinite(m) or m <= 0:
            raise ValueError(f"expected_cohort must be a finite number > 0, got {expected_cohort!r}")
        sample_rate = None
        if self.config.population is not None:
            sample_rate = m / self.config.population
            if sample_rate > 1:
                raise ValueError(
                    f"expected_cohort={expected_cohort!r} exceeds population={self.config.population}"
                )
        if not callable(noise):
            raise ValueError(f"noise must be a callable drawing standard normals, got {type(noise).__name__}")
        z_delta = self.noise_multiplier_delta(m)
        sigma_b = self.clip_count_stddev(m)

        c = self.clip_norm
        total = total.to(torch.float64)
        noise_std_sum = z_delta * c if z_delta > 0 else 0.0
        if noise_std_sum > 0:
            total = total + _normals(noise, total.numel()).to(total.device) * noise_std_sum
        average = total / m

        metrics: dict[str, float] = {
            "clip_norm": c,
            "noise_std": noise_std_sum / m,
            "noise_std_sum": noise_std_sum,
            "noise_multiplier": float(self.config.noise_multiplier),
            "noise_multiplier_delta": z_delta,
            "expected_cohort": m,
        }
        if self.config.adaptive:
            count = float(unclipped)
            if sigma_b > 0:
                count += float(_normals(noise, 1)[0]) * sigma_b
            b_tilde = count / m
            self.clip_norm = c * math.exp(-self.config.clip_lr * (b_tilde - self.config.target_quantile))
            metrics.update(clip_count_stddev=sigma_b, noisy_unclipped_fraction=b_tilde, next_clip_norm=self.clip_norm)
        if self.ledger is not None:
            self.ledger.step(noise_multiplier=self.config.noise_multiplier, sample_rate=sample_rate)
            metrics["epsilon"] = self.ledger.epsilon()
        self.rounds += 1
        return average, metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "clip_norm": self.clip_norm,
            "rounds": self.rounds,
            "ledger": None if self.ledger is None else self.ledger.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip_norm = float(state["clip_norm"])
        self.rounds = int(state["rounds"])
        if state.get("ledger") is not None:
            self.ledger = PrivacyLedger.from_state_dict(state["ledger"])
