"""Extending fedops without forking it: a plug-in package outside the repository registers a model
and a partitioner through entry points (installed the way pip installs a wheel: the package and
its .dist-info with entry_points.txt on the path), and a `fedops run` uses them; the tabular
source runs a federation on a CSV this test writes, validated by Great Expectations."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FEDOPS = str(Path(sys.executable).parent / "fedops")
pytestmark = pytest.mark.slow

PLUGIN = '''
"""A fedops plug-in package: a model and a partitioner."""
from typing import Literal

import numpy as np
from torch import nn

from fedops.models.base import ModelSpec
from fedops.partition.base import Partition, Partitioner


class WideLinear(ModelSpec):
    name: Literal["wide_linear"] = "wide_linear"
    width: int = 16

    def make(self, *, input_shape, num_classes):
        size = int(np.prod(input_shape))
        return nn.Sequential(nn.Flatten(), nn.Linear(size, self.width), nn.Tanh(), nn.Linear(self.width, num_classes))


class RoundRobin(Partitioner):
    """Sample i goes to client i mod n."""
    name: Literal["round_robin"] = "round_robin"

    def _split(self, labels, *, num_clients, rng, groups):
        return Partition.from_assignment(np.arange(labels.size) % num_clients, num_clients)
'''


@pytest.fixture
def plugin_path(tmp_path):
    site = tmp_path / "site"
    (site / "fedops_example_plugin").mkdir(parents=True)
    (site / "fedops_example_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "fedops_example_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fedops-example-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [fedops.models]
        wide_linear = fedops_example_plugin:WideLinear

        [fedops.partitioners]
        round_robin = fedops_example_plugin:RoundRobin
        """))
    return site


def _run(config: Path, work: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([FEDOPS, "run", str(config), "--workdir", str(work), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_an_entry_point_plugin_package_supplies_the_model_and_the_partitioner(tmp_path, plugin_path):
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["model"] = {"name": "wide_linear", "width": 24}
    config["partition"] = {"num_clients": 6, "name": "round_robin"}
    config["server"]["rounds"] = 2
    config["baseline"] = {"enabled": False}
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    proc = _run(path, tmp_path / "work", env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "work" / "data" / "partitions" / "manifest.json").read_text())
    assert manifest["partitioner"] == "round_robin" and [c["size"] for c in manifest["clients"]] == [100] * 6
    train = json.loads((tmp_path / "work" / "reports" / "train.json").read_text())
    assert train["rounds"] == 2
    # without the package on the path the same config is refused at load, naming the known keys
    bare = _run(path, tmp_path / "work2", {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert bare.returncode == 2 and "unknown model 'wide_linear'" in bare.stderr and "Traceback" not in bare.stderr


def _patients(n: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.integers(20, 80, n)
    bmi = rng.normal(27, 4, n).round(1)
    glucose = rng.normal(110, 20, n).round(0)
    risk = 0.04 * (age - 50) + 0.15 * (bmi - 27) + 0.05 * (glucose - 110)
    outcome = np.where(risk + rng.normal(0, 1, n) > 0, "yes", "no")
    return pd.DataFrame({"age": age, "bmi": bmi, "glucose": glucose, "outcome": outcome})


def _tabular_config(tmp_path: Path, csv: Path) -> Path:
    config = {
        "name": "patients", "seed": 0,
        "data": {"name": "tabular", "path": str(csv), "label": "outcome", "features": ["age", "bmi", "glucose"],
                 "classes": ["no", "yes"], "ranges": {"age": [0, 120], "bmi": [10, 60]}},
        "partition": {"num_clients": 4, "name": "iid"},
        "model": {"name": "mlp", "hidden": [8]},
        "client": {"epochs": 2, "batch_size": 16, "lr": 0.1},
        "server": {"rounds": 3, "fraction": 1.0},
        "baseline": {"enabled": False},
    }
    path = tmp_path / "patients.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_tabular_source_runs_a_federation_on_a_csv_and_validates_it(tmp_path):
    csv = tmp_path / "patients.csv"
    _patients(400).to_csv(csv, index=False)
    config = _tabular_config(tmp_path, csv)
    proc = _run(config, tmp_path / "work", dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "work" / "reports" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.7  # the outcome is learnable from the three features
    report = json.loads((tmp_path / "work" / "reports" / "validation.json").read_text())
    assert report["success"] and {r["name"] for r in report["reports"]} == {"tabular/train", "tabular/test"}
    checked = {r["expectation"] for rep in report["reports"] for r in rep["results"]}
    assert {"expect_table_columns_to_match_ordered_list", "expect_column_values_to_be_between"} <= checked

    broken = _patients(400)
    broken.loc[5, "age"] = 250  # outside the declared range
    broken.to_csv(csv, index=False)
    proc = _run(config, tmp_path / "work-broken", dict(os.environ))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "age" in proc.stderr and "expect_column_values_to_be_between" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "work-broken" / "data" / "partitions" / "manifest.json").exists()  # nothing downstream
