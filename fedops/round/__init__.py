"""The round as one object: :class:`FederatedRun` (one round, its state across rounds),
:func:`run_training` (the one loop: resume, rounds, checkpoints, observers), executors, the
release policy and the simulated world they run in."""

from fedops.round.checkpoint import CheckpointError, CheckpointStore, checkpoint_key
from fedops.round.engine import FederatedRun, RoundOutcome, default_schedule
from fedops.round.executor import CohortExecutor, Executor, Job, MapResult, SequentialExecutor, local_executor
from fedops.round.loop import RunObserver, TrainingResult, params_digest, run_training
from fedops.round.release import ReleasePolicy, RoundRecord
from fedops.round.world import World, load_world, world_from_bundle

__all__ = [
    "CheckpointError",
    "CheckpointStore",
    "Executor",
    "FederatedRun",
    "Job",
    "MapResult",
    "ReleasePolicy",
    "RoundOutcome",
    "RoundRecord",
    "RunObserver",
    "SequentialExecutor",
    "CohortExecutor",
    "local_executor",
    "TrainingResult",
    "World",
    "checkpoint_key",
    "default_schedule",
    "load_world",
    "params_digest",
    "run_training",
    "world_from_bundle",
]
