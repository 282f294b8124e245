"""Privacy accounting through Opacus' accountants only (no hand-written accounting).

``ACCOUNTANTS`` holds one plug-in per Opacus accountant (``rdp``: Mironov 2017 / Mironov et al.
2019 RDP of the sampled Gaussian mechanism; ``prv``: Gopi et al. 2021 numerical composition of
privacy loss random variables).  :class:`PrivacyLedger` tracks the rounds (or steps) of one run
under a fixed ``delta`` and answers "what is epsilon now" and "would one more step pass the
budget".  The accountant name and ``opacus.__version__`` are recorded for disclosure.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Literal

from fedops.registry import PluginModel, Registry

if TYPE_CHECKING:  # opacus takes seconds to import: only where an accountant is used
    from opacus.accountants import IAccountant

ACCOUNTANTS = Registry("accountant")


def check_delta(delta: float) -> float:
    d = float(delta)
    if not (0.0 < d < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return d


def check_sample_rate(sample_rate: float) -> float:
    q = float(sample_rate)
    if not (0.0 < q <= 1.0):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    return q


def check_noise_multiplier(noise_multiplier: float) -> float:
    z = float(noise_multiplier)
    if math.isnan(z) or z < 0 or math.isinf(z):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    return z


def check_epsilon(epsilon: float, what: str = "target_epsilon") -> float:
    e = float(epsilon)
    if math.isnan(e) or e <= 0:
        raise ValueError(f"{what} must be > 0, got {epsilon!r}")
    return e


class Accountant(PluginModel):
    """Config of one Opacus accountant; :meth:`create` makes a fresh (empty) Opacus object."""

    @abstractmethod
    def create(self) -> IAccountant: ...

    def epsilon(self, accountant: IAccountant, delta: float) -> float:
        """Epsilon spent by ``accountant`` at ``delta``; 0 with no steps, inf if any step had z = 0."""
        if not accountant.history:
            return 0.0
        if any(z == 0 for z, _, _ in accountant.history):
            return math.inf
        return float(self._epsilon(accountant, delta))

    def _epsilon(self, accountant: IAccountant, delta: float) -> float:
        return accountant.get_epsilon(delta=delta)

    def solve_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments Opacus' ``get_epsilon`` takes for this accountant."""
        return {}


@ACCOUNTANTS.register("rdp")
class RDP(Accountant):
    """``opacus.accountants.RDPAccountant`` with its default orders."""

    name: Literal["rdp"] = "rdp"

    def create(self) -> IAccountant:
        from opacus.accountants import RDPAccountant

        return RDPAccountant()

    def _epsilon(self, accountant: IAccountant, delta: float) -> float:
        """Opacus' ``RDPAccountant.get_epsilon``, with each (noise multiplier, sample rate)'s
        one-step RDP curve computed once per process (:func:`_step_rdp`) instead of for every
        history entry at every call: the same arithmetic (Opacus' ``compute_rdp`` returns the
        one-step curve times the steps), so the same epsilon to the bit. Local DP asks for a
        client's epsilon every round it trains; the curve's fractional orders cost ~0.1 s each."""
        from opacus.accountants.analysis.rdp import get_privacy_spent

        alphas = tuple(accountant.DEFAULT_ALPHAS)
        rdp = sum([_step_rdp(z, q, alphas) * steps for z, q, steps in accountant.history])
        eps, _ = get_privacy_spent(orders=list(alphas), rdp=rdp, delta=delta)
        return float(eps)


@functools.lru_cache(maxsize=4096)
def _step_rdp(noise_multiplier: float, sample_rate: float, alphas: tuple[float, ...]):
    """Opacus' RDP of one step of the sampled Gaussian mechanism at each order (read-only)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    curve = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(alphas))
    curve.setflags(write=False)
    return curve


@ACCOUNTANTS.register("prv")
class PRV(Accountant):
    """``opacus.accountants.PRVAccountant``; reports its upper bound on epsilon."""

    name: Literal["prv"] = "prv"
    eps_error: float = 0.01

    def create(self) -> IAccountant:
        from opacus.accountants import PRVAccountant

        return PRVAccountant()

    def _epsilon(self, accountant: IAccountant, delta: float) -> float:
        return accountant.get_epsilon(delta=delta, eps_error=self.eps_error)

    def solve_kwargs(self) -> dict[str, Any]:
        return {"eps_error": self.eps_error}


class PrivacyLedger:
    """Steps of one run under one accountant and a fixed ``delta``.

    ``ledger.step(noise_multiplier=z, sample_rate=q)`` records one application of the
    Poisson-subsampled Gaussian mechanism; ``ledger.epsilon()`` is the (epsilon, delta)-DP
    guarantee so far; ``ledger.would_exceed(target, ...)`` asks (on a copy) whether one more such
    step would take epsilon past ``target``.
    """

    def __init__(self, accountant_key: str | dict | Accountant = "rdp", delta: float = 1e-5) -> None:
        self.config: Accountant = ACCOUNTANTS.build(accountant_key)
        self.delta = check_delta(delta)
        self._accountant = self.config.create()

    @property
    def accountant_name(self) -> str:
        return self.config.name

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """Opacus' run-length history: ``[(noise_multiplier, sample_rate, num_steps), ...]``."""
        return [tuple(h) for h in self._accountant.history]

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self._accountant.history)

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        z = check_noise_multiplier(noise_multiplier)
        q = check_sample_rate(sample_rate)
        self._accountant.step(noise_multiplier=z, sample_rate=q)

    def epsilon(self) -> float:
        return self.config.epsilon(self._accountant, self.delta)

    def epsilon_after(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """Epsilon after ``steps`` more steps, computed on a copy (this ledger is unchanged)."""
        z = check_noise_multiplier(noise_multiplier)
        q = check_sample_rate(sample_rate)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps!r}")
        trial = copy.deepcopy(self._accountant)
        for _ in range(steps):
            trial.step(noise_multiplier=z, sample_rate=q)
        return self.config.epsilon(trial, self.delta)

    def would_exceed(self, target_epsilon: float, *, noise_multiplier: float, sample_rate: float) -> bool:
        """True when one more step would take epsilon strictly past ``target_epsilon``."""
        target = check_epsilon(target_epsilon)
        return self.epsilon_after(noise_multiplier=noise_multiplier, sample_rate=sample_rate) > target

    def disclosure(self) -> dict[str, Any]:
        """What a report must state: accountant, its parameters, opacus version, delta, epsilon."""
        return {
            "accountant": self.accountant_name,
            "accountant_params": self.config.params(),
            "opacus_version": _opacus_version(),
            "delta": self.delta,
            "steps": self.steps,
            "history": self.history,
            "epsilon": self.epsilon(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self.config.model_dump(), "delta": self.delta, "history": self.history}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "PrivacyLedger":
        ledger = cls(state["accountant"], state["delta"])
        ledger._accountant.history = [tuple(h) for h in state["history"]]
        return ledger


def solve_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    epsilon_tolerance: float = 0.01,
) -> float:
    """Smallest noise multiplier (to Opacus' bisection tolerance) with epsilon <= target after
    ``steps`` steps at ``sample_rate``: ``opacus.accountants.utils.get_noise_multiplier``."""
    config: Accountant = ACCOUNTANTS.build(accountant)
    target = check_epsilon(target_epsilon)
    d = check_delta(delta)
    q = check_sample_rate(sample_rate)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    with warnings.catch_warnings():
        # the bisection probes tiny sigmas where Opacus' largest RDP order is optimal
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        from opacus.accountants.utils import get_noise_multiplier

        sigma = get_noise_multiplier(
            target_epsilon=target,
            target_delta=d,
            sample_rate=q,
            steps=int(steps),
            accountant=config.name,
            epsilon_tolerance=epsilon_tolerance,
            **config.solve_kwargs(),
        )
    return float(sigma)


def _opacus_version() -> str:
    from importlib.metadata import version

    return version("opacus")


class ClientLedgers:
    """Local DP: one :class:`PrivacyLedger` per client, composed over every round it trains in.

    A client's epsilon is a function of public quantities only (its noise multiplier, sample
    rate and number of steps), so the run can keep and checkpoint these ledgers for it."""

    def __init__(self, accountant_key: str = "rdp", delta: float = 1e-5) -> None:
        self.accountant_key, self.delta = accountant_key, check_delta(delta)
        self._ledgers: dict[int, PrivacyLedger] = {}

    def record(self, client_id: int, *, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Add ``steps`` DP-SGD steps of ``client_id`` and return its epsilon so far."""
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        ledger = self._ledgers.setdefault(client_id, PrivacyLedger(self.accountant_key, self.delta))
        for _ in range(int(steps)):
            ledger.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        return ledger.epsilon()

    def state_dict(self) -> dict[int, dict[str, Any]]:
        return {cid: ledger.state_dict() for cid, ledger in sorted(self._ledgers.items())}

    def load_state_dict(self, state: dict[int, dict[str, Any]]) -> None:
        self._ledgers = {int(cid): PrivacyLedger.from_state_dict(s) for cid, s in state.items()}
