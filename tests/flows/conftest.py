"""Shared preparation for the flow tests: the tiny synthetic data set through the real stages."""

from pathlib import Path

import pytest

from fedops.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, request):
    """A fresh work directory per test module, with the tiny config's prepare, validate and
    partition stages run (a module may define its own ``prepared`` instead)."""
    from flows.pipeline import run_stage

    work = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    for stage in ("prepare", "validate", "partition"):
        run_stage(stage, cfg, str(work))
    return work
