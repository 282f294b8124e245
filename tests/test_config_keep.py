"""partition.keep and reputation.client_ids: the marketplace's way to train a task on its enrolled
owners' partitions under their names."""

import pytest

from fedops.config import ConfigError, parse_config


def _cfg(**over):
    base = {"data": "pima", "partition": {"num_clients": 5, "name": "iid"}, "model": {"name": "mlp", "hidden": []},
            "server": {"rounds": 1, "fraction": 1.0}}
    base.update(over)
    return base


def test_keep_selects_partitions_and_sizes_the_run():
    cfg = parse_config(_cfg(partition={"num_clients": 5, "name": "iid", "keep": [4, 1]}))
    assert cfg.partition.keep == [4, 1] and cfg.partition.clients == 2 and cfg.partition.num_clients == 5
    assert parse_config(_cfg()).partition.clients == 5


@pytest.mark.parametrize("keep, message", [([5], "partition.keep = [5]: no such partition; allowed: 0..4"),
                                           ([1, 1], "names a partition twice")])
def test_bad_keep_is_refused(keep, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(_cfg(partition={"num_clients": 5, "name": "iid", "keep": keep}))


def test_client_ids_need_one_distinct_name_per_training_client():
    ok = parse_config(_cfg(partition={"num_clients": 5, "name": "iid", "keep": [0, 2]},
                           reputation={"enabled": True, "client_ids": ["a", "b"]}))
    assert ok.reputation.client_ids == ["a", "b"]
    for ids in (["a"], ["a", "a"], ["a", " "]):
        with pytest.raises(ConfigError, match="reputation.client_ids"):
            parse_config(_cfg(partition={"num_clients": 5, "name": "iid", "keep": [0, 2]},
                              reputation={"enabled": True, "client_ids": ids}))


def test_a_devices_table_has_one_row_per_training_client():
    row = {"cpu_cores": 1, "ram_mb": 1, "storage_mb": 1, "bandwidth_mbps": 1, "speed": 1}
    parse_config(_cfg(partition={"num_clients": 5, "name": "iid", "keep": [0, 2]},
                      devices={"source": "table", "table": [row, row]}))
    with pytest.raises(ConfigError, match="devices.table has 5 rows for 2 clients"):
        parse_config(_cfg(partition={"num_clients": 5, "name": "iid", "keep": [0, 2]},
                          devices={"source": "table", "table": [row] * 5}))
