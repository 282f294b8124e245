"""The server's column-block reductions run in a fixed number of parts side by side: the bytes
depend on the parts, never on how many cores ran them; FedAvg's mean is the same bytes as the
one-block-at-a-time reference; the parts' sums agree with float64 references."""

import numpy as np
import pytest
import torch

from fedops.aggregate import fedavg
from fedops.aggregate.fedavg import BLOCK, PARTS, in_parts, weighted_mean
from fedops.aggregate.robust import pairwise_sq_distances
from fedops.quality.scores import anomaly_scores


def _stack(k=12, d=3 * BLOCK + 77, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, generator=g) * 0.01 + 0.3, torch.rand(k, generator=g) * 50 + 1


def test_the_parts_cover_every_block_once_in_order():
    seen = []
    got = in_parts(5 * BLOCK + 1, lambda starts: (seen.append(list(starts)), list(starts))[1])
    assert sum(got, []) == list(range(0, 5 * BLOCK + 1, BLOCK))  # 6 blocks, in order
    assert len(got) == PARTS == 2 and [len(p) for p in got] == [3, 3]
    assert in_parts(10, lambda starts: starts) == [[0]]  # one block: one part
    assert in_parts(0, lambda starts: starts) == []


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_the_bytes_do_not_depend_on_the_cores(monkeypatch, cores):
    u, w = _stack()
    expected = (weighted_mean(u, w), pairwise_sq_distances(u), anomaly_scores(u, weighted_mean(u, w)).krum)
    monkeypatch.setattr(fedavg.os, "cpu_count", lambda: cores)
    got = (weighted_mean(u, w), pairwise_sq_distances(u), anomaly_scores(u, weighted_mean(u, w)).krum)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_the_mean_is_the_one_block_at_a_time_reference_bytes():
    u, w = _stack()
    w64 = w.double()
    ref = torch.cat([(w64 @ u[:, lo:lo + BLOCK].double() / w64.sum()).float() for lo in range(0, u.shape[1], BLOCK)])
    assert torch.equal(weighted_mean(u, w), ref)


def test_the_distances_and_scores_agree_with_float64_references():
    u, w = _stack(k=9)
    x = u.double().numpy()
    ref = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    assert np.allclose(pairwise_sq_distances(u).numpy(), ref, rtol=1e-4, atol=1e-7)
    a = weighted_mean(u, w).double().numpy()
    s = anomaly_scores(u, weighted_mean(u, w))
    norms = np.linalg.norm(x, axis=1)
    cos = x @ a / (norms * np.linalg.norm(a))
    assert np.allclose(s.norm.numpy(), norms, rtol=1e-6)
    assert np.allclose(s.cosine.numpy(), cos, rtol=1e-6)
