import time

import numpy as np
import pytest
from Crypto.Cipher import ChaCha20

from fedops.secagg.prg import expand_mask

SEED = bytes(range(32))
# Computed once with expand_mask and cross-checked against pycryptodome below.
KAT_64 = [0x6A19C5D97D2BFD39, 0x494ADCB87703BD8D, 0xCC6ADEBC6FD8358A, 0x9224EAD84C7DCCB2]


def test_known_answer_64():
    assert [int(v) for v in expand_mask(SEED, 4, bits=64)] == KAT_64


def test_known_answer_32_is_the_same_stream_in_halves():
    words = [int(v) for v in expand_mask(SEED, 8, bits=32)]
    assert words[:4] == [0x7D2BFD39, 0x6A19C5D9, 0x7703BD8D, 0x494ADCB8]
    assert all(w < 2**32 for w in words)


@pytest.mark.parametrize("nonce_len", [8, 12])
def test_matches_independent_chacha20(nonce_len):
    stream = ChaCha20.new(key=SEED, nonce=bytes(nonce_len)).encrypt(bytes(8 * 1000))
    np.testing.assert_array_equal(expand_mask(SEED, 1000, bits=64), np.frombuffer(stream, "<u8"))
    np.testing.assert_array_equal(expand_mask(SEED, 2000, bits=32), np.frombuffer(stream, "<u4").astype(np.uint64))


def test_rfc8439_zero_key_block():
    # RFC 8439 A.1 test vector #1: all-zero key, nonce, counter -> keystream 76 b8 e0 ad a0 f1 3d 90 ...
    assert int(expand_mask(bytes(32), 1, bits=64)[0]) == 0x903DF1A0ADE0B876


def test_prefix_consistent_and_seed_sensitive():
    a = expand_mask(SEED, 100, bits=64)
    np.testing.assert_array_equal(a[:10], expand_mask(SEED, 10, bits=64))
    assert not np.array_equal(a, expand_mask(bytes(32), 100, bits=64))
    assert expand_mask(b"0123456789abcdef", 3, bits=64).shape == (3,)  # 16-byte seed via HKDF
    with pytest.raises(ValueError):
        expand_mask(b"short", 3, bits=64)


def test_fast_enough():
    expand_mask(SEED, 1000, bits=64)
    t = time.perf_counter()
    v = expand_mask(SEED, 1_200_000, bits=64)
    assert v.dtype == np.uint64 and v.shape == (1_200_000,)
    assert time.perf_counter() - t < 0.5  # a few ms in practice; generous for CI


@pytest.mark.parametrize("bits", [32, 64])
def test_accumulate_matches_expand(bits):
    from fedops.secagg.prg import accumulate_mask

    for d in (1, 7, 1000, 5):  # shrinking after growing reuses the scratch buffer
        acc = np.arange(d, dtype=np.uint64)
        accumulate_mask(acc, SEED, bits=bits)
        np.testing.assert_array_equal(acc, np.arange(d, dtype=np.uint64) + expand_mask(SEED, d, bits=bits))
        accumulate_mask(acc, SEED, bits=bits, subtract=True)
        np.testing.assert_array_equal(acc, np.arange(d, dtype=np.uint64))
