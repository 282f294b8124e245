"""How fast a config error reaches the user: ``fedops run BAD.yaml`` timed as a whole process,
interleaved with ``fedops --version`` (the floor: Python, typer and the CLI module). The config is
refused before torch, pandas or Prefect is imported (fedops/lazy.py)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAD = "server:\n  rounds: -1\n"


def _time(args: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stderr.strip()


def main(*, repeats: int = 7) -> dict:
    fedops = str(Path(sys.executable).parent / "fedops")
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text(BAD)
        error, floor, message = [], [], ""
        for _ in range(repeats):
            seconds, code, message = _time([fedops, "run", str(bad), "--workdir", tmp])
            assert code == 2, message
            error.append(seconds)
            floor.append(_time([fedops, "--version"])[0])
    return {"repeats": repeats, "message": message, "error_median_s": statistics.median(error),
            "error_max_s": max(error), "version_median_s": statistics.median(floor), "version_max_s": max(floor)}
