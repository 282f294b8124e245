"""Communication graphs: complete (plain SecAgg) or the SecAgg+ random k-regular graph.

SecAgg+ (Bell et al., CCS 2020) replaces the complete graph by a sparse random graph in which
every client only shares secrets and pairwise masks with its k neighbours. We use a random
relabelling of a circulant (Harary) graph: place the clients on a ring in the order of a seeded
random permutation and connect each to the k/2 nearest on either side. The result is k-regular,
undirected and without self loops.
"""

from __future__ import annotations

import math

import numpy as np


def default_k(n: int) -> int:
    """Smallest even k >= 2*ceil(log2 n), capped at n - 1 (then the graph is complete)."""
    if n < 2:
        raise ValueError(f"need at least 2 clients, got {n}")
    k = 2 * math.ceil(math.log2(n))
    return min(k, n - 1)


def default_threshold(k: int) -> int:
    """t = ceil(k/2) + 1, capped at k (k = number of share holders = neighbours)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(math.ceil(k / 2) + 1, k)


def neighbour_graph(n: int, *, k: int | None, seed: int) -> list[list[int]]:
    """Sorted neighbour lists over clients 0..n-1. ``k=None`` or ``k >= n-1``: complete graph."""
    if n < 2:
        raise ValueError(f"need at least 2 clients, got {n}")
    if k is None or k >= n - 1:
        return [[v for v in range(n) if v != u] for u in range(n)]
    if k < 2 or k % 2:
        raise ValueError(f"k must be an even number >= 2 (or None, or >= n-1), got {k}")
    perm = np.random.default_rng(seed).permutation(n)
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        u = int(perm[i])
        for j in range(1, k // 2 + 1):
            v = int(perm[(i + j) % n])
            nbrs[u].add(v)
            nbrs[v].add(u)
    return [sorted(s) for s in nbrs]
