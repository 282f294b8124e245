"""Bad input is refused before any heavy work, in one line that names the value and what is
allowed: at config load, at the command line's --set, or (the client count against a prepared
data set's size) when the partition stage starts."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedops.config import ConfigError, load_config, parse_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("data, message", [
    ({"client": {"lr": float("inf")}}, r"client.lr = inf: Input should be a finite number"),
    ({"client": {"lr": float("nan")}}, r"client.lr = nan: Input should be a finite number"),
    ({"server": {"rounds": 10**9}}, r"server.rounds = 1000000000: Input should be less than or equal to 1000000"),
    ({"tracking": {"model_name": "../../x"}}, r"tracking.model_name = '../../x': String should match pattern"),
    ({"tracking": {"experiment": "a/b"}}, r"tracking.experiment = 'a/b'"),
    ({"name": ".."}, r"name = '..'"),
    ({"transport": {"codec": {"name": "qsgd", "bits": 8, "bucket_size": 10}}, "secagg": {"clip": float("inf")}},
     r"secagg.clip = inf"),
    ({"data": {"name": "synthetic", "num_train": 100}, "partition": {"num_clients": 20, "name": "dirichlet",
                                                                      "min_size": 10}},
     r"partition.num_clients = 20 needs at least 200 training examples \(10 per client\), but data.num_train = 100; "
     r"allowed: 1..10 clients"),
    ({"simulation": {"attack": {"name": "gaussian", "std": float("inf")}, "malicious_fraction": 0.2}},
     r"simulation.attack.*std.*finite"),
])
def test_bad_values_are_refused_in_one_line(data, message):
    with pytest.raises(ConfigError, match=message) as exc:
        parse_config(data)
    assert "\n" not in str(exc.value)


def test_a_config_that_is_not_utf8_is_refused_by_name(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml' is not UTF-8 text: byte 0xe9 at offset 9"):
        load_config(bad)


@pytest.mark.parametrize("item, message", [
    ("server.rounds=!!python/object/apply:os.system [echo]", "YAML tags are not allowed"),
    ("server.rounds=!custom 3", "YAML tags are not allowed"),
    ("server.rounds", "expected KEY=VALUE"),
    ("server..rounds=3", "is not a dotted config key"),
    ("client.lr=[1, 2", "not valid YAML"),
])
def test_overrides_are_data_never_constructors(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_override(item)
    assert parse_override("server.rounds=3") == ("server.rounds", 3)
    assert parse_override("transport.codec={name: topk, fraction: 0.1}") == (
        "transport.codec", {"name": "topk", "fraction": 0.1})


def test_the_cli_refuses_before_training_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fedops.cli", "run", str(ROOT / "configs" / "tiny.yaml"),
                           "--workdir", str(tmp_path), "--set", "tracking.model_name=../../x"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("config error:") and "tracking.model_name = '../../x'" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_too_many_clients_for_a_prepared_data_set_stop_the_partition_stage(tmp_path):
    from flows.pipeline import run_stage

    cfg = load_config(ROOT / "configs" / "pima.yaml", {"partition.num_clients": 700})
    run_stage("prepare", cfg, str(tmp_path))
    run_stage("validate", cfg, str(tmp_path))
    with pytest.raises(ConfigError, match=r"partition.num_clients = 700 needs at least 700 training examples "
                                          r"\(1 per client\), but 'pima' has 614; allowed: 1..614 clients"):
        run_stage("partition", cfg, str(tmp_path))
    assert not (tmp_path / "data" / "partitions").exists()


def test_a_private_data_file_stays_private_when_prepared(tmp_path):
    from flows.pipeline import run_stage

    src = Path("/usr/share/datasets/fashion-mnist")
    if not src.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    private = tmp_path / "private"
    private.mkdir()
    for f in src.glob("*-ubyte.gz"):
        (private / f.name).write_bytes(f.read_bytes())
        os.chmod(private / f.name, 0o600)
    cfg = parse_config({"data": {"name": "fashion_mnist", "path": str(private)}})
    run_stage("prepare", cfg, str(tmp_path / "work"))
    copied = list((tmp_path / "work" / "data" / "raw" / "fashion_mnist").glob("*-ubyte.gz"))
    assert copied and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in copied)


def test_loading_every_shipped_config_imports_neither_torch_pandas_nor_prefect():
    """A config error is reported before the heavy imports (fedops/lazy.py): loading and
    validating each config in a fresh interpreter leaves torch, pandas and prefect unimported."""
    import subprocess
    import sys

    code = (
        "import sys, glob\n"
        "from fedops.config import load_config\n"
        "for path in ['params.yaml', *sorted(glob.glob('configs/*.yaml'))]:\n"
        "    load_config(path)\n"
        "heavy = sorted(m for m in ('torch', 'pandas', 'prefect', 'mlflow', 'great_expectations') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", proc.stdout
