"""Which clients train in a round (the server's choice).

Without client-level DP the selector draws from ``numpy_rng(seed, STREAM_SELECTION, round)``, so a
round can be replayed. Under central DP the accountant's privacy amplification assumes that who
takes part in a round is secret and unpredictable: the draw then comes from the privacy randomness
(the OS CSPRNG, or the research mode's seeded stream), see :mod:`fedops.privacy.randomness`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedops.config import Config, clients_per_round
from fedops.privacy.randomness import PrivacyRandomness
from fedops.rng import STREAM_SELECTION, numpy_rng
from fedops.selection import Ranking, SelectionContext


@dataclass(frozen=True)
class _PrivateUniforms:
    """The one method Poisson sampling uses, ``random(size)``, backed by the privacy randomness."""

    source: PrivacyRandomness
    round_idx: int

    def random(self, size: int) -> np.ndarray:
        return self.source.uniform(int(size), STREAM_SELECTION, self.round_idx)


@dataclass(frozen=True)
class Selection:
    config: Config
    num_clients: int
    randomness: PrivacyRandomness

    @property
    def expected_cohort(self) -> int:
        """Clients per round: exactly (uniform selector) or on average (Poisson)."""
        return clients_per_round(self.num_clients, self.config.server.fraction)

    @property
    def sample_rate(self) -> float:
        return self.expected_cohort / self.num_clients

    def _rng(self, round_idx: int):
        if self.config.privacy.mode == "central":
            return _PrivateUniforms(self.randomness, round_idx)
        return numpy_rng(self.config.seed, STREAM_SELECTION, round_idx)

    def select(self, round_idx: int) -> list[int]:
        chosen = self.config.server.selector.select(num_clients=self.num_clients, count=self.expected_cohort,
                                                    rng=self._rng(round_idx))
        return [int(c) for c in chosen]

    def rank(self, round_idx: int, *, candidates: list[int] | None = None, context: SelectionContext | None = None) -> Ranking:
        """The selector's ranking of ``candidates`` (default: every client): the cohort, then
        ``server.backups`` backups."""
        return self.config.server.selector.rank(
            candidates=list(range(self.num_clients)) if candidates is None else list(candidates),
            count=self.expected_cohort, extra=self.config.server.backups,
            context=context or SelectionContext(num_clients=self.num_clients), rng=self._rng(round_idx))
