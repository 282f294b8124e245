"""W1's bare loop, the benchmark's baseline: on worker processes (clients split by their rows, the
test set evaluated in shards) it does the same SGD steps and gets the same accuracy as in one
process, so the two timings compare the same work."""

from pathlib import Path

import pytest
import torch

from fedops.config import load_config
from fedops_benchmarks import w1

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_bare_loop_on_two_processes_does_the_one_process_steps(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"server.rounds": 3, "server.fraction": 0.67})
    w1.prepare(cfg, tmp_path)
    one = w1.bare_loop(cfg, tmp_path)
    two = w1.bare_loop(cfg, tmp_path, processes=2)
    assert one[2] == two[2] and 0 < one[2] <= 1  # the same test accuracy, from 1 shard and from 2
    assert torch.allclose(one[3], two[3], atol=1e-6, rtol=0)  # sums in another order: float rounding only
    assert one[3].numel() > 1000
