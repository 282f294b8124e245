"""Where privacy randomness comes from: the operating system's CSPRNG, or a seed (research mode).

Differential privacy holds only against parties who cannot predict the noise. Noise drawn from a
generator seeded by the run's config seed (which is logged with the run) can be regenerated and
subtracted by anyone who reads the run's parameters. So by default every privacy-critical draw
(central DP's Gaussian noise, the clipped-count noise of adaptive clipping, the Poisson client
sampling the accountant assumes, the seeds of local DP-SGD) takes a fresh 256-bit key from
``os.urandom`` and expands it with ChaCha20 (RFC 8439, through ``cryptography``), a
cryptographically secure stream: nothing about one draw predicts another.

``seeded=True`` is the research mode: the key is derived from the run seed and the draw's stream
keys (round, client), so a run is reproducible bit for bit, and epsilon then holds only against
parties who do not know the seed. It is an explicit config switch (``privacy.randomness:
seeded``) and runs using it are tagged.

Gaussian draws use the Box-Muller transform on 53-bit uniforms, in float64. Floating-point side
channels of the sampler (Mironov 2012) are not mitigated.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct

import numpy as np
from fedops.lazy import torch  # torch on first use: configs load without it
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_NONCE = bytes(16)  # every key is used for exactly one stream, so a fixed nonce is safe


class PrivacyRandomness:
    """Uniform and Gaussian draws for privacy mechanisms, keyed per draw (see module docstring)."""

    def __init__(self, *, seeded: bool, seed: int = 0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seeded = bool(seeded)
        self._seed = int(seed)

    @property
    def source(self) -> str:
        return "seeded (research mode)" if self.seeded else "os-csprng"

    def _key(self, stream: tuple[int, ...]) -> bytes:
        if not self.seeded:
            return os.urandom(32)
        if any(k < 0 for k in stream):
            raise ValueError(f"stream keys must be >= 0, got {stream}")
        packed = struct.pack(f"<{len(stream) + 1}Q", self._seed, *stream)
        return hashlib.sha256(b"fedops/privacy-randomness/v1" + packed).digest()

    def _words(self, count: int, stream: tuple[int, ...]) -> np.ndarray:
        """``count`` uniformly random uint64 words from one ChaCha20 keystream."""
        cipher = Cipher(algorithms.ChaCha20(self._key(stream), _NONCE), mode=None).encryptor()
        return np.frombuffer(cipher.update(bytes(8 * count)), dtype="<u8")

    def uniform(self, count: int, *stream: int) -> np.ndarray:
        """``count`` float64 values uniform on [0, 1), 53 random bits each."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        return (self._words(count, stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def normal(self, count: int, *stream: int) -> torch.Tensor:
        """``count`` standard normal float64 values (Box-Muller on pairs of uniforms)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        pairs = (count + 1) // 2
        u = self.uniform(2 * pairs, *stream)
        radius = np.sqrt(-2.0 * np.log1p(-u[:pairs]))  # 1 - u in (0, 1]: log is finite
        angle = (2.0 * math.pi) * u[pairs:]
        z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
        return torch.from_numpy(z)

    def gaussian(self, *stream: int):
        """A noise source for :class:`fedops.privacy.DPFedAvg`: successive calls ``noise(n)`` draw
        from successive streams ``(*stream, 0)``, ``(*stream, 1)``, ..."""
        parts = iter(range(1 << 32))

        def noise(count: int) -> torch.Tensor:
            return self.normal(count, *stream, next(parts))

        return noise

    def torch_seed(self, *stream: int) -> int:
        """A 62-bit seed for a ``torch.Generator`` (Opacus' DP-SGD draws from torch generators)."""
        return int(self._words(1, stream)[0] >> np.uint64(2))
