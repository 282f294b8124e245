import pytest
import torch

from fedops.config import parse_config
from fedops.server.engine import FederatedServer, RoundFailed
from fedops.types import EncodedUpdate


def _server(**server):
    cfg = parse_config({"partition": {"num_clients": 10}, "server": {"fraction": 0.4, **server}})
    return FederatedServer(config=cfg, params=torch.zeros(3), num_clients=10)


def _msg(cid, values, n=1):
    t = torch.tensor(values, dtype=torch.float32)
    payload = t.numpy().tobytes()
    return EncodedUpdate(client_id=cid, payload=payload, nbytes=len(payload), num_samples=n)


def test_selection_is_seeded_per_round():
    s = _server()
    assert s.select(1) == s.select(1) and len(s.select(1)) == 4
    assert len({tuple(s.select(r)) for r in range(1, 10)}) > 1


def test_round_aggregates_valid_updates_and_reports_the_rest():
    s = _server(min_clients=2)
    msgs = [_msg(1, [1, 2, 3], n=1), _msg(2, [3, 2, 1], n=3), _msg(3, [float("nan"), 0, 0]), _msg(4, [1, 1])]
    out = s.finish_round(1, selected=[1, 2, 3, 4, 5], received=msgs, reports={1: {"train_loss": 1.0}, 2: {"train_loss": 2.0}},
                         dropped={5: "timeout"}, started=0.0)
    assert torch.allclose(out.params, torch.tensor([2.5, 2.0, 1.5]))  # (1*[1,2,3] + 3*[3,2,1]) / 4
    rows = {r["client_id"]: r for r in out.client_table}
    assert rows[3]["status"] == "rejected" and "non-finite" in rows[3]["reason"]
    assert rows[4]["status"] == "rejected" and "wrong length" in rows[4]["reason"]
    assert rows[5]["status"] == "dropped" and rows[5]["reason"] == "timeout"
    m = out.metrics
    assert (m["clients/selected"], m["clients/aggregated"], m["clients/rejected"], m["clients/dropped"]) == (5, 2, 2, 1)
    assert m["comm/bytes_up"] == 4 * (3 + 3 + 3 + 2)
    assert m["comm/bytes_down"] == 5 * 3 * 4
    assert m["train/loss"] == pytest.approx((1 * 1.0 + 3 * 2.0) / 4)


def test_too_few_clients_fails_and_leaves_the_model_unchanged():
    s = _server(min_clients=3)
    before = s.params.clone()
    with pytest.raises(RoundFailed, match="only 1 usable updates"):
        s.finish_round(1, selected=[1, 2, 3], received=[_msg(1, [1, 1, 1])], reports={1: {"train_loss": 0.0}},
                       dropped={2: "x", 3: "y"}, started=0.0)
    assert torch.equal(s.params, before)
