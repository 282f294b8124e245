"""Test-session environment: Prefect state in a temporary home, telemetry off, and one Prefect API
server for the whole session (tests in this process and the CLI processes the tests start share it,
instead of each starting its own ephemeral server).

Set before anything imports prefect, so the tests never touch the project's own .prefect/.
"""

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

_home = tempfile.mkdtemp(prefix="fedops-test-prefect-")
os.environ["PREFECT_HOME"] = _home
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("FEDOPS_FAILPOINTS", None)

from fedops.env import configure_environment  # noqa: E402

configure_environment()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_prefect_server() -> tuple[subprocess.Popen | None, str | None]:
    if os.environ.get("PREFECT_API_URL"):
        return None, os.environ["PREFECT_API_URL"]
    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = open(Path(_home) / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    atexit.register(_stop, proc)
    return proc, f"http://127.0.0.1:{port}/api"


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's whole session (`prefect server start` runs uvicorn as a child process)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_server, _api = _start_prefect_server()
if _api:
    os.environ["PREFECT_API_URL"] = _api


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """The session's Prefect API, healthy before the first test (falls back to ephemeral mode)."""
    if _server is None:
        yield os.environ.get("PREFECT_API_URL")
        return
    deadline = time.time() + 180
    while time.time() < deadline and _server.poll() is None:
        try:
            with urllib.request.urlopen(f"{_api}/health", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:  # no server: every process uses its own ephemeral one
        os.environ.pop("PREFECT_API_URL", None)
    yield os.environ.get("PREFECT_API_URL")
    # the server stops at exit (atexit), after Prefect's log handler has sent its last lines
