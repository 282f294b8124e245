"""Per-client quality control in the server's update path: rejected updates (non-finite, wrong
length, wrong dtype, huge norm) leave the aggregate equal to the valid-only aggregate; anomaly
scores land in the client table; bad-data policies."""

import pytest
import torch
from server_helpers import finish, msg

from fedops.config import ConfigError, parse_config
from fedops.errors import RoundFailed
from fedops.server.server import Server

D = 4


def _server(aggregator="fedavg", **quality):
    cfg = parse_config({"partition": {"num_clients": 12}, "server": {"fraction": 1.0, "aggregator": aggregator},
                        "quality": quality})
    return Server(cfg, params=torch.zeros(D), num_clients=12)


HONEST = {i: [1.0 + 0.1 * i, -1.0, 0.5, 0.0] for i in range(6)}


@pytest.mark.parametrize("aggregator", ["fedavg", "median", {"name": "trimmed_mean", "beta": 0.1},
                                        {"name": "multi_krum", "num_byzantine": 1}, "geometric_median"])
def test_bad_updates_are_all_rejected_and_the_aggregate_is_the_valid_only_one(aggregator):
    bad = {
        6: [float("nan"), 0, 0, 0],
        7: [float("inf"), 0, 0, 0],
        8: [1.0, 2.0, 3.0],  # wrong length
        9: [1e6, 1e6, 1e6, 1e6],  # huge norm
    }
    msgs = [msg(c, v) for c, v in {**HONEST, **bad}.items()]
    msgs.append(msg(10, [1, 2, 3, 4], dtype="<f8"))  # wrong dtype: 8-byte floats, twice the length
    server = _server(aggregator, norm_multiple=10)
    m, rows = finish(server, msgs)
    assert all(rows[c]["status"] == "rejected" for c in (6, 7, 8, 9, 10)), rows
    assert "non-finite" in rows[6]["reason"] and "non-finite" in rows[7]["reason"]
    assert "wrong length" in rows[8]["reason"] and "wrong length" in rows[10]["reason"]
    assert "median norm" in rows[9]["reason"]
    assert m["clients/rejected"] == 5
    valid = _server(aggregator, norm_multiple=10)
    finish(valid, [msg(c, v) for c, v in HONEST.items()])
    assert torch.equal(server.params, valid.params)


def test_anomaly_scores_and_flags_in_the_client_table():
    msgs = [msg(c, v) for c, v in HONEST.items()] + [msg(6, [-3.0, 3.0, -1.5, 0.0])]  # a sign-flipped client
    m, rows = finish(_server(flag_min_clients=5), msgs)
    assert rows[6]["flagged"] and rows[6]["cosine_to_aggregate"] < 0
    assert not any(rows[c]["flagged"] for c in HONEST)
    assert rows[6]["krum_score"] > max(rows[c]["krum_score"] for c in HONEST)
    assert m["clients/flagged"] == 1


def test_too_few_valid_updates_for_the_rule_fails_the_round_and_keeps_the_model():
    server = _server({"name": "multi_krum", "num_byzantine": 2})
    before = server.params.clone()
    with pytest.raises(RoundFailed, match="multi_krum needs n > 2f \\+ 2.*n=6.*not changed"):
        finish(server, [msg(c, v) for c, v in HONEST.items()] + [msg(6, [float("nan")] * 4)])
    assert torch.equal(server.params, before)


def test_quality_config_refusals():
    with pytest.raises(ConfigError, match="secagg.enabled hides individual updates.*quality.norm_multiple"):
        parse_config({"secagg": {"enabled": True}, "quality": {"norm_multiple": 5}})
    with pytest.raises(ConfigError, match="secagg.enabled hides individual updates.*'median'"):
        parse_config({"secagg": {"enabled": True}, "server": {"aggregator": "median"}})
    with pytest.raises(ConfigError, match=r"'krum' with 10 clients per round: .*n=10.*f=4"):
        parse_config({"server": {"aggregator": {"name": "krum", "num_byzantine": 4}}})
    with pytest.raises(ConfigError, match=r"beta = 0.5"):
        parse_config({"server": {"aggregator": {"name": "trimmed_mean", "beta": 0.5}}})
    with pytest.raises(ConfigError, match="unknown aggregator 'krumm'"):
        parse_config({"server": {"aggregator": "krumm"}})
    with pytest.raises(ConfigError, match="quality.norm_multiple = 1"):
        parse_config({"quality": {"norm_multiple": 1}})


def _bad_data_server(policy, **extra):
    cfg = parse_config({"partition": {"num_clients": 4}, "server": {"fraction": 1.0},
                        "quality": {"bad_data": policy, **extra}})
    return Server(cfg, params=torch.zeros(2), num_clients=4,
                  data_failures={3: ["expect_column_values_to_not_be_null[glucose]"]})


GOOD = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [1.0, 1.0]}


def test_bad_data_exclude_rejects_the_client_with_its_failed_expectations():
    server = _bad_data_server("exclude")
    plan = server.plan(1, selected=[0, 1, 2, 3])
    assert plan.training == [0, 1, 2]  # the excluded client is not trained, so nothing arrives from it
    m, rows = finish(server, [msg(c, v) for c, v in GOOD.items()], selected=[0, 1, 2, 3])
    assert rows[3]["status"] == "rejected" and "not_be_null[glucose]" in rows[3]["reason"]
    assert rows[3]["data_validation"] == "failed" and rows[0]["data_validation"] == "passed"
    assert m["clients/rejected"] == 1 and m["clients/aggregated"] == 3
    assert server.params.tolist() == pytest.approx([2 / 3, 2 / 3])


@pytest.mark.parametrize("policy, expected", [
    ("downweight", [(10 + 0 + 10 + 0.5 * 10 * 4) / 35, (0 + 10 + 10 + 0.5 * 10 * 4) / 35]),  # weight 10 x 0.5
    ("keep", [(10 + 0 + 10 + 40) / 40, (0 + 10 + 10 + 40) / 40]),
])
def test_bad_data_downweight_and_keep(policy, expected):
    server = _bad_data_server(policy, bad_data_weight=0.5)
    assert server.plan(1, selected=[0, 1, 2, 3]).training == [0, 1, 2, 3]
    _, rows = finish(server, [msg(c, v) for c, v in {**GOOD, 3: [4.0, 4.0]}.items()])
    assert rows[3]["status"] == "ok" and rows[3]["data_validation"] == "failed"
    assert rows[3].get("weight_factor", 1.0) == (0.5 if policy == "downweight" else 1.0)
    assert server.params.tolist() == pytest.approx(expected)
