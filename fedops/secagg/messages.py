"""Protocol messages: plain frozen dataclasses of bytes, ints and numpy arrays.

Every message has ``wire_size(bits)``: the bytes a straightforward binary encoding would take
(ints as 8 bytes, vectors as d * bits/8 bytes), used for the communication accounting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_INT = 8


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 0, client -> server: the two public keys (c: share encryption, s: mask agreement)."""

    client_id: int
    c_pk: bytes
    s_pk: bytes

    def wire_size(self, bits: int = 64) -> int:
        return _INT + len(self.c_pk) + len(self.s_pk)


@dataclass(frozen=True)
class RoutedKeys:
    """Round 0 -> 1, server -> client: the public keys of the client's live neighbours."""

    keys: tuple[AdvertiseKeys, ...]

    def wire_size(self, bits: int = 64) -> int:
        return sum(k.wire_size(bits) for k in self.keys)


@dataclass(frozen=True)
class EncryptedShare:
    """One AEAD ciphertext carrying the sender's shares of (b_sender, s_sender^SK) for the recipient."""

    sender: int
    recipient: int
    ciphertext: bytes

    def wire_size(self, bits: int = 64) -> int:
        return 2 * _INT + len(self.ciphertext)


@dataclass(frozen=True)
class ShareKeys:
    """Round 1, client -> server: one encrypted share per live neighbour."""

    client_id: int
    shares: tuple[EncryptedShare, ...]

    def wire_size(self, bits: int = 64) -> int:
        return _INT + sum(s.wire_size(bits) for s in self.shares)


@dataclass(frozen=True)
class ShareBundle:
    """Round 1 -> 2, server -> client: the ciphertexts addressed to this client by live senders."""

    shares: tuple[EncryptedShare, ...]

    def wire_size(self, bits: int = 64) -> int:
        return sum(s.wire_size(bits) for s in self.shares)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Round 2, client -> server: y_u, plus complaints about shares that failed to decrypt/verify."""

    client_id: int
    y: np.ndarray
    complaints: tuple[tuple[int, str], ...] = field(default=())

    def wire_size(self, bits: int = 64) -> int:
        return _INT + int(np.asarray(self.y).size) * bits // 8 + sum(_INT + len(r) for _, r in self.complaints)


@dataclass(frozen=True)
class UnmaskRequest:
    """Round 2 -> 3, server -> client: who survived (sent y) and who dropped after sharing."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def wire_size(self, bits: int = 64) -> int:
        return _INT * (len(self.survivors) + len(self.dropped))


@dataclass(frozen=True)
class ShareOut:
    """A share returned in unmasking: the share of ``owner``'s secret with Shamir index ``x``."""

    owner: int
    x: int
    share: bytes


@dataclass(frozen=True)
class UnmaskResponse:
    """Round 3, client -> server: shares of b_v for surviving v, of s_v^SK for dropped v."""

    client_id: int
    b_shares: tuple[ShareOut, ...]
    s_shares: tuple[ShareOut, ...]

    def wire_size(self, bits: int = 64) -> int:
        return _INT + sum(2 * _INT + len(s.share) for s in self.b_shares + self.s_shares)
