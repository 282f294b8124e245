import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedops.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_is_the_embedded_default():
    """params.yaml (what dvc repro runs) resolves to exactly the pydantic defaults."""
    assert load_config(ROOT / "params.yaml") == Config()


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(preset):
    load_config(preset)


def test_round_trip_through_params():
    cfg = parse_config({"partition": {"num_clients": 7, "name": "shards", "shards_per_client": 3}})
    assert parse_config(cfg.to_params()) == cfg
    assert cfg.partition.partitioner.shards_per_client == 3


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"client": {"lr": 0.1, "lrr": 0.2}}, "client.lrr: unknown key"),
        ({"partition": {"name": "dirichlet", "alpha": 0}}, "alpha = 0"),
        ({"partition": {"name": "dirichlet", "alpha": -1.5}}, "greater than 0"),
        ({"partition": {"name": "nope"}}, "unknown partitioner 'nope'; known: dirichlet"),
        ({"server": {"fraction": 1.5}}, "server.fraction = 1.5"),
        ({"server": {"rounds": 0}}, "server.rounds = 0"),
        ({"server": {"aggregator": "krumm"}}, "unknown aggregator 'krumm'"),
        ({"model": {"name": "small_cnn", "depth": 3}}, "depth: unknown key"),
        ({"data": {"name": "mnist"}}, "unknown dataset 'mnist'"),
        ({"partition": {"num_clients": 10}, "server": {"fraction": 0.1, "min_clients": 2}}, "min_clients = 2 exceeds"),
        ({"transport": {"codec": "gzip"}}, "unknown codec 'gzip'; known: fp16, none, qsgd, randk, rpn, topk"),
        ({"transport": {"codec": {"name": "qsgd", "bits": 0}}}, "transport.codec: bits = 0: Input should be greater than or equal to 1"),
        ({"transport": {"codec": {"name": "qsgd", "bits": 17}}}, "transport.codec: bits = 17"),
        ({"transport": {"codec": {"name": "topk", "fraction": 0}}}, "transport.codec: fraction = 0"),
        ({"transport": {"codec": {"name": "randk", "fraction": 1.5}}}, "transport.codec: fraction = 1.5"),
        ({"transport": {"codec": {"name": "topk"}}}, "give exactly one of 'fraction' and 'k'"),
        ({"transport": {"codec": {"name": "topk", "fraction": 0.1}}, "secagg": {"enabled": True}},
         "transport.codec = 'topk' (fraction = 0.1) cannot run with secagg.enabled"),
        ({"transport": {"codec": {"name": "rpn", "unpooled_filters": 0.25}}, "secagg": {"enabled": True}},
         "transport.codec = 'rpn' (unpooled_filters = 0.25) cannot run with secagg.enabled"),
        ({"transport": {"codec": {"name": "rpn", "unpooled_filters": 0}}}, "transport.codec: unpooled_filters = 0"),
        ({"transport": {"codec": {"name": "rpn", "unpooled_filters": 1.5}}}, "transport.codec: unpooled_filters = 1.5"),
        ({"transport": {"codec": {"name": "qsgd", "bits": 8}}, "secagg": {"enabled": True}},
         "use one of none, randk, rpn"),
    ],
)
def test_bad_config_is_refused_with_one_line(data, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


def test_overrides_apply_before_validation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"server": {"rounds": 2}}))
    assert load_config(p, {"server.rounds": 5}).server.rounds == 5
    with pytest.raises(ConfigError, match="server.rounds = -1"):
        load_config(p, {"server.rounds": -1})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize(
    "content, needle",
    [("bogus_section: 1\n", "bogus_section: unknown key"), ("partition: {name: dirichlet, alpha: 0}\n", "alpha = 0")],
)
def test_cli_config_error_exits_nonzero_with_one_line(tmp_path, content, needle):
    p = tmp_path / "c.yaml"
    p.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "fedops.cli", "run", str(p), "--workdir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("patch, message", [
    ({"simulation": {"missing_values": {"clients": [5]}}}, r"simulation.missing_values.clients = \[5\]: no such client"),
    ({"simulation": {"missing_values": {"clients": [1, 1]}}}, r"expected distinct client ids"),
    ({"simulation": {"missing_values": {"clients": [1], "rate": 0}}}, r"rate"),
    ({"data": "synthetic", "simulation": {"missing_values": {"clients": [1]}}}, r"needs a tabular data set"),
    ({"quality": {"bad_data": "drop"}}, r"quality.bad_data = 'drop'"),
    ({"quality": {"bad_data": "downweight"}, "secagg": {"enabled": True}}, r"'downweight' needs the server"),
    ({"quality": {"bad_data": "downweight", "bad_data_weight": 1.0}}, r"bad_data_weight"),
])
def test_bad_data_settings_refused(patch, message):
    base = {"data": "pima", "partition": {"num_clients": 3}}
    with pytest.raises(ConfigError, match=message):
        parse_config({**base, **patch})
