"""The four rounds of SecAgg (Bonawitz et al. 2017) on a SecAgg+ neighbour graph (Bell et al. 2020).

Roles are kept apart: a :class:`ClientState` only sees the messages the server routes to it, a
:class:`ServerState` only sees client messages. Messages are the dataclasses of
:mod:`fedops.secagg.messages`.

Rounds (U1 ⊇ U2 ⊇ U3 ⊇ U4 are the clients alive at each step; N(u) the neighbours of u):

0. AdvertiseKeys: u makes X25519 pairs (c_u: share encryption, s_u: mask agreement), sends the
   public keys. The server forwards to u the keys of N(u) ∩ U1.
1. ShareKeys: u draws the self-mask seed b_u, Shamir-shares b_u and s_u^SK t-of-n among its live
   neighbours, encrypts each pair of shares for its recipient (ChaCha20-Poly1305 under
   HKDF(X25519(c_u, c_v))). The server routes ciphertexts between clients of U2.
2. MaskedInputCollection: u decrypts the shares it received (a share failing authentication is
   reported as a complaint; its sender is then treated as dropped), and sends
   y_u = x_u + PRG(b_u) + Σ_{v∈N(u)∩U2, u<v} PRG(s_uv) − Σ_{v∈N(u)∩U2, u>v} PRG(s_uv)  (mod M).
3. Unmasking: the server names survivors U3 and dropped D = U2 \\ U3. Each u ∈ U3 checks that the
   sets are disjoint (else it refuses: :class:`ProtocolViolation`) and returns its shares of b_v
   for v ∈ U3 and of s_v^SK for v ∈ D. The server checks it has t shares of every needed secret
   before reconstructing anything (else :class:`SecAggAborted`), then removes the self masks of
   U3 and the pairwise masks between U3 and D. The result is Σ_{u∈U3} x_u mod M.

No client ever reveals both b_v and s_v^SK of the same v: the unmasking request is answered at
most once, and only for disjoint sets.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from fedops.secagg import crypto
from fedops.secagg.errors import InsufficientNeighbours, ProtocolViolation, SecAggAborted, ShareDecryptionError
from fedops.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    MaskedInput,
    RoutedKeys,
    ShareBundle,
    ShareKeys,
    ShareOut,
    UnmaskRequest,
    UnmaskResponse,
)
from fedops.secagg.prg import accumulate_mask
from fedops.secagg.quantize import modulus, reduce

_HEADER = struct.Struct(">qqI")  # sender, recipient, Shamir index


def _aad(sender: int, recipient: int) -> bytes:
    return b"fedops/secagg/v1/share" + struct.pack(">qq", sender, recipient)


def _check_vector(y: object, *, dim: int, bits: int) -> str | None:
    """None if ``y`` is a valid element of Z_M^dim, else a reason string."""
    if not isinstance(y, np.ndarray):
        return f"masked input is a {type(y).__name__}, not a numpy array"
    if y.ndim != 1 or y.shape[0] != dim:
        return f"masked input of the wrong length: shape {y.shape}, expected ({dim},)"
    if y.dtype != np.uint64:
        return f"masked input has dtype {y.dtype}, expected uint64"
    if bits == 32 and dim and int(y.max()) >= modulus(32):
        return "masked input has entries >= 2**32"
    return None


class ClientState:
    """One client's side of the protocol. Call the round methods in order."""

    def __init__(
        self,
        client_id: int,
        neighbours: list[int],
        *,
        threshold: int,
        bits: int,
        dim: int,
        shamir_backend: str = "prime",
    ) -> None:
        if client_id in neighbours:
            raise ValueError(f"client {client_id} listed as its own neighbour")
        self.id = int(client_id)
        self.neighbours = frozenset(int(v) for v in neighbours)
        self.threshold = threshold
        self.bits = bits
        self.dim = dim
        self.backend = shamir_backend
        self._c = crypto.generate_keypair()
        self._s = crypto.generate_keypair()
        self._b: bytes | None = None
        self._peers: dict[int, AdvertiseKeys] = {}
        self._enc_keys: dict[int, bytes] = {}  # neighbour -> share-encryption key
        self._held: dict[int, tuple[int, bytes, bytes]] = {}  # owner -> (x, b share, s share)
        self._partners: frozenset[int] = frozenset()
        self._answered = False

    # round 0
    def advertise(self) -> AdvertiseKeys:
        return AdvertiseKeys(self.id, self._c.public, self._s.public)

    # round 1
    def share_keys(self, routed: RoutedKeys) -> ShareKeys:
        peers: dict[int, AdvertiseKeys] = {}
        seen_keys = {self._c.public, self._s.public}
        for k in routed.keys:
            if k.client_id not in self.neighbours:
                raise ProtocolViolation(f"client {self.id}: server sent keys of non-neighbour {k.client_id}")
            if k.client_id in peers:
                raise ProtocolViolation(f"client {self.id}: keys of client {k.client_id} sent twice")
            if len(k.c_pk) != 32 or len(k.s_pk) != 32 or {k.c_pk, k.s_pk} & seen_keys or k.c_pk == k.s_pk:
                raise ProtocolViolation(f"client {self.id}: malformed or repeated public keys for {k.client_id}")
            seen_keys |= {k.c_pk, k.s_pk}
            peers[k.client_id] = k
        if len(peers) < self.threshold:
            raise InsufficientNeighbours(
                f"client {self.id} has {len(peers)} live neighbours, fewer than the threshold {self.threshold}"
            )
        self._peers = peers
        self._b = os.urandom(32)
        recipients = sorted(peers)
        b_sh = crypto.split_secret(self._b, threshold=self.threshold, n_shares=len(recipients), backend=self.backend)
        s_sh = crypto.split_secret(
            crypto.private_bytes(self._s.private),
            threshold=self.threshold,
            n_shares=len(recipients),
            backend=self.backend,
        )
        out = []
        for v, (x, b), (x2, s) in zip(recipients, b_sh, s_sh, strict=True):
            assert x == x2
            key = crypto.agree(self._c.private, peers[v].c_pk, info=crypto.INFO_SHARE_ENCRYPTION)
            self._enc_keys[v] = key
            pt = _HEADER.pack(self.id, v, x) + b + s
            out.append(EncryptedShare(self.id, v, crypto.encrypt(key, pt, _aad(self.id, v))))
        return ShareKeys(self.id, tuple(out))

    def _open(self, es: EncryptedShare) -> tuple[int, bytes, bytes]:
        pt = crypto.decrypt(self._enc_keys[es.sender], es.ciphertext, _aad(es.sender, self.id))
        size = crypto.share_size(self.backend)
        if len(pt) != _HEADER.size + 2 * size:
            raise ShareDecryptionError(f"share plaintext has {len(pt)} bytes, expected {_HEADER.size + 2 * size}")
        sender, recipient, x = _HEADER.unpack_from(pt)
        if sender != es.sender or recipient != self.id or x < 1:
            raise ShareDecryptionError(f"share header ({sender}->{recipient}, x={x}) does not match")
        body = pt[_HEADER.size :]
        return x, body[:size], body[size:]

    # round 2
    def masked_input(self, bundle: ShareBundle, x: np.ndarray) -> MaskedInput:
        if self._b is None:
            raise ProtocolViolation(f"client {self.id}: masked_input before share_keys")
        x = np.asarray(x)
        reason = _check_vector(x, dim=self.dim, bits=self.bits)
        if reason:
            raise ValueError(f"client {self.id}: own input invalid: {reason}")
        partners: set[int] = set()
        complaints: list[tuple[int, str]] = []
        for es in bundle.shares:
            if es.recipient != self.id or es.sender not in self._peers or es.sender in partners:
                raise ProtocolViolation(f"client {self.id}: unexpected share {es.sender}->{es.recipient}")
            partners.add(es.sender)
            try:
                self._held[es.sender] = self._open(es)
            except ShareDecryptionError as exc:
                complaints.append((es.sender, str(exc)))
        self._partners = frozenset(partners)
        y = x.astype(np.uint64, copy=True)
        accumulate_mask(y, self._b, bits=self.bits)
        for v in sorted(partners):
            seed = crypto.agree(self._s.private, self._peers[v].s_pk)
            accumulate_mask(y, seed, bits=self.bits, subtract=self.id > v)
        return MaskedInput(self.id, reduce(y, bits=self.bits), tuple(complaints))

    # round 3
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        if self._answered:
            raise ProtocolViolation(f"client {self.id}: unmasking already answered; refusing a second request")
        surv, drop = set(request.survivors), set(request.dropped)
        both = surv & drop
        if both:
            raise ProtocolViolation(
                f"client {self.id} refuses to unmask: server names {sorted(both)} both surviving and dropped"
            )
        if len(surv) != len(request.survivors) or len(drop) != len(request.dropped):
            raise ProtocolViolation(f"client {self.id} refuses to unmask: repeated client ids in the request")
        if self.id not in surv:
            raise ProtocolViolation(f"client {self.id} refuses to unmask: it is not listed as a survivor")
        if len(surv) < self.threshold:
            raise ProtocolViolation(
                f"client {self.id} refuses to unmask: {len(surv)} survivors, fewer than the threshold {self.threshold}"
            )
        self._answered = True
        b_out = tuple(ShareOut(v, self._held[v][0], self._held[v][1]) for v in sorted(surv) if v in self._held)
        s_out = tuple(ShareOut(v, self._held[v][0], self._held[v][2]) for v in sorted(drop) if v in self._held)
        return UnmaskResponse(self.id, b_out, s_out)


class ServerState:
    """The server's side. ``graph`` maps each client id to its neighbour ids (symmetric)."""

    def __init__(
        self,
        graph: dict[int, list[int]],
        *,
        threshold: int,
        bits: int,
        dim: int,
        min_survivors: int | None = None,
        shamir_backend: str = "prime",
    ) -> None:
        for u, nb in graph.items():
            for v in nb:
                if v == u or u not in graph.get(v, ()):
                    raise ValueError(f"graph is not symmetric/loop-free at edge ({u}, {v})")
        self.graph = {int(u): frozenset(int(v) for v in nb) for u, nb in graph.items()}
        self.threshold = threshold
        self.bits = bits
        self.dim = dim
        self.min_survivors = threshold if min_survivors is None else min_survivors
        self.backend = shamir_backend
        self.dropped: dict[int, str] = {}
        self.keys: dict[int, AdvertiseKeys] = {}
        self.u1: set[int] = set()
        self.u2: set[int] = set()
        self.u3: set[int] = set()
        self.u4: set[int] = set()
        self._bad_holders: dict[int, set[int]] = {}  # owner -> holders whose share of it is invalid
        self._sum: np.ndarray | None = None
        self._request: UnmaskRequest | None = None

    def _drop(self, u: int, reason: str) -> None:
        self.dropped.setdefault(u, reason)

    def _require(self, alive: set[int], stage: str) -> None:
        if len(alive) < self.min_survivors:
            raise SecAggAborted(
                f"{stage}: {len(alive)} clients left, fewer than the minimum of {self.min_survivors} survivors"
            )

    def collect_advertise(self, msgs: list[AdvertiseKeys]) -> dict[int, RoutedKeys]:
        for m in msgs:
            u = m.client_id
            if u not in self.graph or u in self.keys:
                continue
            if len(m.c_pk) != 32 or len(m.s_pk) != 32 or m.c_pk == m.s_pk:
                self._drop(u, "malformed AdvertiseKeys")
                continue
            self.keys[u] = m
        for u in self.graph:
            if u not in self.keys:
                self._drop(u, "no AdvertiseKeys received")
        self.u1 = set(self.keys)
        self._require(self.u1, "AdvertiseKeys")
        return {u: RoutedKeys(tuple(self.keys[v] for v in sorted(self.graph[u] & self.u1))) for u in sorted(self.u1)}

    def collect_shares(self, msgs: list[ShareKeys]) -> dict[int, ShareBundle]:
        got: dict[int, ShareKeys] = {}
        for m in msgs:
            u = m.client_id
            if u not in self.u1 or u in got:
                continue
            expected = self.graph[u] & self.u1
            recips = [s.recipient for s in m.shares]
            if any(s.sender != u for s in m.shares) or len(set(recips)) != len(recips) or set(recips) != expected:
                self._drop(u, "malformed ShareKeys (recipients do not match its live neighbours)")
                continue
            got[u] = m
        for u in self.u1 - set(got):
            self._drop(u, "no ShareKeys received")
        self.u2 = set(got)
        self._require(self.u2, "ShareKeys")
        inbox: dict[int, list[EncryptedShare]] = {u: [] for u in self.u2}
        for u in sorted(self.u2):
            for s in got[u].shares:
                if s.recipient in inbox:
                    inbox[s.recipient].append(s)
        return {u: ShareBundle(tuple(inbox[u])) for u in sorted(self.u2)}

    def collect_masked(self, msgs: list[MaskedInput]) -> UnmaskRequest:
        valid: dict[int, MaskedInput] = {}
        for m in msgs:
            u = m.client_id
            if u not in self.u2 or u in valid:
                continue
            reason = _check_vector(m.y, dim=self.dim, bits=self.bits)
            if reason:
                self._drop(u, reason)
                continue
            valid[u] = m
        for u in self.u2 - set(valid) - set(self.dropped):
            self._drop(u, "no masked input received")
        accused: set[int] = set()
        for u, m in valid.items():
            for v, why in m.complaints:
                if v in self.graph[u] and v in self.u2:
                    self._bad_holders.setdefault(v, set()).add(u)
                    accused.add(v)
                    self._drop(v, f"its encrypted share for client {u} failed verification: {why}")
        self.u3 = set(valid) - accused
        self._require(self.u3, "MaskedInputCollection")
        total = np.zeros(self.dim, dtype=np.uint64)
        for u in sorted(self.u3):
            total += valid[u].y
        self._sum = total
        dropped = self.u2 - self.u3
        self._request = UnmaskRequest(tuple(sorted(self.u3)), tuple(sorted(dropped)))
        return self._request

    def collect_unmask(self, msgs: list[UnmaskResponse]) -> np.ndarray:
        """Reconstruct, unmask and return Σ_{u∈U3} x_u mod M (uint64), or raise SecAggAborted."""
        assert self._request is not None and self._sum is not None, "collect_masked first"
        u3 = set(self._request.survivors)
        dropped = set(self._request.dropped)
        b_sh: dict[int, dict[int, bytes]] = {v: {} for v in u3}
        s_sh: dict[int, dict[int, bytes]] = {v: {} for v in dropped}
        responders: set[int] = set()
        for m in msgs:
            u = m.client_id
            if u not in u3 or u in responders:
                continue
            responders.add(u)
            for table, outs in ((b_sh, m.b_shares), (s_sh, m.s_shares)):
                for so in outs:
                    v = so.owner
                    if v in table and v in self.graph[u] and u not in self._bad_holders.get(v, ()):
                        table[v].setdefault(so.x, so.share)
        self.u4 = responders
        self._require(self.u4, "Unmasking")
        t = self.threshold
        short = [
            f"{what} of client {v}: {len(tab[v])} of {t} shares"
            for what, tab in (("self-mask seed b", b_sh), ("mask key s^SK", s_sh))
            for v in sorted(tab)
            if len(tab[v]) < t
        ]
        if short:
            more = f" (+{len(short) - 5} more)" if len(short) > 5 else ""
            raise SecAggAborted("too few shares to unmask: " + "; ".join(short[:5]) + more)
        # All needed secrets are reconstructible: reconstruct and verify before removing any mask.
        b_seeds = {v: self._combine(b_sh[v]) for v in sorted(u3)}
        s_keys = {}
        for v in sorted(dropped):
            try:
                sk = crypto.private_from_bytes(self._combine(s_sh[v]))
            except ValueError as exc:
                raise SecAggAborted(f"mask key of dropped client {v} could not be reconstructed: {exc}") from exc
            if crypto.public_bytes(sk) != self.keys[v].s_pk:
                raise SecAggAborted(f"reconstructed mask key of client {v} does not match its advertised key")
            s_keys[v] = sk
        total = self._sum.copy()
        for v in sorted(u3):
            accumulate_mask(total, b_seeds[v], bits=self.bits, subtract=True)
        for v in sorted(dropped):
            for u in sorted(self.graph[v] & u3):
                # y_u carries +PRG(s_uv) if u < v, -PRG(s_uv) if u > v: take it back out.
                accumulate_mask(total, crypto.agree(s_keys[v], self.keys[u].s_pk), bits=self.bits, subtract=u < v)
        return reduce(total, bits=self.bits)

    def _combine(self, shares: dict[int, bytes]) -> bytes:
        try:
            return crypto.combine_shares(list(shares.items()), threshold=self.threshold, backend=self.backend)
        except ValueError as exc:
            raise SecAggAborted(f"share reconstruction failed: {exc}") from exc
