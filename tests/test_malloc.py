"""fedops.malloc: with the thresholds set, a round's freed memory is reused by the next round
instead of being faulted in again (counted as minor page faults in a fresh process)."""

import json
import os
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


def _clean_env() -> dict[str, str]:
    """Without the allocator's own environment knobs, which would change the defaults measured."""
    return {k: v for k, v in os.environ.items() if not (k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")}


def _run(code: str, mode: str):
    out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True,
                         env=_clean_env())
    return json.loads(out.stdout)


def _faults(mode: str) -> list[int]:
    return _run(ROUNDS, mode)


RELEASE = """
import json, os, sys
from fedops import malloc
assert malloc.retain()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
blocks = [bytes([1]) * 800_000 for _ in range(250)]  # 200 MB written
del blocks
kept = rss_mb()  # freed, but retained for the next round
released = malloc.release()
print(json.dumps({"kept": kept, "after": rss_mb(), "released": released}))
"""


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_retained_memory_is_reused_by_the_next_round():
    default, retained = _faults("default"), _faults("retain")
    # each default round faults its 80 MB in again (~19,500 pages of 4 KB); retained rounds reuse them
    assert min(default[1:]) > 10_000, default
    assert max(retained[1:]) < min(default[1:]) / 20, (retained, default)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_retain_is_idempotent():
    assert malloc.retain() and malloc.retain() and malloc.retained()


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_release_gives_the_retained_memory_back():
    r = _run(RELEASE, "retain")
    assert r["released"] and r["kept"] - r["after"] > 150, r  # most of the 200 MB freed goes back


def test_config_names_the_allowed_values():
    from fedops.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="malloc.*'retain' or 'default'"):
        load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", {"execution.malloc": "jemalloc"})
