"""One federated round's secure aggregation: the clients' quantised vectors go through the
protocol (one-process simulation of clients, network and the server's protocol state); what comes
back holds only the unmasked sum, the survivors, drop reasons and byte counts."""

from __future__ import annotations

from fedops.config import Config
from fedops.rng import STREAM_SECAGG, derive_seed
from fedops.secagg.errors import SecAggAborted
from fedops.secagg.graph import default_k, default_threshold
from fedops.secagg.simulate import SecAggResult, sample_dropouts, secure_sum
from fedops.server.engine import RoundFailed
from fedops.types import EncodedUpdate


def secure_round(cfg: Config, round_idx: int, received: list[EncodedUpdate]) -> SecAggResult:
    """SecAgg(+) over ``received``; an abort becomes :class:`RoundFailed` (nothing unmasked)."""
    sa = cfg.secagg
    inputs = {m.client_id: m.payload for m in received}  # the quantised vectors in Z_M
    n = len(inputs)
    k = None if sa.complete_graph else (sa.neighbours or default_k(n))
    threshold = sa.threshold or default_threshold(k if k is not None else max(n - 1, 1))
    seed = derive_seed(cfg.seed, STREAM_SECAGG, round_idx)
    drop = (sample_dropouts(sorted(inputs), fraction=sa.dropout_fraction, stage=sa.dropout_stage, seed=seed)
            if sa.dropout_fraction > 0 else None)
    try:
        return secure_sum(inputs, bits=sa.bits, threshold=threshold, k=k, seed=seed, drop_after=drop)
    except SecAggAborted as exc:
        raise RoundFailed(
            f"round {round_idx}: secure aggregation aborted ({exc}); nothing was unmasked and the global "
            "model was not changed"
        ) from None
