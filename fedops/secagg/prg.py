"""Mask expansion: a seed is stretched into a vector over Z_{2**bits} with ChaCha20.

The key is the 32-byte seed itself (longer or shorter seeds of at least 16 bytes are first
run through HKDF-SHA256). The nonce and initial counter are fixed at zero. This is safe because
every seed is used for exactly one mask: self-mask seeds b_u are fresh random bytes per run and
pairwise seeds s_uv come from fresh X25519 key pairs per run, so no (key, nonce) pair ever
encrypts twice. The keystream is ChaCha20 encryption of zeros, read as little-endian uint64
(bits=64) or uint32 (bits=32) words.
"""

from __future__ import annotations

import threading

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_ZERO_NONCE = b"\x00" * 16  # cryptography's ChaCha20: 4-byte LE counter || 12-byte nonce, all zero


def _key(seed: bytes) -> bytes:
    if len(seed) < 16:
        raise ValueError(f"PRG seed must be at least 16 bytes, got {len(seed)}")
    if len(seed) == 32:
        return bytes(seed)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedops/secagg/v1/prg-key").derive(seed)


def expand_mask(seed: bytes, length: int, *, bits: int) -> np.ndarray:
    """Expand ``seed`` into ``length`` pseudo-random elements of Z_{2**bits}, as uint64."""
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, got {bits}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    width = bits // 8
    enc = Cipher(algorithms.ChaCha20(_key(seed), _ZERO_NONCE), mode=None).encryptor()
    stream = enc.update(bytes(length * width))
    if bits == 64:
        return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=False)
    return np.frombuffer(stream, dtype="<u4").astype(np.uint64)


_scratch = threading.local()


def _scratch_buffers(nbytes: int) -> tuple[bytes, bytearray]:
    """Per-thread zero input and keystream output buffers, reused across calls (no page faults)."""
    zeros = getattr(_scratch, "zeros", b"")
    if len(zeros) < nbytes:
        _scratch.zeros = zeros = bytes(nbytes)
        _scratch.out = bytearray(nbytes + 64)
    return zeros, _scratch.out


def accumulate_mask(acc: np.ndarray, seed: bytes, *, bits: int, subtract: bool = False) -> None:
    """acc += expand_mask(seed, len(acc)) (or -=), in place, mod 2**64; no temporary array.

    Same keystream as :func:`expand_mask`, about 4x faster on large vectors because the
    keystream buffer is reused. ``acc`` must be a contiguous uint64 vector; reduce mod 2**bits
    at the end for bits=32.
    """
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, got {bits}")
    if acc.dtype != np.uint64 or acc.ndim != 1:
        raise ValueError("accumulator must be a 1-D uint64 array")
    width = bits // 8
    nbytes = acc.shape[0] * width
    zeros, out = _scratch_buffers(nbytes)
    enc = Cipher(algorithms.ChaCha20(_key(seed), _ZERO_NONCE), mode=None).encryptor()
    written = enc.update_into(memoryview(zeros)[:nbytes], out)
    assert written == nbytes
    words = np.frombuffer(out, dtype="<u8" if bits == 64 else "<u4", count=acc.shape[0])
    if subtract:
        np.subtract(acc, words, out=acc, casting="unsafe")
    else:
        np.add(acc, words, out=acc, casting="unsafe")
