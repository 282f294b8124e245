"""How a round's clients are grouped into tasks: consecutive runs without costs; with costs (the
clients' training rows), balanced, so the tasks of a round finish together."""

from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.config import parse_config
from fedops.round.executor import groups_of


def test_without_costs_groups_are_consecutive_runs():
    assert groups_of([3, 1, 4, 1, 5], 2) == [[3, 1], [4, 1], [5]]
    assert groups_of([7, 8], 1) == [[7], [8]]


def test_a_hand_computed_balanced_split():
    # heaviest first to the least-loaded group with room: 0 (5) -> A, 2 (4) -> B, 4 (3) -> B (4 < 5),
    # 3 (2) -> A (5 < 7), 1 (1) -> A (a tie at 7: the lower group); each group in the items' order
    cost = {0: 5, 1: 1, 2: 4, 3: 2, 4: 3}
    assert groups_of([0, 1, 2, 3, 4], 3, cost=cost) == [[0, 1, 3], [2, 4]]
    # at most `size` a group even when balance would want more: 10 alone, then the ones share the rest
    assert groups_of([0, 1, 2, 3], 2, cost={0: 10, 1: 1, 2: 1, 3: 1}) == [[0, 3], [1, 2]]


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(st.integers(1, 5000), min_size=1, max_size=60), size=st.integers(1, 20))
def test_balanced_groups_partition_the_items_and_keep_the_greedy_bound(costs, size):
    items = [100 + i for i in range(len(costs))]
    cost = dict(zip(items, costs))
    groups = groups_of(items, size, cost=cost)
    assert sorted(c for g in groups for c in g) == items  # each item once
    assert len(groups) == -(-len(items) // size) and all(0 < len(g) <= size for g in groups)
    assert all(g == sorted(g) for g in groups)
    assert groups == groups_of(list(items), size, cost=dict(cost))  # deterministic
    loads = [sum(cost[c] for c in g) for g in groups]
    if size > 1 and len(items) > size:
        assert max(loads) <= sum(costs) / len(groups) + max(costs)  # never worse than one item above the mean


def test_threads_default_to_one_task_per_worker_and_dask_to_one_client_per_task():
    tiny = {"name": "t", "data": {"name": "synthetic"}}
    ex = parse_config({**tiny, "execution": {"executor": "threads", "max_workers": 2}}).execution
    assert ex.group_size(10) == 5 and ex.group_size(1) == 1
    ex = parse_config({**tiny, "execution": {"executor": "threads", "clients_per_task": 1}}).execution
    assert ex.group_size(10) == 1
    assert parse_config({**tiny, "execution": {"executor": "dask"}}).execution.group_size(10) == 1
