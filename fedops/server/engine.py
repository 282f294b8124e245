"""The server side of a round, as data (see DESIGN: one round):

select -> (clients train and encode) -> decode -> validate -> aggregate -> server optimiser step.

:class:`FederatedServer` holds the only state that lives across rounds: the global parameters and
the server optimiser's moments.  It never sees which clients are simulated as faulty; it sees
messages (encoded updates) and which selected clients did not answer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from fedops.compress.context import codec_context, flat_layout
from fedops.config import Config, clients_per_round
from fedops.errors import FedopsError
from fedops.rng import STREAM_DP_NOISE, STREAM_SELECTION, numpy_rng, torch_generator
from fedops.types import EncodedUpdate, ParamLayout, RoundOutcome


class RoundFailed(FedopsError):
    """Too few clients returned a usable update for the round to aggregate."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def check_update(delta: torch.Tensor, *, expected_size: int) -> Verdict:
    """Server-side sanity check of one decoded update: shape, dtype, finiteness."""
    if delta.ndim != 1 or delta.numel() != expected_size:
        return Verdict(False, f"wrong length: expected {expected_size}, got shape {tuple(delta.shape)}")
    if not delta.is_floating_point():
        return Verdict(False, f"wrong dtype: expected floating point, got {delta.dtype}")
    if not bool(torch.isfinite(delta).all()):
        return Verdict(False, "non-finite values (NaN or Inf)")
    return Verdict(True)


@dataclass
class FederatedServer:
    config: Config
    params: torch.Tensor
    num_clients: int
    layout: ParamLayout | None = None
    """The model's tensors in the flat vector (codecs with structure, like RPN, need it)."""
    data_failures: dict[int, list[str]] = field(default_factory=dict)
    """Clients whose own data failed validation (client id -> failed expectations), as they
    reported it; ``quality.bad_data`` says whether they are excluded, down-weighted or kept."""
    opt_state: dict[str, torch.Tensor] = field(init=False)
    bytes_up_total: int = 0
    bytes_down_total: int = 0
    dp: Any = field(init=False, default=None)
    download_nbytes: int = field(init=False, default=0)
    noise_multiplier: float | None = field(init=False, default=None)
    local_epsilon_max: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.params = self.params.detach().to(torch.float32).cpu().clone()
        if self.layout is None:
            self.layout = flat_layout(self.params.numel())
        elif self.layout.size != self.params.numel():
            raise ValueError(f"layout covers {self.layout.size} values, params have {self.params.numel()}")
        probe = self.config.transport.codec.encode_download(torch.zeros_like(self.params), ctx=self.codec_context(0, None))
        self.download_nbytes = self.broadcast_bytes() if probe is None else len(probe)
        """Bytes one selected client downloads per round: the float32 model, or the codec's
        compressed global change (a client that missed rounds gets the change since its last
        round, which has the same size)."""
        self.opt_state = self.config.server.optimizer.init_state(self.params)
        if self.config.privacy.mode == "central":
            self._init_central_dp()

    # --- client-level differential privacy (DP-FedAvg) -----------------------------------
    @property
    def sample_rate(self) -> float:
        return self.clients_per_round / self.num_clients

    def _init_central_dp(self) -> None:
        from fedops.privacy import DPFedAvg, DPFedAvgConfig, solve_noise_multiplier

        p = self.config.privacy
        sigma = p.noise_multiplier
        if sigma is None:  # solve sigma so that server.rounds rounds spend target_epsilon
            sigma = solve_noise_multiplier(
                target_epsilon=p.target_epsilon, delta=p.delta, sample_rate=self.sample_rate,
                steps=self.config.server.rounds, accountant=p.accountant,
            )
        self.noise_multiplier = float(sigma)
        self.dp = DPFedAvg(DPFedAvgConfig(
            noise_multiplier=self.noise_multiplier, clip_norm=p.clip_norm, adaptive=p.adaptive_clipping,
            target_quantile=p.target_quantile, clip_lr=p.clip_lr, clip_count_stddev=p.clip_count_stddev,
            population=self.num_clients, accountant=p.accountant, delta=p.delta,
        ))

    def privacy_disclosure(self) -> dict[str, Any]:
        """What a DP run must disclose: unit, mechanism, accountant and its version, parameters."""
        if self.dp is None:
            return {"mode": self.config.privacy.mode}
        p = self.config.privacy
        ledger = self.dp.ledger.disclosure()
        return {
            "mode": "central",
            "unit": "client-level (one client's whole update per round)",
            "mechanism": "DP-FedAvg: clip to C, Gaussian noise sigma*C on the sum, fixed denominator q*N",
            "composition": (
                "secure aggregation: each client clips to C on its device before masking (quantised norm <= C); "
                "the server adds the noise to the unmasked sum" if self.config.secagg.enabled
                else "each client clips to C before encoding and sends 1[norm <= C]; the server clips the decoded "
                "updates again (a codec may change the norm), then noises their sum"),
            "accountant": ledger["accountant"],
            "opacus_version": ledger["opacus_version"],
            "delta": p.delta,
            "noise_multiplier": self.noise_multiplier,
            "noise_multiplier_solved_for_target": p.noise_multiplier is None,
            "clipping": (f"adaptive: initial C {p.clip_norm}, target quantile {p.target_quantile}, "
                         f"clip lr {p.clip_lr}, count stddev {p.clip_count_stddev or 'cohort/20'}")
            if p.adaptive_clipping else f"fixed C = {p.clip_norm}",
            "sample_rate": self.sample_rate,
            "sampling": "Poisson: each client independently with probability q",
            "population": self.num_clients,
            "rounds_planned": self.config.server.rounds,
            "target_epsilon": p.target_epsilon,
        }

    def privacy_stop_reason(self) -> str | None:
        """Why the next round must not run (its epsilon would pass the budget), else None."""
        target = self.config.privacy.target_epsilon
        if self.dp is None or target is None:
            return None
        if self.dp.ledger.would_exceed(target, noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate):
            after = self.dp.ledger.epsilon_after(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
            return (f"privacy budget: epsilon {self.dp.ledger.epsilon():.4f} after {self.dp.rounds} rounds; "
                    f"one more round would reach {after:.4f} > target {target}")
        return None

    @property
    def clients_per_round(self) -> int:
        return clients_per_round(self.num_clients, self.config.server.fraction)

    def select(self, round_idx: int) -> list[int]:
        rng = numpy_rng(self.config.seed, STREAM_SELECTION, round_idx)
        chosen = self.config.server.selector.select(
            num_clients=self.num_clients, count=self.clients_per_round, rng=rng
        )
        return [int(c) for c in chosen]

    def broadcast_bytes(self) -> int:
        return self.params.numel() * self.params.element_size()

    def finish_round(
        self,
        round_idx: int,
        *,
        selected: list[int],
        received: list[EncodedUpdate],
        reports: dict[int, dict[str, Any]],
        dropped: dict[int, str],
        started: float,
        reference: torch.Tensor | None = None,
    ) -> RoundOutcome:
        """Decode, validate and aggregate the round's updates, then step the global model.

        ``reference`` is the server's own update on its root data set, for rules that need one
        (FLTrust). Raises :class:`RoundFailed` (global model unchanged) when fewer than
        ``server.min_clients`` usable updates arrived.
        """
        rule = self.config.server.aggregator
        needs_reference = getattr(rule, "needs_reference", False)
        if needs_reference and reference is None:
            raise ValueError(f"server.aggregator = {rule.name!r} needs the server's root update (reference=...)")
        codec = self.config.transport.codec
        d = self.params.numel()
        rows = self._rows(round_idx, selected, dropped)
        deltas, weights, accepted, indicators = [], [], [], []
        bytes_up = 0
        for msg in sorted(received, key=lambda m: m.client_id):
            bytes_up += msg.nbytes
            row = rows[msg.client_id]
            row.update({"num_samples": msg.num_samples, "bytes_up": msg.nbytes, **reports.get(msg.client_id, {})})
            try:
                delta = codec.decode(msg.payload, ctx=self.codec_context(round_idx, msg.client_id))
            except ValueError as exc:
                row.update(status="rejected", reason=f"undecodable {codec.name} payload: {exc}")
                continue
            verdict = check_update(delta, expected_size=d)
            if not verdict.ok:
                row.update(status="rejected", reason=verdict.reason)
                continue
            row.update(status="ok", reason="")
            factor = self.weight_factor(msg.client_id)
            if factor != 1.0:
                row["weight_factor"] = factor
            deltas.append(delta.to(torch.float32))
            weights.append(float(msg.num_samples) * factor)
            accepted.append(msg.client_id)
            indicators.append(msg.clip_indicator)
        q = self.config.quality
        if q.norm_multiple is not None and len(deltas) >= 3:  # against the round's median norm
            from fedops.quality import norm_outliers

            outlier, norms, median = norm_outliers(torch.stack(deltas), multiple=q.norm_multiple)
            keep = [i for i in range(len(deltas)) if not bool(outlier[i])]
            for i in range(len(deltas)):
                if bool(outlier[i]):
                    rows[accepted[i]].update(status="rejected", reason=(
                        f"update norm {float(norms[i]):.4g} > {q.norm_multiple:g} x the round's median norm {median:.4g}"))
            deltas, weights = [deltas[i] for i in keep], [weights[i] for i in keep]
            accepted, indicators = [accepted[i] for i in keep], [indicators[i] for i in keep]
        self._require(round_idx, accepted, selected, rows)
        stack = torch.stack(deltas)
        w = torch.tensor(weights, dtype=torch.float32)
        if self.dp is not None:
            # The clients clipped before encoding and sent 1[||u|| <= C]; the server clips the
            # decoded updates again (a codec may change the norm), so the sensitivity stays C.
            unclipped = None if any(i is None for i in indicators) else int(sum(indicators))
            aggregate, dp_metrics = self.dp.aggregate(
                stack, expected_cohort=float(self.clients_per_round), unclipped=unclipped,
                generator=torch_generator(self.config.seed, STREAM_DP_NOISE, round_idx),
            )
            agg_metrics = {}
            privacy_metrics = {f"privacy/{k}": v for k, v in dp_metrics.items()}
        else:
            try:
                extra_args = {"reference": reference} if needs_reference else {}
                aggregate, agg_metrics = rule.aggregate(stack, weights=w, **extra_args)
            except ValueError as exc:  # e.g. rejections left fewer updates than the rule's assumption needs
                raise RoundFailed(f"round {round_idx}: {exc}. The global model was not changed.") from None
            privacy_metrics = {}
        flagged = 0
        if q.scores_on(self.config.secagg.enabled):
            from fedops.quality import anomaly_scores

            scores = anomaly_scores(stack, aggregate, num_byzantine=q.num_byzantine,
                                    flag_norm_z=q.flag_norm_z, flag_cosine=q.flag_cosine)
            for i, cid in enumerate(accepted):
                rows[cid].update(scores.row(i))
            flagged = int(scores.flagged.sum())
        return self._apply(
            round_idx, aggregate=aggregate, rows=rows, selected=selected, accepted=accepted,
            bytes_up=bytes_up, raw_bytes=4 * d * len(received),
            extra={**{f"aggregate/{k}": v for k, v in agg_metrics.items()}, **privacy_metrics,
                   "clients/flagged": float(flagged)}, started=started,
        )

    def finish_secure_round(
        self,
        round_idx: int,
        *,
        selected: list[int],
        result: Any,
        reports: dict[int, dict[str, Any]],
        dropped: dict[int, str],
        started: float,
    ) -> RoundOutcome:
        """The server side of a secure-aggregation round: it sees only ``result`` (the unmasked
        sum of the survivors' quantised updates, who survived, who dropped and why), never an
        individual update. With client-level DP the clients clipped to ``C`` before masking and
        the Gaussian noise is added here, to the unmasked sum."""
        from fedops.secagg.encode import decode_dp, decode_weighted

        sa = self.config.secagg
        rows = self._rows(round_idx, selected, dropped)
        for cid, reason in result.dropped.items():
            rows[cid].update(status="dropped", reason=f"secure aggregation: {reason}")
        accepted = sorted(result.survivors)
        for cid in accepted:
            rows[cid].update({"status": "ok", "reason": "", "bytes_up": result.bytes_up.get(cid, 0), **reports.get(cid, {})})
        self._require(round_idx, accepted, selected, rows)
        extra = {"secagg/survivors": float(len(accepted)), "secagg/time_s": sum(result.timings.values())}
        fixed_point = {"n": len(accepted), "clip": sa.clip, "scale": sa.scale, "bits": sa.bits}
        if self.dp is not None:  # the clients clipped; noise goes on the unmasked sum
            total, unclipped = decode_dp(result.sum, **fixed_point)
            average, dp_metrics = self.dp.noised_average(
                torch.from_numpy(total), unclipped=unclipped if self.config.privacy.adaptive_clipping else None,
                cohort=len(accepted), expected_cohort=float(self.clients_per_round),
                generator=torch_generator(self.config.seed, STREAM_DP_NOISE, round_idx),
            )
            extra.update({f"privacy/{k}": v for k, v in dp_metrics.items()})
        else:
            try:
                average = torch.from_numpy(decode_weighted(result.sum, **fixed_point))
            except ValueError as exc:
                raise RoundFailed(f"round {round_idx}: {exc}") from None
        # the clients summed the codec's linear projection (identity for none); back to full size
        average = self.config.transport.codec.lift(average.to(torch.float32), ctx=self.codec_context(round_idx, None))
        d = self.params.numel()
        return self._apply(
            round_idx, aggregate=average.to(torch.float32), rows=rows, selected=selected, accepted=accepted,
            bytes_up=sum(result.bytes_up.values()), raw_bytes=4 * d * len(accepted), extra=extra, started=started,
        )

    def client_dp_clip_norm(self) -> float | None:
        """The round's DP clip norm, sent to the clients: they clip before encoding (and before
        masking under secure aggregation). ``None`` without client-level DP."""
        return None if self.dp is None else self.dp.clip_norm

    def codec_context(self, round_idx: int, client_id: int | None):
        return codec_context(seed=self.config.seed, layout=self.layout, round_idx=round_idx, client_id=client_id)

    def excluded(self, client_id: int) -> bool:
        """Whether the client is left out of training for bad data (``quality.bad_data: exclude``)."""
        return self.config.quality.bad_data == "exclude" and client_id in self.data_failures

    def weight_factor(self, client_id: int) -> float:
        """The client's aggregation-weight multiplier (``quality.bad_data: downweight``)."""
        q = self.config.quality
        return q.bad_data_weight if q.bad_data == "downweight" and client_id in self.data_failures else 1.0

    def _rows(self, round_idx: int, selected: list[int], dropped: dict[int, str]) -> dict[int, dict[str, Any]]:
        rows = {}
        for cid in selected:
            row = {"round": round_idx, "client_id": cid, "status": "dropped", "reason": dropped.get(cid, "no reply")}
            if self.data_failures:
                row["data_validation"] = "failed" if cid in self.data_failures else "passed"
            if self.excluded(cid):
                row.update(status="rejected", reason=(
                    f"data validation failed ({', '.join(self.data_failures[cid])}); quality.bad_data = exclude"))
            rows[cid] = row
        return rows

    def _require(self, round_idx: int, accepted: list[int], selected: list[int], rows: dict[int, dict[str, Any]]) -> None:
        if len(accepted) < self.config.server.min_clients:
            n_dropped = sum(r["status"] == "dropped" for r in rows.values())
            n_rejected = sum(r["status"] == "rejected" for r in rows.values())
            raise RoundFailed(
                f"round {round_idx}: only {len(accepted)} usable updates from {len(selected)} selected "
                f"clients ({n_dropped} dropped, {n_rejected} rejected); server.min_clients = "
                f"{self.config.server.min_clients}. The global model was not changed."
            )

    def _apply(
        self, round_idx: int, *, aggregate: torch.Tensor, rows: dict[int, dict[str, Any]], selected: list[int],
        accepted: list[int], bytes_up: int, raw_bytes: int, extra: dict[str, float], started: float,
    ) -> RoundOutcome:
        """Server optimiser step on the aggregate, then the round's metrics and client table."""
        old = self.params
        new = self.config.server.optimizer.step(old, aggregate, self.opt_state)
        codec = self.config.transport.codec
        ctx = self.codec_context(round_idx, None)
        payload = codec.encode_download(new - old, ctx=ctx)
        if payload is not None:  # the global change travels compressed; the server keeps exactly
            new = old + codec.decode_download(payload, ctx=ctx).to(old.dtype)  # what clients rebuild
        self.params = new
        bytes_down = self.download_nbytes * len(selected)
        for cid in selected:
            rows[cid]["bytes_down"] = self.download_nbytes
        self.bytes_up_total += bytes_up
        self.bytes_down_total += bytes_down
        privacy_metrics: dict[str, float] = {}
        losses = [(rows[c]["train_loss"], rows[c]["num_samples"]) for c in accepted if "train_loss" in rows[c]]
        train_loss = sum(l * n for l, n in losses) / sum(n for _, n in losses) if losses else math.nan
        client_eps = [rows[c]["epsilon"] for c in accepted if "epsilon" in rows[c]]
        if client_eps:  # local DP: the worst client's composed epsilon so far
            self.local_epsilon_max = max(self.local_epsilon_max, *client_eps)
            privacy_metrics["privacy/local_epsilon_max"] = self.local_epsilon_max
        metrics = {
            "train/loss": train_loss,
            "clients/selected": float(len(selected)),
            "clients/aggregated": float(len(accepted)),
            "clients/dropped": float(sum(r["status"] == "dropped" for r in rows.values())),
            "clients/rejected": float(sum(r["status"] == "rejected" for r in rows.values())),
            "comm/bytes_up": float(bytes_up),
            "comm/bytes_down": float(bytes_down),
            "comm/bytes_up_total": float(self.bytes_up_total),
            "comm/bytes_down_total": float(self.bytes_down_total),
            "comm/compression_ratio": raw_bytes / bytes_up if bytes_up else math.nan,
            "update/norm": float(aggregate.norm()),
            **extra,
            **privacy_metrics,
            "time/round_s": time.perf_counter() - started,
        }
        table = [rows[c] for c in sorted(rows)]
        return RoundOutcome(round=round_idx, params=self.params, metrics=metrics, client_table=table)

