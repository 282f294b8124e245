"""The server's update path, as small steps built once from the config (see DESIGN: one round):

    plain transport:  decode -> validate -> [norm filter] -> aggregate -> [anomaly scores]
    secure transport: (the protocol hands over the unmasked sum) -> aggregate the sum -> lift
    then:             server optimiser -> the download the clients rebuild

Aggregation is one object with two entry points: :meth:`Aggregation.of_updates` for individual
updates and :meth:`Aggregation.of_sum` for the sum secure aggregation reveals. Client-level DP is a
wrapper around the sum (:class:`CentralDP`, as Flower's DP strategies wrap theirs): it clips,
sums, adds Gaussian noise and divides by the expected cohort, whichever form the updates came in.

Everything here is server-side: it sees wire messages and what clients chose to report, never
which clients the simulator made faulty or malicious.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from fedops.config import Config
from fedops.errors import RoundFailed
from fedops.types import EncodedUpdate


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
    # one reduction first: a NaN or an Inf anywhere makes the sum non-finite; only a non-finite sum
    # (which finite values can reach by overflowing) needs the elementwise check
    if not math.isfinite(float(delta.sum())) and not bool(torch.isfinite(delta).all()):
        return Verdict(False, "non-finite values (NaN or Inf)")
    return Verdict(True)


@dataclass
class UpdateBatch:
    """The round's accepted individual updates, in client-id order."""

    client_ids: list[int]
    deltas: list[torch.Tensor]
    weights: list[float]
    indicators: list[int | None]
    losses: list[float | None] = field(default_factory=list)
    """Each client's reported loss on its training rows before training (q-FFL's ``F_k``), or None."""

    def keep(self, mask: list[bool]) -> "UpdateBatch":
        pick = [i for i, k in enumerate(mask) if k]
        return UpdateBatch([self.client_ids[i] for i in pick], [self.deltas[i] for i in pick],
                           [self.weights[i] for i in pick], [self.indicators[i] for i in pick],
                           [self.losses[i] for i in pick] if self.losses else [])

    @property
    def stack(self) -> torch.Tensor:
        """The deltas as one ``[k, d]`` tensor (made once per batch; a batch's lists are not changed)."""
        cached = self.__dict__.get("_stack")  # (the deltas it was made of, held, so no id is reused; the stack)
        if cached is None or len(cached[0]) != len(self.deltas) or any(a is not b for a, b in zip(cached[0], self.deltas)):
            cached = self.__dict__["_stack"] = (list(self.deltas), torch.stack(self.deltas))
        return cached[1]

    @property
    def unclipped(self) -> int | None:
        """How many clients reported ``||u|| <= C`` (None unless every one of them sent the bit)."""
        return None if any(i is None for i in self.indicators) else int(sum(self.indicators))


@dataclass(frozen=True, eq=False)
class SecureSum:
    """What the secure-aggregation protocol reveals: the unmasked sum mod M of the survivors'
    fixed-point vectors, and who survived."""

    total: np.ndarray
    survivors: list[int]


class StackMemory:
    """The memory under the server's ``[k, d]`` float32 stack, kept from one round to the next.

    A fresh 80 MB stack (W2) costs about 0.05 s a round in first-touch page faults. The memory is
    reused only when nothing holds the previous stack any more: every tensor on it (the stack, its
    rows, any view) keeps the numpy array under it alive, so the array's reference count says
    whether it is free. Memory still held by anyone is never written: a new array is taken."""

    def __init__(self) -> None:
        self._array: np.ndarray | None = None

    def take(self, rows: int, dim: int) -> torch.Tensor:
        """An uninitialised ``[rows, dim]`` float32 tensor that no live tensor shares memory with."""
        import sys

        free = self._array is not None and sys.getrefcount(self._array) <= 2  # this attribute and the call's argument
        if not (free and self._array.shape[1] == dim and self._array.shape[0] >= rows):
            self._array = np.empty((max(rows, 1), dim), dtype=np.float32)
        return torch.from_numpy(self._array[:rows])


def decode_and_validate(messages: list[EncodedUpdate], *, codec: Any, ctx_for, dim: int,
                        weight_factor, rows: dict[int, dict[str, Any]],
                        memory: StackMemory | None = None, consume: bool = False) -> UpdateBatch:
    """Decode each payload and check it; a client whose payload fails is rejected with the reason.
    ``memory``: where the stack goes (reused across rounds when free), else fresh memory.
    ``consume``: the caller hands the messages over: each leaves ``messages`` as it is decoded (its
    payload is freed once its row is in the stack, if nothing else holds it), and the list ends
    empty."""
    batch = UpdateBatch([], [], [], [])
    # each payload is decoded straight into the next free row of the round's stack: one copy per
    # update, no second one to stack them; a rejected payload's row is reused by the next
    buffer = (memory.take(len(messages), dim) if memory is not None
              else torch.empty(len(messages), dim, dtype=torch.float32))
    order = sorted(range(len(messages)), key=lambda i: messages[i].client_id)
    for i in order:
        msg = messages[i]
        if consume:
            messages[i] = None
        row = rows[msg.client_id]
        delta = buffer[len(batch.deltas)]
        try:
            codec.decode_into(msg.payload, ctx=ctx_for(msg.client_id), out=delta)
        except ValueError as exc:
            row.update(status="rejected", reason=f"undecodable {codec.name} payload: {exc}")
            continue
        verdict = check_update(delta, expected_size=dim)
        if not verdict.ok:
            row.update(status="rejected", reason=verdict.reason)
            continue
        row.update(status="ok", reason="")
        factor = weight_factor(msg.client_id)
        if factor != 1.0:
            row["weight_factor"] = factor
        batch.client_ids.append(msg.client_id)
        batch.deltas.append(delta)
        base = float(msg.num_samples) if msg.weight is None else float(msg.weight)
        batch.weights.append(base * factor)
        batch.indicators.append(msg.clip_indicator)
        batch.losses.append(row.get("loss_before"))
    msg = None  # the last payload too
    if consume:
        messages.clear()
    batch.__dict__["_stack"] = (list(batch.deltas), buffer[:len(batch.deltas)])
    return batch


@dataclass(frozen=True)
class NormFilter:
    """``quality.norm_multiple``: reject updates whose norm exceeds ``multiple`` x the round's median."""

    multiple: float

    def __call__(self, batch: UpdateBatch, rows: dict[int, dict[str, Any]]) -> UpdateBatch:
        if len(batch.deltas) < 3:
            return batch
        from fedops.quality import norm_outliers

        outlier, norms, median = norm_outliers(batch.stack, multiple=self.multiple)
        for i, cid in enumerate(batch.client_ids):
            if bool(outlier[i]):
                rows[cid].update(status="rejected", reason=(
                    f"update norm {float(norms[i]):.4g} > {self.multiple:g} x the round's median norm {median:.4g}"))
        return batch.keep([not bool(o) for o in outlier])


class Aggregation(Protocol):
    def of_updates(self, batch: UpdateBatch, *, round_idx: int, reference: torch.Tensor | None
                   ) -> tuple[torch.Tensor, dict[str, float]]: ...

    def of_sum(self, summed: SecureSum, *, round_idx: int) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass(frozen=True)
class RuleAggregation:
    """The configured rule (FedAvg or a robust rule) on individual updates; under secure
    aggregation, FedAvg's sample-weighted mean read from the sum (weights ride in the sum)."""

    rule: Any
    fixed_point: dict[str, Any] | None = None
    """``clip``, ``scale``, ``bits`` of secure aggregation's fixed point (None without it)."""

    lr: float | None = None
    """The clients' local learning rate (q-FFL's ``L = 1 / lr``)."""

    def of_updates(self, batch, *, round_idx, reference):
        extra: dict[str, Any] = {"reference": reference} if getattr(self.rule, "needs_reference", False) else {}
        if getattr(self.rule, "needs_losses", False):
            if any(v is None for v in batch.losses):
                missing = [c for c, v in zip(batch.client_ids, batch.losses) if v is None]
                raise RoundFailed(f"round {round_idx}: clients {missing} sent no loss, which "
                                  f"{self.rule.name} needs. The global model was not changed.")
            extra.update(losses=torch.tensor(batch.losses, dtype=torch.float64), lr=self.lr)
        try:
            aggregate, metrics = self.rule.aggregate(batch.stack, weights=torch.tensor(batch.weights, dtype=torch.float32),
                                                     **extra)
        except ValueError as exc:  # e.g. rejections left fewer updates than the rule's assumption needs
            raise RoundFailed(f"round {round_idx}: {exc}. The global model was not changed.") from None
        return aggregate, {f"aggregate/{k}": v for k, v in metrics.items()}

    def of_sum(self, summed, *, round_idx):
        from fedops.secagg.encode import decode_weighted

        try:
            mean = decode_weighted(summed.total, n=len(summed.survivors), **self.fixed_point)
        except ValueError as exc:
            raise RoundFailed(f"round {round_idx}: {exc}") from None
        return torch.from_numpy(mean), {}


@dataclass
class CentralDP:
    """Client-level DP-FedAvg around the sum (McMahan et al. 2018): the clients clipped on their
    devices; here each decoded update is clipped again (a codec may change the norm), the sum is
    noised and divided by the expected cohort, and the round is accounted. Under secure
    aggregation the sum arrives already formed from clipped vectors. Noise comes from ``noise_for``
    (the privacy randomness). Only noised quantities leave: see :mod:`fedops.round.release`."""

    dp: Any  # fedops.privacy.DPFedAvg: clip norm and ledger live across rounds
    expected_cohort: float
    noise_for: Any  # round index -> fedops.privacy.dp_fedavg.Noise
    adaptive: bool
    fixed_point: dict[str, Any] | None = None

    def of_updates(self, batch, *, round_idx, reference):
        aggregate, metrics = self.dp.aggregate(batch.stack, expected_cohort=self.expected_cohort,
                                               unclipped=batch.unclipped, noise=self.noise_for(round_idx))
        return aggregate, {f"privacy/{k}": v for k, v in metrics.items()}

    def of_sum(self, summed, *, round_idx):
        from fedops.secagg.encode import decode_dp

        total, unclipped = decode_dp(summed.total, n=len(summed.survivors), **self.fixed_point)
        average, metrics = self.dp.noised_average(
            torch.from_numpy(total), unclipped=unclipped if self.adaptive else None, cohort=len(summed.survivors),
            expected_cohort=self.expected_cohort, noise=self.noise_for(round_idx),
        )
        return average, {f"privacy/{k}": v for k, v in metrics.items()}


@dataclass(frozen=True)
class AnomalyScores:
    """Per-client robust norm z, cosine to the aggregate, Krum score and a flag (client table)."""

    num_byzantine: int | None
    flag_norm_z: float
    flag_cosine_z: float
    min_clients: int

    def __call__(self, batch: UpdateBatch, aggregate: torch.Tensor, rows: dict[int, dict[str, Any]]) -> float:
        from fedops.quality import anomaly_scores

        scores = anomaly_scores(batch.stack, aggregate, num_byzantine=self.num_byzantine,
                                flag_norm_z=self.flag_norm_z, flag_cosine_z=self.flag_cosine_z,
                                min_clients=self.min_clients)
        for i, cid in enumerate(batch.client_ids):
            rows[cid].update(scores.row(i))
        return float(scores.flagged.sum())


@dataclass
class ServerOptimizerStep:
    """The server optimiser on the aggregate, then the global change as the clients rebuild it
    (a codec with a compressed download, RPN, sends the change compressed)."""

    optimizer: Any
    codec: Any
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self, params: torch.Tensor, aggregate: torch.Tensor, *, ctx) -> torch.Tensor:
        new = self.optimizer.step(params, aggregate, self.state)
        payload = self.codec.encode_download(new - params, ctx=ctx)
        if payload is not None:  # the server keeps exactly what the clients rebuild
            new = params + self.codec.decode_download(payload, ctx=ctx).to(params.dtype)
        return new


def build_aggregation(config: Config, *, num_clients: int, expected_cohort: float, noise_for) -> tuple[Aggregation, Any]:
    """The configured aggregation and, under central DP, its DPFedAvg (whose state is checkpointed)."""
    sa = config.secagg
    fixed_point = {"clip": sa.clip, "scale": sa.scale, "bits": sa.bits} if sa.enabled else None
    p = config.privacy
    if p.mode != "central":
        return RuleAggregation(config.server.aggregator, fixed_point, lr=config.client.lr), None
    from fedops.privacy import DPFedAvg, DPFedAvgConfig, solve_noise_multiplier

    sigma = p.noise_multiplier
    if sigma is None:  # solve sigma so that server.rounds rounds spend target_epsilon
        sigma = solve_noise_multiplier(target_epsilon=p.target_epsilon, delta=p.delta,
                                       sample_rate=expected_cohort / num_clients, steps=config.server.rounds,
                                       accountant=p.accountant)
    dp = DPFedAvg(DPFedAvgConfig(
        noise_multiplier=float(sigma), clip_norm=p.clip_norm, adaptive=p.adaptive_clipping,
        target_quantile=p.target_quantile, clip_lr=p.clip_lr, clip_count_stddev=p.clip_count_stddev,
        population=num_clients, accountant=p.accountant, delta=p.delta,
    ))
    return CentralDP(dp, float(expected_cohort), noise_for, p.adaptive_clipping, fixed_point), dp
