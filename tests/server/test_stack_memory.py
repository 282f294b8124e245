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
    import weakref

    kept = weakref.ref(s._stack_memory._array)
    del held
    s.drop_round_memory()  # the rounds are over: the last batch and the kept stack go
    gc.collect()
    assert s.last_batch is None and kept() is None  # nothing holds the stack's memory any more
    finish(s, [msg(1, [0, 0, 0]), msg(2, [2, 2, 2])], round_idx=4)  # and a later round still works
    assert torch.allclose(s.params, torch.tensor([6.0, 6.0, 6.0]))


def test_decoding_consumes_the_messages_when_handed_over_and_gives_the_same_batch():
    import sys

    from fedops.compress.context import codec_context
    from fedops.compress.none import NoCompression
    from fedops.server.steps import decode_and_validate
    from fedops.types import ParamLayout

    layout = ParamLayout.from_module(torch.nn.Linear(3, 1, bias=False))  # 3 parameters

    def ctx(cid):
        return codec_context(seed=0, layout=layout, round_idx=1, client_id=cid)

    def messages():
        return [msg(3, [1.0, 2.0, 3.0]), msg(1, [0.5, 0.5, 0.5]), msg(2, [float("nan"), 0.0, 0.0])]

    def rows():
        return {c: {} for c in (1, 2, 3)}

    kept, handed = messages(), messages()
    payload = handed[0].payload
    before = sys.getrefcount(payload)
    a = decode_and_validate(kept, codec=NoCompression(), ctx_for=ctx, dim=3, weight_factor=lambda c: 1.0,
                            rows=rows())
    b_rows = rows()
    b = decode_and_validate(handed, codec=NoCompression(), ctx_for=ctx, dim=3,
                            weight_factor=lambda c: 1.0, rows=b_rows, consume=True)
    assert len(kept) == 3 and handed == []  # handed over: the list ends empty
    assert sys.getrefcount(payload) == before - 1  # the message (and its hold on the payload) is gone
    assert a.client_ids == b.client_ids == [1, 3] and b_rows[2]["status"] == "rejected"
    assert torch.equal(torch.stack(a.deltas), torch.stack(b.deltas)) and a.weights == b.weights
