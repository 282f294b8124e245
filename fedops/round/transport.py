"""How the round's uploads reach the server: in the clear, or through secure aggregation.

Secure aggregation is a protocol between all of a round's clients and the server (Bonawitz et
al. 2017 on SecAgg+'s neighbour graph, :mod:`fedops.secagg`); here it runs as a one-process
simulation of clients, network and server. What comes out is only what the server learns: the
unmasked sum, who survived and why the others dropped, and the bytes each party sent. Clients'
secrets (keys, self-mask seeds, Shamir coefficients) come from the OS CSPRNG; the simulation's
own choices (the neighbour graph, which clients drop) are seeded per round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedops.config import Config
from fedops.errors import RoundFailed
from fedops.rng import STREAM_SECAGG, derive_seed
from fedops.types import EncodedUpdate


@dataclass(frozen=True, eq=False)
class Delivery:
    """What the server receives: individual messages (plain) or a secure sum and its facts."""

    messages: list[EncodedUpdate]
    secure: object | None = None  # fedops.secagg.SecAggResult
    survivors: list[int] | None = None
    dropped: dict[int, str] | None = None
    bytes_up: dict[int, int] | None = None
    seconds: float = 0.0


class PlainTransport:
    name = "plain"

    def deliver(self, round_idx: int, messages: list[EncodedUpdate]) -> Delivery:
        return Delivery(messages=sorted(messages, key=lambda m: m.client_id))

    def summer(self, round_idx: int):
        """How the round sums a small vector per client (FairFed's group counts): in the clear."""
        from fedops.fairness.fairfed import plain_sum

        return plain_sum


@dataclass(frozen=True)
class SecureTransport:
    """SecAgg(+) over the round's fixed-point vectors; an abort fails the round (nothing unmasked)."""

    config: Config
    name: str = "secagg"

    def deliver(self, round_idx: int, messages: list[EncodedUpdate]) -> Delivery:
        from fedops.secagg import SecAggAborted, default_k, default_threshold, sample_dropouts, secure_sum

        sa = self.config.secagg
        inputs = {m.client_id: m.payload for m in messages}
        n = len(inputs)
        if n < 2:
            raise RoundFailed(
                f"round {round_idx}: secure aggregation needs at least 2 clients with an update, got {n}; "
                "nothing was unmasked and the global model was not changed"
            )
        k = None if sa.complete_graph else (sa.neighbours or default_k(n))
        threshold = sa.threshold or default_threshold(k if k is not None else max(n - 1, 1))
        seed = derive_seed(self.config.seed, STREAM_SECAGG, round_idx)
        drop = (sample_dropouts(sorted(inputs), fraction=sa.dropout_fraction, stage=sa.dropout_stage, seed=seed)
                if sa.dropout_fraction > 0 else None)
        try:
            result = secure_sum(inputs, bits=sa.bits, threshold=threshold, k=k, seed=seed, drop_after=drop)
        except SecAggAborted as exc:
            raise RoundFailed(
                f"round {round_idx}: secure aggregation aborted ({exc}); nothing was unmasked and the global "
                "model was not changed"
            ) from None
        return Delivery(messages=[], secure=result, survivors=sorted(result.survivors), dropped=dict(result.dropped),
                        bytes_up=dict(result.bytes_up), seconds=float(result.timings.get("total", 0.0)))

    def summer(self, round_idx: int):
        """A secure sum of one small vector per client (FairFed's group counts, then its gaps), by
        the same protocol as the updates: the server learns only the sum. Counts are integers
        (scale 1, exact); reals in [-2, 2] use ``secagg.scale`` (error <= n * 0.5 / scale)."""
        from fedops.secagg import default_k, default_threshold, secure_sum
        from fedops.secagg.quantize import dequantize_sum, quantize

        sa = self.config.secagg
        calls = iter(range(1, 1_000_000))

        def summed(vectors, kind: str):
            ids = sorted(vectors)
            n = len(ids)
            if n < 2:
                raise RoundFailed(f"round {round_idx}: a secure sum needs at least 2 clients, got {n}")
            if kind == "counts":
                clip, scale = float(min(2 ** 20, (2 ** (sa.bits - 1) - 1) // (2 * n))), 1.0
            else:
                clip, scale = 2.0, sa.scale
            if kind == "counts":  # counts must arrive exactly: refuse what quantisation would clip
                big = max(float(np.abs(np.asarray(vectors[c], dtype=np.float64)).max(initial=0.0)) for c in ids)
                if big > clip:
                    raise ValueError(f"round {round_idx}: a count of {big:g} is above {clip:g}, the largest that a "
                                     f"secure sum of {n} clients with secagg.bits = {sa.bits} carries exactly")
            q = {c: quantize(np.asarray(vectors[c], dtype=np.float64), clip=clip, scale=scale, bits=sa.bits)
                 for c in ids}
            k = None if sa.complete_graph else (sa.neighbours or default_k(n))
            threshold = sa.threshold or default_threshold(k if k is not None else max(n - 1, 1))
            try:
                result = secure_sum(q, bits=sa.bits, threshold=threshold, k=k,
                                    seed=derive_seed(self.config.seed, STREAM_SECAGG, round_idx, next(calls)))
            except Exception as exc:  # noqa: BLE001 - an abort fails the round, nothing is unmasked
                raise RoundFailed(f"round {round_idx}: secure sum of FairFed's statistics failed ({exc})") from None
            return dequantize_sum(result.sum, n=len(result.survivors), scale=scale, bits=sa.bits)

        return summed


def transport_for(config: Config) -> PlainTransport | SecureTransport:
    return SecureTransport(config) if config.secagg.enabled else PlainTransport()
