"""Atomic checkpoints of a run's state, one after every round, so a killed run resumes.

A checkpoint directory holds ``state-NNNNNN.pt`` files and ``manifest.json`` naming the current
one with its sha256. Saving writes the new state to a temporary file, fsyncs it, renames it into
place, fsyncs the directory, then replaces the manifest the same way; only then are older state
files removed. A process killed at any instant leaves a manifest that names a complete state
file whose hash matches: the last complete round. A state file that does not match its
manifest's hash is refused by name, never loaded.

The directory is locked (``fcntl.flock``) while a run uses it: a second process training the
same config in the same work directory is refused; the lock dies with its process, so a killed
run's checkpoint can be resumed at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fedops import failpoints
from fedops.config import Config
from fedops.errors import FedopsError

FORMAT = 1


class CheckpointError(FedopsError):
    """A checkpoint that cannot be used (corrupt, or held by another process)."""


def checkpoint_key(config: Config, *, manifest_sha256: str) -> str:
    """What identifies a run for resuming: the resolved config (without ``execution``, which may
    change between attempts without changing the result) and the partition it trains on."""
    params = config.to_params()
    params.pop("execution", None)
    blob = json.dumps({"config": params, "manifest": manifest_sha256}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(data: bytes, path: Path, *, before_rename: str | None = None, round_idx: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if before_rename:
        failpoints.hit(before_rename, round_idx=round_idx)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class CheckpointStore:
    """The checkpoints of one run (one config on one partition) in ``directory``."""

    def __init__(self, directory: Path, *, key: str) -> None:
        self.directory = Path(directory)
        self.key = key
        self._lock_fd: int | None = None

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def acquire(self) -> None:
        """Take the directory's lock, or refuse if another live process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(
                f"the run with checkpoint {self.directory} is being trained by {owner}; wait for it or stop it "
                "(a second process on the same config and work directory would race it)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint manifest {self.manifest_path} is unreadable ({exc}); "
                                  "start over with --fresh") from None
        if manifest.get("format") != FORMAT or manifest.get("key") != self.key:
            raise CheckpointError(f"checkpoint manifest {self.manifest_path} is for another run or format "
                                  f"({manifest.get('key')!r}, format {manifest.get('format')!r}); start over with --fresh")
        return manifest

    def load(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(state, manifest)`` of the last complete round, or None when there is none."""
        manifest = self.manifest()
        if manifest is None:
            return None
        path = self.directory / manifest["file"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"checkpoint {path} named by {self.manifest_path} cannot be read ({exc}); "
                                  "start over with --fresh") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest["sha256"]:
            raise CheckpointError(f"checkpoint {path} has sha256 {digest[:12]}..., its manifest says "
                                  f"{manifest['sha256'][:12]}...: the file is corrupt; start over with --fresh")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), manifest

    def save(self, state: dict[str, Any], *, round_idx: int, finished: bool = False) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        name = f"state-{round_idx:06d}.pt"
        path = self.directory / name
        _write_durable(data, path, before_rename="checkpoint.written", round_idx=round_idx)
        failpoints.hit("checkpoint.renamed", round_idx=round_idx)
        manifest = {"format": FORMAT, "key": self.key, "round": round_idx, "file": name,
                    "sha256": hashlib.sha256(data).hexdigest(), "finished": finished, "saved_at": time.time()}
        _write_durable(json.dumps(manifest, indent=1).encode(), self.manifest_path)
        for old in self.directory.glob("state-*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return path

    def clear(self) -> None:
        """Remove the state files and the manifest (the lock file stays while it is held)."""
        if not self.directory.is_dir():
            return
        for child in self.directory.iterdir():
            if child.name == "lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink(missing_ok=True)
