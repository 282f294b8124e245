"""The server's update path on hand-made messages: decode, validate, aggregate, optimiser step,
the client table and the round's counters."""

import pytest
import torch
from server_helpers import finish, msg

from fedops.config import parse_config
from fedops.errors import RoundFailed
from fedops.server.server import Server


def _server(**server):
    cfg = parse_config({"partition": {"num_clients": 10}, "server": {"fraction": 0.4, **server}})
    return Server(cfg, params=torch.zeros(3), num_clients=10)


def test_selection_is_seeded_per_round_and_sized():
    s = _server()
    assert s.plan(1).selected == s.plan(1).selected and len(s.plan(1).selected) == 4
    assert len({tuple(s.plan(r).selected) for r in range(1, 10)}) > 1
    assert s.plan(1).clip_norm is None  # no DP: no clip norm goes to the clients


def test_round_aggregates_valid_updates_and_reports_the_rest():
    s = _server(min_clients=2)
    msgs = [msg(1, [1, 2, 3], n=1), msg(2, [3, 2, 1], n=3), msg(3, [float("nan"), 0, 0]), msg(4, [1, 1])]
    m, rows = finish(s, msgs, selected=[1, 2, 3, 4, 5], failures={5: "ClientDropped: timeout"},
                     reports={1: {"train_loss": 1.0, "num_samples": 1}, 2: {"train_loss": 2.0, "num_samples": 3}})
    assert torch.allclose(s.params, torch.tensor([2.5, 2.0, 1.5]))  # (1*[1,2,3] + 3*[3,2,1]) / 4
    assert rows[3]["status"] == "rejected" and "non-finite" in rows[3]["reason"]
    assert rows[4]["status"] == "rejected" and "wrong length" in rows[4]["reason"]
    assert rows[5]["status"] == "dropped" and rows[5]["reason"] == "ClientDropped: timeout"
    assert (m["clients/selected"], m["clients/aggregated"], m["clients/rejected"], m["clients/dropped"]) == (5, 2, 2, 1)
    assert m["comm/bytes_up"] == 4 * (3 + 3 + 3 + 2)
    assert m["comm/bytes_down"] == 5 * 3 * 4
    assert m["train/loss"] == pytest.approx((1 * 1.0 + 3 * 2.0) / 4)


def test_too_few_clients_fails_and_leaves_the_model_unchanged():
    s = _server(min_clients=3)
    before = s.params.clone()
    with pytest.raises(RoundFailed, match="only 1 usable updates"):
        finish(s, [msg(1, [1, 1, 1])], selected=[1, 2, 3], failures={2: "x", 3: "y"})
    assert torch.equal(s.params, before)


def test_fedadam_moments_are_state_and_roundtrip():
    s = _server(optimizer={"name": "fedadam", "lr": 0.1})
    finish(s, [msg(1, [1, 0, 0])], selected=[1])
    state = s.state_dict()
    twin = _server(optimizer={"name": "fedadam", "lr": 0.1})
    twin.load_state_dict(state)
    finish(s, [msg(2, [0, 1, 0])], selected=[2], round_idx=2)
    finish(twin, [msg(2, [0, 1, 0])], selected=[2], round_idx=2)
    assert torch.equal(s.params, twin.params) and torch.count_nonzero(state["optimizer"]["m"]) == 1
    assert twin.bytes_up_total == s.bytes_up_total == 24
