"""partition.keep in the world: client j trains on partition keep[j] of the prepared manifest
(what a market task's enrolled owners hold), and only those partitions are loaded."""

from pathlib import Path

import numpy as np

from fedops.config import load_config
from fedops.paths import Paths
from fedops.partition import load_manifest
from fedops.round.world import load_world

ROOT = Path(__file__).resolve().parents[2]


def test_the_world_holds_the_kept_partitions_in_order(prepared):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", {"partition.keep": [4, 1]})
    world = load_world(cfg, Paths.at(prepared))
    partition, _ = load_manifest(Paths.at(prepared).manifest)
    assert world.runtime.num_clients == 2
    for j, k in enumerate([4, 1]):
        assert np.array_equal(np.asarray(world.runtime.partition_indices[j]), partition.indices[k])
