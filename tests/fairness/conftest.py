"""A small Adult world (the first 3,000 training rows, 5 clients skewed by sex) shared by the
round-level fairness tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
BASE = {
    "name": "adult-test", "seed": 3,
    "data": {"name": "adult", "sensitive": "sex"},
    "partition": {"num_clients": 5, "name": "sensitive_dirichlet", "alpha": 0.5, "min_size": 50},
    "model": {"name": "mlp", "hidden": []},
    "client": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "server": {"rounds": 3, "fraction": 1.0},
    "execution": {"device": "cpu", "max_workers": 1, "torch_threads": 1},
    "fairness": {"holdout": 0.2},
}


@pytest.fixture(scope="session")
def adult_bundle(tmp_path_factory):
    from fedops.data import DATASETS

    raw = tmp_path_factory.mktemp("raw") / "adult"
    ds = DATASETS.build("adult")
    ds.prepare(raw_dir=raw, project_dir=PROJECT_DIR)
    return ds.to_bundle(ds.load_raw(raw))


def make_config(**sections):
    from fedops.config import merge_override, parse_config

    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for dotted, value in sections.items():
        merge_override(data, dotted.replace("__", "."), value)
    return parse_config(data)


@pytest.fixture(scope="session")
def make_cfg():
    return make_config


@pytest.fixture(scope="session")
def adult_world_for(adult_bundle):
    def build(cfg, rows: int = 3000):
        from fedops.partition import partition_labels
        from fedops.round.world import world_from_bundle

        idx = np.arange(rows)
        part = partition_labels(cfg.partition.partitioner, adult_bundle.y_train.numpy()[idx],
                                num_clients=cfg.partition.num_clients, seed=cfg.seed,
                                groups=adult_bundle.sensitive_train[idx])
        return world_from_bundle(cfg, adult_bundle, partition_indices=[idx[p] for p in part.indices])

    return build
