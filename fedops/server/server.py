"""The server: what it decides before a round (who trains, the DP clip norm it sends with the
model), its update path on what the transport delivers, and its state across rounds (the global
parameters, the optimiser's moments, DP-FedAvg's clip norm and privacy ledger, byte counters).

It sees wire messages, what clients chose to report and, under secure aggregation, only the
unmasked sum; never which clients the simulator made faulty or malicious.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from fedops.compress.context import codec_context, flat_layout
from fedops.config import Config
from fedops.errors import RoundFailed
from fedops.privacy.randomness import PrivacyRandomness
from fedops.rng import STREAM_DP_NOISE
from fedops.server.selection import Selection
from fedops.server.steps import (
    AnomalyScores,
    NormFilter,
    SecureSum,
    ServerOptimizerStep,
    StackMemory,
    UpdateBatch,
    build_aggregation,
    decode_and_validate,
)
from fedops.types import ParamLayout


@dataclass(frozen=True)
class RoundPlan:
    """The server's decisions before clients train."""

    round_idx: int
    selected: list[int]
    training: list[int]
    """The selected clients that train (a client excluded for bad data does not)."""
    clip_norm: float | None
    """Client-level DP's clip norm ``C`` for this round, sent with the model (None without DP)."""
    backups: list[int] = field(default_factory=list)
    """Ranked clients promoted, in order, when a cohort member drops (``server.backups``)."""
    notes: dict[int, str] = field(default_factory=dict)
    """Why each ranked client was chosen (the client table's ``selection`` column)."""
    excluded: dict[int, str] = field(default_factory=dict)
    """Clients left out before selection, with the reason (a reputation threshold)."""


class Server:
    def __init__(self, config: Config, *, params: torch.Tensor, num_clients: int, layout: ParamLayout | None = None,
                 data_failures: dict[int, list[str]] | None = None, randomness: PrivacyRandomness | None = None,
                 root: Any = None) -> None:
        self.config = config
        self.params = params.detach().to(torch.float32).cpu().clone()
        self.layout = layout or flat_layout(self.params.numel())
        if self.layout.size != self.params.numel():
            raise ValueError(f"layout covers {self.layout.size} values, params have {self.params.numel()}")
        self.num_clients = num_clients
        self._stack_memory = StackMemory()
        self.data_failures = dict(data_failures or {})
        self.randomness = randomness or PrivacyRandomness(seeded=config.privacy.randomness == "seeded",
                                                          seed=config.seed)
        self.selection = Selection(config, num_clients, self.randomness)
        self.aggregation, self.dp = build_aggregation(
            config, num_clients=num_clients, expected_cohort=self.selection.expected_cohort,
            noise_for=lambda r: self.randomness.gaussian(STREAM_DP_NOISE, r),
        )
        q = config.quality
        self.norm_filter = NormFilter(q.norm_multiple) if q.norm_multiple is not None else None
        central = config.privacy.mode == "central"
        self.scores = (AnomalyScores(q.num_byzantine, q.flag_norm_z, q.flag_cosine_z, q.flag_min_clients)
                       if q.scores_on(secagg=config.secagg.enabled, central_dp=central) else None)
        self.root = root
        if getattr(config.server.aggregator, "needs_reference", False) and root is None:
            raise ValueError(f"server.aggregator = {config.server.aggregator.name!r} needs the server's root set")
        self.optimizer = ServerOptimizerStep(config.server.optimizer, config.transport.codec,
                                             config.server.optimizer.init_state(self.params))
        probe = config.transport.codec.encode_download(torch.zeros_like(self.params), ctx=self.ctx(0, None))
        self.download_nbytes = self.params.numel() * 4 if probe is None else len(probe)
        """Bytes one selected client downloads per round: the float32 model, or the codec's
        compressed global change."""
        self.bytes_up_total = 0
        self.bytes_down_total = 0
        self.last_batch: UpdateBatch | None = None
        """The last round's accepted individual updates (plain transport), for the round's later
        steps (contribution scoring); in process only, never checkpointed."""

    def drop_round_memory(self) -> None:
        """The rounds are over: the last batch and the stack's memory kept for the next round go."""
        self.last_batch = None
        self._stack_memory = StackMemory()

    # --- before the round ----------------------------------------------------------------------
    def ctx(self, round_idx: int, client_id: int | None):
        return codec_context(seed=self.config.seed, layout=self.layout, round_idx=round_idx, client_id=client_id)

    @property
    def noise_multiplier(self) -> float | None:
        return None if self.dp is None else float(self.dp.config.noise_multiplier)

    def plan(self, round_idx: int, selected: list[int] | None = None, *, candidates: list[int] | None = None,
             context: Any = None, excluded: dict[int, str] | None = None) -> RoundPlan:
        """Select the round's clients (or take ``selected``) and leave out those excluded for bad
        data. ``candidates`` (default: every client) and ``context`` go to the selector, which
        also ranks ``server.backups`` extra clients; ``excluded`` are the clients left out before."""
        notes: dict[int, str] = {}
        backups: list[int] = []
        if selected is not None:
            selected = sorted(selected)
        elif candidates is None and context is None and not self.config.server.backups:
            selected = self.selection.select(round_idx)
        else:
            ranking = self.selection.rank(round_idx, candidates=candidates, context=context)
            count = len(ranking.order) if self.config.server.selector.variable_cohort else (
                self.selection.expected_cohort if ranking.cohort is None else ranking.cohort)
            selected, backups, notes = sorted(ranking.order[:count]), list(ranking.order[count:]), dict(ranking.notes)
        bad = self.config.quality.bad_data == "exclude"
        training = [c for c in selected if not (bad and c in self.data_failures)]
        backups = [c for c in backups if not (bad and c in self.data_failures)]
        return RoundPlan(round_idx, selected, training, None if self.dp is None else self.dp.clip_norm,
                         backups=backups, notes=notes, excluded=dict(excluded or {}))

    def stop_reason(self) -> str | None:
        """Why the next round must not run (its epsilon would pass the budget), else None."""
        target = self.config.privacy.target_epsilon
        if self.dp is None or target is None:
            return None
        ledger, z, q = self.dp.ledger, self.noise_multiplier, self.selection.sample_rate
        if ledger.would_exceed(target, noise_multiplier=z, sample_rate=q):
            after = ledger.epsilon_after(noise_multiplier=z, sample_rate=q)
            return (f"privacy budget: epsilon {ledger.epsilon():.4f} after {self.dp.rounds} rounds; "
                    f"one more round would reach {after:.4f} > target {target}")
        return None

    def rows(self, plan: RoundPlan, failures: dict[int, str]) -> dict[int, dict[str, Any]]:
        """The round's client table before the updates arrive: every selected client, dropped
        (with the executor's reason) until its update is accepted; bad-data exclusions."""
        rows = {}
        excluded = set(plan.selected) - set(plan.training)
        for cid in plan.selected:
            row: dict[str, Any] = {"round": plan.round_idx, "client_id": cid, "status": "dropped",
                                   "reason": failures.get(cid, "no reply")}
            if self.data_failures:
                row["data_validation"] = "failed" if cid in self.data_failures else "passed"
            if cid in excluded:
                row.update(status="rejected", reason=(
                    f"data validation failed ({', '.join(self.data_failures[cid])}); quality.bad_data = exclude"))
            rows[cid] = row
        return rows

    # --- the update path -----------------------------------------------------------------------
    def finish(self, plan: RoundPlan, delivery: Any, rows: dict[int, dict[str, Any]]) -> dict[str, float]:
        """Aggregate what the transport delivered and step the global model; returns the round's
        metrics (before release). Raises :class:`RoundFailed` with the model unchanged when too
        few usable updates arrived or the rule's assumption does not hold."""
        from fedops import failpoints

        r, d = plan.round_idx, self.params.numel()
        extra: dict[str, float] = {}
        if delivery.secure is None:
            bytes_up = sum(m.nbytes for m in delivery.messages)
            for m in delivery.messages:
                rows[m.client_id]["bytes_up"] = m.nbytes
            self.last_batch = None  # the previous round's stack: its memory is reused unless someone else holds it
            received = len(delivery.messages)
            batch = decode_and_validate(delivery.messages, codec=self.config.transport.codec,
                                        ctx_for=lambda cid: self.ctx(r, cid), dim=d,
                                        weight_factor=self.weight_factor, rows=rows, memory=self._stack_memory,
                                        consume=True)
            if self.norm_filter is not None:
                batch = self.norm_filter(batch, rows)
            accepted = batch.client_ids
            self.last_batch = batch
            self._require(r, accepted, plan.selected, rows)
            reference = self.root.update(round_idx=r, global_params=self.params) if self.root is not None else None
            failpoints.hit("server.aggregate", round_idx=r)
            aggregate, agg_metrics = self.aggregation.of_updates(batch, round_idx=r, reference=reference)
            if self.scores is not None:
                extra["clients/flagged"] = self.scores(batch, aggregate, rows)
            raw_bytes = 4 * d * received
        else:
            self.last_batch = None  # the server sees only the sum
            for cid, reason in delivery.dropped.items():
                rows[cid].update(status="dropped", reason=f"secure aggregation: {reason}")
            accepted = list(delivery.survivors)
            for cid in accepted:
                rows[cid].update(status="ok", reason="")
            for cid, sent in delivery.bytes_up.items():
                rows[cid]["bytes_up"] = sent
            bytes_up = sum(delivery.bytes_up.values())
            self._require(r, accepted, plan.selected, rows)
            failpoints.hit("server.aggregate", round_idx=r)
            aggregate, agg_metrics = self.aggregation.of_sum(SecureSum(delivery.secure.sum, accepted), round_idx=r)
            # the clients summed the codec's linear projection (identity for none): back to full size
            aggregate = self.config.transport.codec.lift(aggregate.to(torch.float32), ctx=self.ctx(r, None))
            extra.update({"secagg/survivors": float(len(accepted)), "secagg/time_s": delivery.seconds})
            raw_bytes = 4 * d * len(accepted)
        aggregate = aggregate.to(torch.float32)
        self.params = self.optimizer(self.params, aggregate, ctx=self.ctx(r, None))
        bytes_down = self.download_nbytes * len(plan.selected)
        for cid in plan.selected:
            rows[cid]["bytes_down"] = self.download_nbytes
        self.bytes_up_total += bytes_up
        self.bytes_down_total += bytes_down
        return {
            "train/loss": _train_loss(accepted, rows),
            "clients/selected": float(len(plan.selected)),
            "clients/aggregated": float(len(accepted)),
            "clients/dropped": float(sum(row["status"] == "dropped" for row in rows.values())),
            "clients/rejected": float(sum(row["status"] == "rejected" for row in rows.values())),
            "comm/bytes_up": float(bytes_up),
            "comm/bytes_down": float(bytes_down),
            "comm/bytes_up_total": float(self.bytes_up_total),
            "comm/bytes_down_total": float(self.bytes_down_total),
            "comm/compression_ratio": raw_bytes / bytes_up if bytes_up else math.nan,
            "update/norm": float(aggregate.norm()),
            **agg_metrics,
            **extra,
        }

    def weight_factor(self, client_id: int) -> float:
        """The client's aggregation-weight multiplier (``quality.bad_data: downweight``)."""
        q = self.config.quality
        return q.bad_data_weight if q.bad_data == "downweight" and client_id in self.data_failures else 1.0

    def _require(self, round_idx: int, accepted: list[int], selected: list[int], rows: dict[int, dict[str, Any]]) -> None:
        if len(accepted) >= self.config.server.min_clients:
            return
        if self.config.privacy.mode == "central":  # participation is not released under client-level DP
            raise RoundFailed(f"round {round_idx}: fewer usable updates than server.min_clients = "
                              f"{self.config.server.min_clients}. The global model was not changed.")
        n_dropped = sum(row["status"] == "dropped" for row in rows.values())
        n_rejected = sum(row["status"] == "rejected" for row in rows.values())
        excluded = sorted(c for c, row in rows.items() if row["status"] == "excluded")
        left_out = (f"; {len(excluded)} clients left out by server.min_reputation = "
                    f"{self.config.server.min_reputation} ({excluded[:10]})") if excluded else ""
        raise RoundFailed(
            f"round {round_idx}: only {len(accepted)} usable updates from {len(selected)} selected "
            f"clients ({n_dropped} dropped, {n_rejected} rejected){left_out}; server.min_clients = "
            f"{self.config.server.min_clients}. The global model was not changed."
        )

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params.clone(), "optimizer": {k: v.clone() for k, v in self.optimizer.state.items()},
                "dp": None if self.dp is None else self.dp.state_dict(),
                "bytes_up_total": self.bytes_up_total, "bytes_down_total": self.bytes_down_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["params"].shape != self.params.shape:
            raise ValueError(f"server state holds {state['params'].numel()} parameters, the model has {self.params.numel()}")
        self.params = state["params"].to(torch.float32).clone()
        self.optimizer.state = {k: v.clone() for k, v in state["optimizer"].items()}
        if self.dp is not None:
            self.dp.load_state_dict(state["dp"])
        self.bytes_up_total = int(state["bytes_up_total"])
        self.bytes_down_total = int(state["bytes_down_total"])


def _train_loss(accepted: list[int], rows: dict[int, dict[str, Any]]) -> float:
    """The sample-weighted mean of the accepted clients' reported training losses."""
    losses = [(rows[c]["train_loss"], rows[c]["num_samples"]) for c in accepted if "train_loss" in rows[c]]
    return sum(v * n for v, n in losses) / sum(n for _, n in losses) if losses else math.nan


__all__ = ["RoundPlan", "Server", "UpdateBatch"]
