"""Bad crowdsourcing input is refused when the config loads (or, for an unreachable ledger, when
the command starts), with a message naming the value, and nothing is written."""

import os
import subprocess
import sys

import pytest

from fedops.config import ConfigError, parse_config


@pytest.mark.parametrize("data, message", [
    ({"contribution": {"enabled": True, "estimator": "banzhaf"}},
     "unknown contribution estimator 'banzhaf'; known: exact_shapley, gtg_shapley, loo, tmc_shapley"),
    ({"server": {"selector": "lottery"}}, "unknown client selector 'lottery'"),
    ({"devices": {"source": "ranges"}, "server": {"selector": {"name": "crowdfl", "weights": {"cpu": 1.5, "ram": -0.5}}}},
     "selection weights must be finite and >= 0"),
    ({"devices": {"source": "ranges"}, "server": {"selector": {"name": "crowdfl", "weights": {"cpu": 0.5, "ram": 0.4}}}},
     "selection weights must sum to 1, got 0.9"),
    ({"contribution": {"enabled": True, "estimator": {"name": "exact_shapley", "max_players": 8}}},
     "10 clients per round is above its max_players = 8"),
    ({"contribution": {"enabled": True, "estimator": {"name": "exact_shapley", "max_players": 10}},
      "server": {"backups": 3}}, None),  # backups replace dropped clients: still 10 updates at most
    ({"contribution": {"enabled": True}, "secagg": {"enabled": True}}, "secure aggregation hides"),
    ({"reputation": {"enabled": True, "ledger": "not a url"}}, "reputation.ledger = 'not a url' is not a database URL"),
    ({"server": {"selector": "crowdfl"}}, "reads device profiles; set devices.source"),
    ({"devices": {"source": "ranges"}, "server": {"selector": "crowdfl"}}, "with a reputation weight needs reputations"),
    ({"server": {"min_reputation": 0.4}}, "server.min_reputation needs reputations"),
    ({"server": {"selector": "poisson", "backups": 2}}, "server.backups = 2 needs a ranking"),
    ({"server": {"selector": "fedcs"}}, "deadline_s"),
    ({"devices": {"source": "crowdfl_table2"}}, "CrowdFL's 4 devices; partition.num_clients = 20"),
    ({"devices": {"source": "table", "table": [{"cpu_cores": 1, "ram_mb": 1, "storage_mb": 1, "bandwidth_mbps": 1,
                                                "speed": 1}]}}, "devices.table has 1 rows for 20 clients"),
    ({"devices": {"source": "ranges", "ranges": {"speed": [2, 1]}}}, "devices.ranges.speed = [2.0, 1.0]: expected low <= high"),
    ({"devices": {"source": "ranges"}, "simulation": {"dropout_prob": 0.2}}, "a client's dropout probability is its device's"),
    ({"incentives": {"budget": 100, "scheme": "contribution"}}, "set contribution.enabled: true"),
    ({"incentives": {"budget": 10, "floor": 1}}, "incentives.floor = 1.0 for up to 20 clients is 20.0 points"),
    ({"reputation": {"enabled": True, "kappa": 2, "eta": 1}}, "must be at least reputation.kappa"),
    ({"incentives": {"budget": 10, "scheme": "data_size"}, "secagg": {"enabled": True}},
     "incentives.scheme = 'data_size' pays in proportion to each client's sample count"),
    ({"server": {"selector": "poisson", "backups": 1}, "privacy": {"mode": "central", "noise_multiplier": 1.0}},
     "server.backups would record it per client"),
    ({"reputation": {"enabled": True}, "privacy": {"mode": "central", "noise_multiplier": 1.0},
      "server": {"selector": "poisson"}}, "reputation would record it per client"),
])
def test_bad_crowd_config_is_refused_with_a_message(data, message):
    if message is None:
        parse_config(data)
        return
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert message in str(err.value)


def test_the_defaults_turn_every_crowd_feature_off():
    cfg = parse_config({})
    assert not cfg.devices.enabled and not cfg.contribution.enabled and not cfg.reputation.enabled
    assert cfg.incentives.budget == 0 and cfg.server.backups == 0 and cfg.server.min_reputation is None


def test_fedops_run_refuses_an_unreachable_ledger_before_writing_anything(tmp_path):
    bad = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'ledger.db'}"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "fedops.cli", "run", "configs/tiny.yaml", "--workdir", str(work),
                           "--set", "reputation.enabled=true", "--set", f"reputation.ledger={bad}"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CI": "true"},
                          stdin=subprocess.DEVNULL, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "reputation ledger" in proc.stderr and "cannot be reached" in proc.stderr
    assert list(work.iterdir()) == []


def test_fedops_ledger_on_a_work_directory_without_a_ledger_says_so_and_creates_nothing(tmp_path):
    work = tmp_path / "none"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "fedops.cli", "ledger", "params.yaml", "--workdir", str(work)],
                          capture_output=True, text=True, timeout=300, cwd=root, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"no reputation ledger at {work / 'ledger.db'}" in proc.stderr
    assert not work.exists()
