"""Named kill points for crash tests (fault injection, as etcd's and TiKV's failpoints).

``FEDOPS_FAILPOINTS="client.train@2,checkpoint.renamed@4"`` makes the process SIGKILL itself when
it reaches ``client.train`` in round 2, or ``checkpoint.renamed`` in round 4; ``round.tracked@2=term``
sends SIGTERM instead (what ``timeout``, systemd and Kubernetes send first), ``=int`` SIGINT
(Ctrl-C), and ``=termgroup`` / ``=intgroup`` send them to the whole process group, as a terminal or
a supervisor does. Without the variable every :func:`hit` returns at once. The crash-resume and
interruption tests use it to stop a real training process at exact points of a round, then run it
again.
"""

from __future__ import annotations

import os
import signal

ENV = "FEDOPS_FAILPOINTS"
POINTS = (
    "run.started",  # the observers have started (the tracking run exists), before the first checkpoint
    "client.train",  # inside a client's local training (after its SGD, before it returns)
    "round.trained",  # every client job of the round has returned
    "server.aggregate",  # in the server's aggregation step
    "round.evaluate",  # inside the evaluation of the global model
    "checkpoint.written",  # the new state file is on disk (fsynced), not yet renamed
    "checkpoint.renamed",  # the state file is renamed, the manifest still names the previous one
    "tracking.artifacts",  # the round's client table is logged, its metrics are not (on the MLflow writer thread: use =kill)
    "round.tracked",  # the round is checkpointed and handed to the observers (MLflow may still be writing it)
    "run.registering",  # the final model is logged, not yet registered
    "ledger.write",  # inside the reputation ledger's transaction: half of a round's events inserted
)


SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT,
           "termgroup": signal.SIGTERM, "intgroup": signal.SIGINT}


def _parse(spec: str) -> dict[str, tuple[int | None, str]]:
    out: dict[str, tuple[int | None, str]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        item, _, how = item.partition("=")
        name, _, at = item.partition("@")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r}; known: {', '.join(POINTS)}")
        if (how or "kill") not in SIGNALS:
            raise ValueError(f"{ENV}: {item}={how}: expected one of ={', ='.join(SIGNALS)}")
        out[name] = (int(at) if at else None, how or "kill")
    return out


def hit(name: str, *, round_idx: int | None = None) -> None:
    """Signal this process if ``name`` (in ``round_idx``, when the spec names a round) is armed."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    armed = _parse(spec)
    if name in armed and armed[name][0] in (None, round_idx):
        how = armed[name][1]
        if how.endswith("group"):
            os.killpg(os.getpgid(0), SIGNALS[how])
        else:
            os.kill(os.getpid(), SIGNALS[how])
