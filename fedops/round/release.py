"""What a round releases: the one place that decides which of the round's numbers leave it.

Everything a round computes (per-client norms and losses, exact clipped counts, anomaly scores)
stays inside the round object; observers (MLflow, the progress bar, ``reports/``) receive only
what the release policy lets through. The policy follows the strictest privacy feature on:

* ``full`` (no secure aggregation, no client-level DP): everything, including a per-client
  table with each client's training loss, update norm and anomaly scores.
* ``secure`` (secure aggregation): only what the server legitimately learns from the protocol:
  participation (who was selected, who survived, who dropped, at which stage and why), bytes and
  timing, and numbers computed from the unmasked sum (the new model, its test metrics, the
  update's norm). No per-client norm, loss, sample count or score; no training loss.
* ``central_dp`` (client-level DP): only numbers that went through the mechanism and the
  accountant, or that depend on public parameters alone: the model and its test metrics, the
  norm of the noised update, epsilon, the noise parameters, the clip norm (adaptive clipping
  moves it from a noised count). No client table: Poisson sampling's privacy amplification
  assumes that who took part in a round stays secret, so participation, realised cohort sizes
  and the bytes that reveal them are not released either. Round wall times are released; they
  grow with the cohort size, a side channel the accountant does not cover.

Fairness (``fairness`` on): the group gaps of the global model on the server's own test set
(``fairness/dpd``, ``eqodds``, ``eopp``, ``spd``, ``eod``) are released in every mode: the model is
released anyway and the test set is the server's. What comes from clients' data (each client's
held-out accuracy, the ``fairness/client_*`` spread, Jain's index, the per-client group gaps) is
released in ``full`` only. FairFed's pooled numbers (``fairfed/*``: the global metric and
accuracy from the pooled counts, the mean gap) come from sums and are released under ``secure``
too; FairFed does not run under client-level DP. Likewise FairBatch's population shares
(``fairbatch/lambda_y*``, ``client.reweighing: fairbatch_global``), moved by the pooled loss
sums; reweighing does not run under DP.

Crowdsourcing (``devices``, ``reputation``, backups): why each client was selected, its times on
the virtual clock and its reputation are the server's own knowledge (device reports, the ledger,
participation) and are released in ``full`` and ``secure``; ``incentives/*`` likewise. The
simulated times follow from a client's device profile and its number of local steps,
``epochs * ceil(n / batch_size)``, so they bound its sample count ``n`` more closely than its wall
time does: a deployment that must hide sample counts from the server keeps ``devices`` off.
Points by ``data_size`` are refused with secure aggregation for the same reason.
Contribution scores (``contribution/*`` and the table's ``contribution``) need individual
updates: ``full`` only (refused with secure aggregation). None of these run under client-level DP.

Allow-lists, not deny-lists: a number a later feature adds is withheld under privacy until it
is listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fedops.config import Config

Mode = Literal["full", "secure", "central_dp"]

PARTICIPATION_FIELDS = frozenset(
    {"round", "client_id", "status", "reason", "bytes_up", "bytes_down", "wall_time_s", "device", "data_validation",
     "selection", "sim_start_s", "sim_end_s", "reputation"}
)
"""Client-table columns the server learns from secure aggregation itself (and from clients'
self-reported data validation, which is not derived from an update)."""

TEST_SET_FAIRNESS = frozenset({"fairness/dpd", "fairness/eqodds", "fairness/eopp", "fairness/spd", "fairness/eod"})
"""Group fairness of the global model on the server's own test set: released in every mode (the
model is released, and the test set is the server's)."""

_SECURE_PREFIXES = ("clients/", "comm/", "time/", "test/", "secagg/", "fairfed/", "fairbatch/", "incentives/")
_SECURE_KEYS = frozenset({"update/norm", "privacy/local_epsilon_max", *TEST_SET_FAIRNESS})
_DP_PREFIXES = ("test/", "time/")
_DP_KEYS = frozenset({*TEST_SET_FAIRNESS,
    "update/norm", "secagg/time_s",
    "privacy/epsilon", "privacy/clip_norm", "privacy/next_clip_norm", "privacy/noise_std", "privacy/noise_std_sum",
    "privacy/noise_multiplier", "privacy/noise_multiplier_delta", "privacy/expected_cohort",
    "privacy/clip_count_stddev", "privacy/noisy_unclipped_fraction",
})


@dataclass(frozen=True)
class RoundRecord:
    """What a round releases: metrics (step = round), the client table (None: not released) and
    the wall-clock time it was recorded (kept, so logging it again is idempotent)."""

    round: int
    metrics: dict[str, float]
    client_table: list[dict[str, Any]] | None
    timestamp_ms: int
    client_accuracy: list[float] | None = None
    """The global model's accuracy on each client's held-out split (fairness; released in ``full`` only)."""

    def to_state(self) -> dict[str, Any]:
        return {"round": self.round, "metrics": dict(self.metrics), "client_table": self.client_table,
                "timestamp_ms": self.timestamp_ms, "client_accuracy": self.client_accuracy}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RoundRecord":
        return cls(round=int(state["round"]), metrics=dict(state["metrics"]), client_table=state["client_table"],
                   timestamp_ms=int(state["timestamp_ms"]), client_accuracy=state.get("client_accuracy"))


@dataclass(frozen=True)
class ReleasePolicy:
    mode: Mode

    @classmethod
    def from_config(cls, config: Config) -> "ReleasePolicy":
        if config.privacy.mode == "central":
            return cls("central_dp")
        return cls("secure" if config.secagg.enabled else "full")

    def allows_metric(self, key: str) -> bool:
        if self.mode == "full":
            return True
        if self.mode == "secure":
            return key.startswith(_SECURE_PREFIXES) or key in _SECURE_KEYS
        return key.startswith(_DP_PREFIXES) or key in _DP_KEYS

    def metrics(self, raw: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in raw.items() if self.allows_metric(k)}

    def client_table(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        if self.mode == "full":
            return [dict(r) for r in rows]
        if self.mode == "secure":
            return [{k: v for k, v in r.items() if k in PARTICIPATION_FIELDS} for r in rows]
        return None

    def client_accuracy(self, accuracy: list[float] | None) -> list[float] | None:
        """Per-client held-out accuracies are results on clients' data: released in ``full`` only."""
        return None if accuracy is None or self.mode != "full" else [float(a) for a in accuracy]

    @property
    def per_client_artifacts(self) -> bool:
        """Whether per-client descriptions of the data (partition manifest, label heatmap, each
        client's validation report, the ids of clients with bad data) go to the tracking run.
        They describe the simulated population, which a server under secure aggregation or DP
        would not know; they stay in the work directory as the simulation's set-up."""
        return self.mode == "full"

    def describe(self) -> str:
        return {
            "full": "full: per-round metrics and a per-client table (loss, update norm, anomaly scores)",
            "secure": "secure aggregation: participation, dropout stage and reason, bytes, timing, and numbers "
                      "computed from the unmasked sum; nothing per client derived from an update",
            "central_dp": "client-level DP: the noised model and its test metrics, the noised update's norm, epsilon "
                          "and the mechanism's parameters; no client table, no participation counts, no bytes",
        }[self.mode]
