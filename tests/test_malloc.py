"""fedops.malloc: with the thresholds set, a round's freed memory is reused by the next round
instead of being faulted in again (counted as minor page faults in a fresh process)."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from fedops import malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

ROUNDS = """
import json, resource, sys
from fedops import malloc
if sys.argv[1] == "retain":
    assert malloc.retain()
faults = []
for r in range(5):  # a round: 100 payloads of 800 KB written, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    payloads = [bytes([r]) * 800_000 for _ in range(100)]
    del payloads
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_retained_memory_is_reused_by_the_next_round():
    default, retained = _faults("default"), _faults("retain")
    # each default round faults its 80 MB in again (~19,500 pages of 4 KB); retained rounds reuse them
    assert min(default[1:]) > 10_000, default
    assert max(retained[1:]) < min(default[1:]) / 20, (retained, default)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_retain_is_idempotent_and_release_returns_memory():
    assert malloc.retain() and malloc.retain() and malloc.retained()
    block = [b"x" * 800_000 for _ in range(50)]
    del block
    assert isinstance(malloc.release(), bool)


def test_config_names_the_allowed_values():
    from fedops.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="malloc.*'retain' or 'default'"):
        load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", {"execution.malloc": "jemalloc"})
