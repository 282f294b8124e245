import pytest

from fedops.secagg.graph import default_k, default_threshold, neighbour_graph


def test_default_k():
    assert default_k(100) == 14
    assert default_k(10) == 8
    assert default_k(1000) == 20
    assert default_k(3) == 2
    assert default_k(2) == 1
    assert all(default_k(n) % 2 == 0 or default_k(n) == n - 1 for n in range(2, 300))
    assert default_threshold(14) == 8 and default_threshold(1) == 1


@pytest.mark.parametrize("n,k", [(10, 2), (10, 8), (100, 14), (101, 14), (37, 12), (500, 18)])
def test_regular_symmetric_loop_free(n, k):
    g = neighbour_graph(n, k=k, seed=3)
    assert len(g) == n
    for u, nb in enumerate(g):
        assert nb == sorted(set(nb)) and u not in nb and len(nb) == k
        assert all(u in g[v] for v in nb)


def test_seeded_reproducible_and_random():
    assert neighbour_graph(100, k=14, seed=1) == neighbour_graph(100, k=14, seed=1)
    assert neighbour_graph(100, k=14, seed=1) != neighbour_graph(100, k=14, seed=2)


def test_complete_graph():
    for k in (None, 9, 20):
        g = neighbour_graph(10, k=k, seed=0)
        assert all(nb == [v for v in range(10) if v != u] for u, nb in enumerate(g))


def test_odd_k_refused():
    with pytest.raises(ValueError, match="even"):
        neighbour_graph(10, k=3, seed=0)
