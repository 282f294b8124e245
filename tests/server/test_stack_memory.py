"""The server's stack memory is reused across rounds only when no tensor holds the previous stack."""

import gc

import torch
from server_helpers import finish, msg

from fedops.config import parse_config
from fedops.server.server import Server
from fedops.server.steps import StackMemory


def test_memory_is_reused_once_free_and_never_while_held():
    memory = StackMemory()
    first = memory.take(4, 8)
    first.fill_(1.0)
    ptr = first.data_ptr()
    held = memory.take(4, 8)  # `first` is alive: another block, `first` untouched
    assert held.data_ptr() != ptr
    held.fill_(2.0)
    assert bool((first == 1.0).all())
    row = held[1]  # a row view keeps its stack's memory alive too
    del held
    gc.collect()
    again = memory.take(3, 8)
    assert again.data_ptr() != row.data_ptr() - 8 * 4 and bool((row == 2.0).all())
    del row, again
    gc.collect()
    reused = memory.take(3, 8)  # nothing holds it: the same memory, fewer rows
    assert reused.shape == (3, 8) and reused.dtype == torch.float32
    kept = reused.data_ptr()
    del reused, first
    gc.collect()
    assert memory.take(2, 8).data_ptr() == kept
    assert memory.take(2, 9).shape == (2, 9)  # another width: new memory


def test_the_server_reuses_its_stack_between_rounds_unless_the_last_batch_is_held():
    s = Server(parse_config({"partition": {"num_clients": 10}, "server": {"fraction": 0.4}}),
               params=torch.zeros(3), num_clients=10)
    finish(s, [msg(1, [1, 2, 3]), msg(2, [3, 2, 1])], round_idx=1)
    first = s.last_batch.stack.data_ptr()
    assert torch.allclose(s.params, torch.tensor([2.0, 2.0, 2.0]))
    finish(s, [msg(1, [1, 1, 1]), msg(2, [3, 3, 3])], round_idx=2)
    assert s.last_batch.stack.data_ptr() == first  # nothing else held round 1's stack
    assert torch.allclose(s.params, torch.tensor([4.0, 4.0, 4.0]))
    held = s.last_batch  # e.g. a contribution scorer keeping the round's updates
    finish(s, [msg(1, [0, 0, 0]), msg(2, [2, 2, 2])], round_idx=3)
    assert s.last_batch.stack.data_ptr() != first and held.stack.data_ptr() == first
    assert held.stack.tolist() == [[1, 1, 1], [3, 3, 3]]  # round 2's updates, not overwritten
    assert torch.allclose(s.params, torch.tensor([5.0, 5.0, 5.0]))
