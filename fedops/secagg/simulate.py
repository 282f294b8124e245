"""One-process driver: runs every client and the server of a secure-aggregation round in turn.

The simulation's own randomness (graph, which clients drop) is seeded; key generation, self-mask
seeds and Shamir coefficients come from the OS CSPRNG, so the masked vectors differ run to run
but the unmasked sum does not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fedops.secagg.errors import InsufficientNeighbours, ProtocolViolation, SecAggAborted
from fedops.secagg.graph import neighbour_graph
from fedops.secagg.messages import EncryptedShare, MaskedInput, UnmaskRequest
from fedops.secagg.protocol import ClientState, ServerState
from fedops.secagg.quantize import modulus

STAGES = ("start", "advertise", "share", "masked")
"""Drop points: ``start`` never advertises; ``advertise`` sends its keys then goes silent;
``share`` sends its encrypted shares then goes silent; ``masked`` sends its masked input and
then does not answer the unmasking request (its input is still in the sum)."""


@dataclass(frozen=True)
class Tamper:
    """Faults injected by the driver (network or a faulty party), for tests.

    bad_length: clients whose masked vector is sent one coordinate too long.
    corrupt_shares: (sender, recipient) pairs whose share ciphertext gets a flipped byte in transit.
    overlap: the server names one survivor also as dropped in the unmasking request.
    """

    bad_length: frozenset[int] = frozenset()
    corrupt_shares: frozenset[tuple[int, int]] = frozenset()
    overlap: bool = False


@dataclass(frozen=True, eq=False)
class SecAggResult:
    sum: np.ndarray  # Σ_{u in survivors} x_u mod 2**bits, uint64
    survivors: list[int]  # clients whose input is in the sum
    dropped: dict[int, str]  # clients whose input is not in the sum, with the reason
    offline_at_unmask: list[int]  # survivors that did not answer the unmasking request
    bytes_up: dict[int, int]
    bytes_down: dict[int, int]
    timings: dict[str, float] = field(default_factory=dict)


def sample_dropouts(ids: list[int], *, fraction: float, stage: str, seed: int) -> dict[str, set[int]]:
    """round(fraction * len(ids)) clients, chosen with a seeded RNG, drop after ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose from {STAGES}")
    count = int(round(fraction * len(ids)))
    chosen = np.random.default_rng(seed).choice(sorted(ids), size=count, replace=False)
    return {stage: {int(c) for c in chosen}}


def secure_sum(
    inputs: dict[int, np.ndarray],
    *,
    bits: int,
    threshold: int,
    k: int | None,
    seed: int,
    drop_after: dict[str, set[int]] | None = None,
    tamper: Tamper | None = None,
    min_survivors: int | None = None,
    shamir_backend: str = "prime",
) -> SecAggResult:
    """Run SecAgg (k=None) or SecAgg+ (k = neighbours per client) over ``inputs`` (uint64 in Z_M).

    Raises SecAggAborted when the protocol cannot finish; then no sum exists.
    """
    t_start = time.perf_counter()
    modulus(bits)
    ids = sorted(int(u) for u in inputs)
    if len(ids) < 2:
        raise ValueError("secure_sum needs at least 2 clients")
    dims = {np.asarray(v).shape for v in inputs.values()}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise ValueError(f"inputs must be 1-D vectors of one length, got shapes {sorted(dims)}")
    dim = next(iter(dims))[0]
    for u in ids:
        x = np.asarray(inputs[u])
        if x.dtype != np.uint64:
            raise ValueError(f"input of client {u} has dtype {x.dtype}; quantize to uint64 first")
        if bits == 32 and dim and int(x.max()) >= 1 << 32:
            raise ValueError(f"input of client {u} has entries >= 2**32")
    drop_after = {s: set(v) for s, v in (drop_after or {}).items()}
    for s in drop_after:
        if s not in STAGES:
            raise ValueError(f"unknown drop stage {s!r}; choose from {STAGES}")
    tamper = tamper or Tamper()
    gone_after = {u: s for s in STAGES for u in drop_after.get(s, ())}

    idx_graph = neighbour_graph(len(ids), k=k, seed=seed)
    graph = {ids[i]: [ids[j] for j in nb] for i, nb in enumerate(idx_graph)}
    clients = {
        u: ClientState(u, graph[u], threshold=threshold, bits=bits, dim=dim, shamir_backend=shamir_backend)
        for u in ids
    }
    server = ServerState(
        graph, threshold=threshold, bits=bits, dim=dim, min_survivors=min_survivors, shamir_backend=shamir_backend
    )
    up = dict.fromkeys(ids, 0)
    down = dict.fromkeys(ids, 0)
    reasons: dict[int, str] = {}
    timings: dict[str, float] = {"setup": time.perf_counter() - t_start}

    # Round 0: AdvertiseKeys
    t0 = time.perf_counter()
    adv = []
    for u in ids:
        if gone_after.get(u) == "start":
            reasons[u] = "dropped before AdvertiseKeys"
            continue
        m = clients[u].advertise()
        up[u] += m.wire_size(bits)
        adv.append(m)
    routed = server.collect_advertise(adv)
    timings["advertise"] = time.perf_counter() - t0

    # Round 1: ShareKeys
    t0 = time.perf_counter()
    share_msgs = []
    for u, r in routed.items():
        if gone_after.get(u) == "advertise":
            reasons[u] = "dropped after AdvertiseKeys"
            continue
        down[u] += r.wire_size(bits)
        try:
            m = clients[u].share_keys(r)
        except InsufficientNeighbours as exc:
            reasons[u] = str(exc)
            continue
        up[u] += m.wire_size(bits)
        if tamper.corrupt_shares:
            m = type(m)(m.client_id, tuple(_maybe_corrupt(s, tamper.corrupt_shares) for s in m.shares))
        share_msgs.append(m)
    bundles = server.collect_shares(share_msgs)
    timings["share_keys"] = time.perf_counter() - t0

    # Round 2: MaskedInputCollection
    t0 = time.perf_counter()
    masked: list[MaskedInput] = []
    for u, b in bundles.items():
        if gone_after.get(u) == "share":
            reasons[u] = "dropped after ShareKeys"
            continue
        down[u] += b.wire_size(bits)
        m = clients[u].masked_input(b, inputs[u])
        if u in tamper.bad_length:
            m = MaskedInput(u, np.append(m.y, np.uint64(0)), m.complaints)
        up[u] += m.wire_size(bits)
        masked.append(m)
    request = server.collect_masked(masked)
    del masked
    timings["masked_input"] = time.perf_counter() - t0

    # Round 3: Unmasking
    t0 = time.perf_counter()
    if tamper.overlap and request.survivors:
        request = UnmaskRequest(request.survivors, tuple(sorted({*request.dropped, request.survivors[0]})))
    responses = []
    refusals = []
    offline = []
    for u in request.survivors:
        if gone_after.get(u) == "masked":
            offline.append(u)
            continue
        down[u] += request.wire_size(bits)
        try:
            m = clients[u].unmask(request)
        except ProtocolViolation as exc:
            refusals.append(str(exc))
            continue
        up[u] += m.wire_size(bits)
        responses.append(m)
    if refusals:
        raise SecAggAborted(f"{len(refusals)} clients refused to unmask; first: {refusals[0]}")
    total = server.collect_unmask(responses)
    timings["unmasking"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    survivors = sorted(request.survivors)
    dropped = {u: reasons.get(u, server.dropped.get(u, "dropped")) for u in ids if u not in set(survivors)}
    return SecAggResult(total, survivors, dropped, sorted(offline), up, down, timings)


def _maybe_corrupt(s: EncryptedShare, pairs: frozenset[tuple[int, int]]) -> EncryptedShare:
    if (s.sender, s.recipient) not in pairs:
        return s
    ct = bytearray(s.ciphertext)
    ct[-1] ^= 0x01
    return EncryptedShare(s.sender, s.recipient, bytes(ct))


__all__ = ["STAGES", "SecAggResult", "Tamper", "sample_dropouts", "secure_sum"]
