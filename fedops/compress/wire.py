"""Shared binary framing for the compressing codecs.

Every payload (except the identity codec ``none``, which is bare float32) starts with the same
8-byte little-endian header, followed by the codec's own fixed fields and then raw
little-endian arrays::

    offset  size  field
    0       2     magic  b"FZ"
    2       1     codec tag (TAG_FP16, TAG_QSGD, ...)
    3       1     format version (VERSION)
    4       4     dim: uint32, the length of the dense float32 vector
    8       ...   codec-specific fixed fields (``struct`` format, little-endian)
    ...           arrays (``numpy.tobytes`` / ``numpy.frombuffer``, little-endian)

:class:`Reader` walks a payload and raises ``ValueError`` naming the offending value whenever a
payload is short, long, of another codec, of another version or of another dimension; the server
turns that into a rejection reason.

Bit packing (:func:`pack_uint` / :func:`unpack_uint`) is an LSB-first bit stream: code ``i``
occupies bits ``i*b .. i*b+b-1`` of the stream, bit ``n`` of the stream being bit ``n % 8`` of
byte ``n // 8``. Widths 8 and 16 are plain arrays, widths dividing 8 share bytes, and the others
assemble each whole-byte group of codes (8 codes for odd widths) in little-endian uint64 words.

Codec random streams: :func:`codec_rng` derives a ``numpy.random.Generator`` from the run seed and
the codec's own stream key (``STREAM_CODEC_BASE + tag``, above the streams of
:mod:`fedops.rng`), plus the round and, where given, the client.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from fedops.lazy import torch  # torch on first use: configs load without it

from fedops.rng import numpy_rng

MAGIC = b"FZ"
VERSION = 1
_HEADER = struct.Struct("<2sBBI")
HEADER_SIZE = _HEADER.size  # 8

TAG_FP16 = 1
TAG_QSGD = 2
TAG_TOPK = 3
TAG_RANDK = 4
TAG_RPN = 5
TAG_RPN_FILTERS = 6
TAG_NAMES = {TAG_FP16: "fp16", TAG_QSGD: "qsgd", TAG_TOPK: "topk", TAG_RANDK: "randk", TAG_RPN: "rpn",
             TAG_RPN_FILTERS: "rpn with unpooled filters"}

#: first key of the codecs' random streams (fedops.rng uses 1..7)
STREAM_CODEC_BASE = 100

_UINT32_MAX = 2**32 - 1


def header(tag: int, dim: int, fields: str = "", *values) -> bytes:
    """The common header plus ``struct``-packed codec fields (format without byte-order prefix)."""
    if not 0 <= dim <= _UINT32_MAX:
        raise ValueError(f"dimension {dim} does not fit the uint32 header field")
    return _HEADER.pack(MAGIC, tag, VERSION, dim) + (struct.pack("<" + fields, *values) if fields else b"")


def header_size(fields: str = "") -> int:
    return HEADER_SIZE + struct.calcsize("<" + fields)


class Reader:
    """Parses one payload: checks the header, then hands out its fields and arrays in order."""

    def __init__(self, payload: bytes, *, tag: int, dim: int, fields: str = "") -> None:
        name = TAG_NAMES.get(tag, str(tag))
        self.what = f"{name} payload"
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ValueError(f"{self.what} must be bytes, got {type(payload).__name__}")
        self.buf = memoryview(payload).cast("B")
        need = header_size(fields)
        if len(self.buf) < need:
            raise ValueError(f"{self.what} has {len(self.buf)} bytes, shorter than its {need}-byte header")
        magic, got_tag, version, got_dim = _HEADER.unpack_from(self.buf, 0)
        if magic != MAGIC:
            raise ValueError(f"{self.what} has bad magic {bytes(magic)!r}, expected {MAGIC!r}")
        if got_tag != tag:
            raise ValueError(
                f"{self.what} carries codec tag {got_tag} ({TAG_NAMES.get(got_tag, 'unknown')}), expected {tag} ({name})"
            )
        if version != VERSION:
            raise ValueError(f"{self.what} has format version {version}, expected {VERSION}")
        if got_dim != dim:
            raise ValueError(f"{self.what} declares dim {got_dim}, but the model has {dim} parameters")
        self.dim = got_dim
        self.fields = struct.unpack_from("<" + fields, self.buf, HEADER_SIZE) if fields else ()
        self.pos = need

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """The next ``count`` items of little-endian ``dtype`` (a read-only view into the payload)."""
        dt = np.dtype(dtype)
        nbytes = count * dt.itemsize
        if self.pos + nbytes > len(self.buf):
            raise ValueError(
                f"{self.what} is truncated: {what} needs {nbytes} bytes at offset {self.pos}, "
                f"only {len(self.buf) - self.pos} left (payload has {len(self.buf)} bytes)"
            )
        out = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos)
        self.pos += nbytes
        return out

    def raw(self, nbytes: int, what: str) -> np.ndarray:
        return self.array("u1", nbytes, what)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ValueError(
                f"{self.what} has {len(self.buf)} bytes, expected {self.pos} ({len(self.buf) - self.pos} trailing)"
            )


def f32(x: torch.Tensor, dim: int, what: str = "delta") -> np.ndarray:
    """A tensor as a flat, contiguous float32 numpy array of ``dim`` values (no copy when it
    already is one: do not write to it).

    The codecs do their arithmetic in NumPy: element-wise work on a vector of ~1M values is
    memory-bound, and NumPy runs it on the calling thread, where torch's intra-op thread pool
    stalls for a scheduler tick whenever a core is busy elsewhere.
    """
    if isinstance(x, torch.Tensor):
        a = x.detach().to("cpu", torch.float32).reshape(-1).contiguous().numpy()
    else:
        a = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))
    if a.size != dim:
        raise ValueError(f"{what} has {a.size} values, the layout has {dim}")
    return a


def codec_rng(seed: int, tag: int, *keys: int) -> np.random.Generator:
    """The codec's own random stream for ``(seed, *keys)`` (keys: round, client, ...)."""
    return numpy_rng(seed, STREAM_CODEC_BASE + tag, *keys)


def client_key(client_id: int | None) -> int:
    """``client_id`` as a non-negative stream key, ``None`` (the broadcast) kept apart as 0."""
    return 0 if client_id is None else int(client_id) + 1


# ---------------------------------------------------------------------------------------- bits


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def _group(bits: int) -> tuple[int, int, int]:
    """(codes, bytes, uint64 words) of the smallest whole-byte group of ``bits``-bit codes."""
    g = 8 // math.gcd(bits, 8)
    nbytes = g * bits // 8
    return g, nbytes, -(-nbytes // 8)


def pack_uint(codes: np.ndarray, bits: int) -> bytes:
    """``codes`` (unsigned, each < 2**bits, bits in 1..16) packed LSB-first, ``ceil(n*bits/8)`` bytes."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bit width {bits} outside 1..16")
    codes = np.asarray(codes)
    n = codes.size
    if bits == 8:
        return codes.astype(np.uint8, copy=False).tobytes()
    if bits == 16:
        return codes.astype("<u2", copy=False).tobytes()
    if 8 % bits == 0:
        per = 8 // bits
        c = codes.astype(np.uint8, copy=False)
        pad = (-n) % per
        if pad:
            c = np.concatenate([c, np.zeros(pad, np.uint8)])
        c = c.reshape(-1, per)
        out = c[:, 0].copy()
        for j in range(1, per):
            out |= c[:, j] << np.uint8(bits * j)
        return out.tobytes()
    # g codes fill exactly g*bits/8 bytes (<= 16): assemble each group in little-endian uint64
    # words, a code straddling two words split between them
    g, nbytes, nwords = _group(bits)
    c = codes.astype(np.uint64)
    pad = (-n) % g
    if pad:
        c = np.concatenate([c, np.zeros(pad, np.uint64)])
    c = c.reshape(-1, g)
    words = np.zeros((c.shape[0], nwords), "<u8")
    for j in range(g):
        w, shift = divmod(bits * j, 64)
        words[:, w] |= c[:, j] << np.uint64(shift)
        if shift + bits > 64:
            words[:, w + 1] |= c[:, j] >> np.uint64(64 - shift)
    return words.view(np.uint8)[:, :nbytes].tobytes()[: packed_size(n, bits)]


def unpack_uint(buf: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`: ``count`` codes (uint8 for bits <= 8, else uint16)."""
    buf = np.asarray(buf, dtype=np.uint8)
    if buf.size != packed_size(count, bits):
        raise ValueError(f"{buf.size} bytes cannot hold exactly {count} codes of {bits} bits")
    if bits == 8:
        return buf
    if bits == 16:
        return buf.view("<u2")
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        out = np.empty((buf.size, per), np.uint8)
        for j in range(per):
            np.bitwise_and(buf >> np.uint8(bits * j), mask, out=out[:, j])
        return out.reshape(-1)[:count]
    g, nbytes, nwords = _group(bits)
    ngroups = -(-count // g)
    full = np.zeros(ngroups * nbytes, np.uint8)
    full[: buf.size] = buf
    raw = np.zeros((ngroups, 8 * nwords), np.uint8)
    raw[:, :nbytes] = full.reshape(ngroups, nbytes)
    words = raw.view("<u8")
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((ngroups, g), np.uint8 if bits <= 8 else np.uint16)
    for j in range(g):
        w, shift = divmod(bits * j, 64)
        code = words[:, w] >> np.uint64(shift)
        if shift + bits > 64:
            code |= words[:, w + 1] << np.uint64(64 - shift)
        out[:, j] = code & mask
    return out.reshape(-1)[:count]
