import itertools
import os
import random

import pytest

from fedops.secagg import crypto
from fedops.secagg.errors import ShareDecryptionError


@pytest.mark.parametrize("backend", crypto.SHAMIR_BACKENDS)
def test_shamir_any_t_subset_reconstructs(backend):
    rnd = random.Random(0)
    for t, n in [(1, 1), (2, 3), (3, 5), (5, 8)]:
        secret = os.urandom(32)
        shares = crypto.split_secret(secret, threshold=t, n_shares=n, backend=backend)
        assert [x for x, _ in shares] == list(range(1, n + 1))  # index convention: 1..n
        assert all(len(s) == crypto.share_size(backend) for _, s in shares)
        for subset in itertools.islice(itertools.combinations(shares, t), 10):
            assert crypto.combine_shares(list(subset), threshold=t, backend=backend) == secret
        more = rnd.sample(shares, n)
        assert crypto.combine_shares(more, threshold=t, backend=backend) == secret
        if t > 1:
            with pytest.raises(ValueError, match="need"):
                crypto.combine_shares(shares[: t - 1], threshold=t, backend=backend)


def test_shamir_large_prime_field():
    secret = b"\xff" * 32
    shares = crypto.split_secret(secret, threshold=51, n_shares=99)
    assert crypto.combine_shares(shares[48:], threshold=51) == secret


def test_t_minus_one_shares_do_not_determine_secret():
    # With t-1 shares fixed, the secret is still uniformly free: two secrets with the
    # same first t-1 shares exist (checked by interpolating with a forged t-th share).
    s = os.urandom(32)
    sh = crypto.split_secret(s, threshold=3, n_shares=3)
    forged = [sh[0], sh[1], (3, (int.from_bytes(sh[2][1], "big") ^ 1).to_bytes(66, "big"))]
    try:
        other = crypto.combine_shares(forged, threshold=3)
    except ValueError:
        return
    assert other != s


def test_agree_symmetric_and_info_separated():
    a, b = crypto.generate_keypair(), crypto.generate_keypair()
    k_ab = crypto.agree(a.private, b.public)
    assert k_ab == crypto.agree(b.private, a.public) and len(k_ab) == 32
    assert k_ab != crypto.agree(a.private, b.public, info=crypto.INFO_SHARE_ENCRYPTION)


def test_aead_round_trip_and_tamper():
    key = os.urandom(32)
    blob = crypto.encrypt(key, b"share", b"aad")
    assert crypto.decrypt(key, blob, b"aad") == b"share"
    bad = bytearray(blob)
    bad[15] ^= 1
    with pytest.raises(ShareDecryptionError):
        crypto.decrypt(key, bytes(bad), b"aad")
    with pytest.raises(ShareDecryptionError):
        crypto.decrypt(key, blob, b"other aad")
    with pytest.raises(ShareDecryptionError):
        crypto.decrypt(key, blob[:10], b"aad")
