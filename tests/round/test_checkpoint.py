"""Atomic checkpoints: the manifest names a complete state file with its hash; a partial write
never becomes the checkpoint; a corrupt file is refused by name; one process per run."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fedops import failpoints
from fedops.config import parse_config
from fedops.round.checkpoint import CheckpointError, CheckpointStore, checkpoint_key


def _state(r):
    return {"round": r, "params": torch.arange(4.0) + r, "history": [{"round": i} for i in range(1, r + 1)]}


def test_save_then_load_returns_the_last_round(tmp_path):
    store = CheckpointStore(tmp_path / "ck", key="k1")
    assert store.load() is None
    for r in range(3):
        store.save(_state(r), round_idx=r)
    state, manifest = store.load()
    assert manifest["round"] == 2 and not manifest["finished"] and torch.equal(state["params"], torch.arange(4.0) + 2)
    assert sorted(p.name for p in (tmp_path / "ck").glob("state-*.pt")) == ["state-000002.pt"]  # older ones removed
    store.save(_state(2), round_idx=2, finished=True)
    assert store.load()[1]["finished"]


def test_a_corrupt_state_file_is_refused_by_name(tmp_path):
    store = CheckpointStore(tmp_path / "ck", key="k1")
    path = store.save(_state(1), round_idx=1)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"state-000001.pt has sha256 .* the file is corrupt; start over with --fresh"):
        store.load()
    with pytest.raises(CheckpointError, match="for another run"):
        CheckpointStore(tmp_path / "ck", key="other").load()


@pytest.mark.parametrize("point", ["checkpoint.written", "checkpoint.renamed"])
def test_a_process_killed_while_saving_leaves_the_previous_round(tmp_path, point):
    """A real process SIGKILLed between the steps of a save: the manifest still names round 1."""
    store = CheckpointStore(tmp_path / "ck", key="k1")
    store.save(_state(1), round_idx=1)
    code = ("import torch; from fedops.round.checkpoint import CheckpointStore; "
            f"CheckpointStore({str(tmp_path / 'ck')!r}, key='k1').save({{'round': 2, 'params': torch.zeros(4)}}, round_idx=2)")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, failpoints.ENV: f"{point}@2"})
    assert proc.returncode == -9
    state, manifest = store.load()
    assert manifest["round"] == 1 and torch.equal(state["params"], torch.arange(4.0) + 1)


def test_one_process_per_run(tmp_path):
    first = CheckpointStore(tmp_path / "ck", key="k1")
    first.acquire()
    try:
        code = ("from fedops.round.checkpoint import CheckpointStore; "
                f"CheckpointStore({str(tmp_path / 'ck')!r}, key='k1').acquire()")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0 and f"being trained by pid {os.getpid()}" in proc.stderr
    finally:
        first.release()
    second = CheckpointStore(tmp_path / "ck", key="k1")
    second.acquire()  # released: free again
    second.release()


def test_the_key_ignores_execution_and_follows_config_and_partition():
    a = parse_config({"seed": 1})
    assert checkpoint_key(a, manifest_sha256="m") == checkpoint_key(
        parse_config({"seed": 1, "execution": {"executor": "dask", "max_workers": 4}}), manifest_sha256="m")
    assert checkpoint_key(a, manifest_sha256="m") != checkpoint_key(parse_config({"seed": 2}), manifest_sha256="m")
    assert checkpoint_key(a, manifest_sha256="m") != checkpoint_key(a, manifest_sha256="n")


def test_failpoint_names_are_checked():
    with pytest.raises(ValueError, match="unknown failpoint 'nowhere'"):
        failpoints._parse("nowhere@2")
    assert failpoints._parse("client.train@2, round.tracked=termgroup") == {
        "client.train": (2, "kill"), "round.tracked": (None, "termgroup")}
    with pytest.raises(ValueError, match="expected one of =kill, =term, =int"):
        failpoints._parse("round.tracked@2=stop")
    json.dumps(failpoints.POINTS)
