"""Shared fixtures for the data tests: real Fashion-MNIST / Pima (skipped with a reason when
the system copies are absent) and the synthetic dataset, each prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.data import DATASETS
from fedops.data import fashion_mnist as fm
from fedops.data import pima as pm

PROJECT_DIR = Path(__file__).resolve().parents[2]


def pima_available() -> bool:
    return pm.SYSTEM_FILE.is_file() or (PROJECT_DIR / pm.EXTRACTED_FILE).is_file()


def fmnist_available() -> bool:
    return all((fm.SYSTEM_DIR / f).is_file() for f in fm.FILES.values())


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> Path:
    if not fmnist_available():
        pytest.skip(f"Fashion-MNIST not found in {fm.SYSTEM_DIR} (apt-get install dataset-fashion-mnist)")
    raw_dir = tmp_path_factory.mktemp("raw") / "fashion_mnist"
    DATASETS.build("fashion_mnist").prepare(raw_dir=raw_dir, project_dir=PROJECT_DIR)
    return raw_dir


@pytest.fixture(scope="session")
def fmnist_raw(fmnist_dir):
    return DATASETS.build("fashion_mnist").load_raw(fmnist_dir)


@pytest.fixture(scope="session")
def pima_dir(tmp_path_factory) -> Path:
    if not pima_available():
        pytest.skip("Pima not found (apt-get install r-cran-mlbench, or run the bootstrap script)")
    raw_dir = tmp_path_factory.mktemp("raw") / "pima"
    DATASETS.build("pima").prepare(raw_dir=raw_dir, project_dir=PROJECT_DIR)
    return raw_dir


@pytest.fixture(scope="session")
def pima_raw(pima_dir):
    return DATASETS.build("pima").load_raw(pima_dir)


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory):
    ds = DATASETS.build("synthetic")
    raw_dir = tmp_path_factory.mktemp("raw") / "synthetic"
    ds.prepare(raw_dir=raw_dir, project_dir=PROJECT_DIR)
    return ds.load_raw(raw_dir)
