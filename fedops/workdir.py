"""One process at a time per work directory.

Every stage takes the work directory's lock (``<workdir>/.fedops/lock``, ``fcntl.flock``) for as
long as it runs: a second ``fedops run``, ``dvc repro`` or deployment run on the same work directory
is refused at once with a message naming the holder, or waits for it when asked. The lock is
re-entrant within a process (``fedops run`` holds it across its stages) and dies with its process,
so a killed run never leaves it held. Holding it also makes first-time set-up (the MLflow store's
tables, the data directories) safe against a concurrent start.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fedops.errors import FedopsError


class WorkdirBusy(FedopsError):
    """Another live process is using the work directory."""


_held: dict[Path, list[int]] = {}  # lock file -> [fd, depth]
_guard = threading.Lock()


def lock_path(workdir: Path) -> Path:
    return Path(workdir).resolve() / ".fedops" / "lock"


@contextmanager
def workdir_lock(workdir: Path, *, wait: bool = False, what: str = "fedops") -> Iterator[None]:
    """Hold the work directory's lock for the block (see module docstring)."""
    path = lock_path(workdir)
    with _guard:
        if path in _held:
            _held[path][1] += 1
            reentered = True
        else:
            reentered = False
    if not reentered:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _acquire(fd, path, wait=wait)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({what}) since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        with _guard:
            _held[path] = [fd, 1]
    try:
        yield
    finally:
        with _guard:
            entry = _held[path]
            entry[1] -= 1
            done = entry[1] == 0
            if done:
                del _held[path]
        if done:
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])


def _acquire(fd: int, path: Path, *, wait: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        if not wait:
            raise WorkdirBusy(
                f"the work directory {path.parent.parent} is in use by {holder}; wait for it to finish, stop it, or "
                "run again with --wait"
            ) from None
    fcntl.flock(fd, fcntl.LOCK_EX)  # --wait: block until the holder ends
