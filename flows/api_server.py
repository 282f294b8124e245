"""One local Prefect API server for every fedops command on this machine's project home.

Without ``PREFECT_API_URL`` each Prefect flow run starts its own ephemeral API server (20–50 s on
a busy 2-core machine): a six-stage ``dvc repro`` would pay it six times. Instead a fedops command
that runs flows uses :func:`local_api`, which

- uses the user's server when ``PREFECT_API_URL`` is set (nothing is started or stopped);
- otherwise reuses the server an earlier fedops command started (``$PREFECT_HOME/fedops-api.json``
  names it; it is checked for health), or starts one on 127.0.0.1 (port 4200 when free, the port
  Prefect's UI uses by default, else any free port) under a small supervisor in its own session,
  so Ctrl-C to the terminal's process group does not take it down in the middle of a round;
- holds a shared lock on ``$PREFECT_HOME/fedops-api.users`` while the command runs.

The supervisor stops the server once no command has held the users lock for ``idle`` seconds
(default 120, ``FEDOPS_PREFECT_IDLE_SECONDS``): long enough to carry a ``dvc repro`` from one stage
to the next, and a SIGKILLed command's lock dies with it, so nothing outlives its users for long.
A command interrupted by Ctrl-C or SIGTERM stops the server at once when it was its last user.
Each start is one line in ``$PREFECT_HOME/fedops-api.log`` (what ``fedops bench startup`` counts).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fedops.errors import FedopsError

DEFAULT_PORT = 4200
START_TIMEOUT_S = 180.0


class ApiServerError(FedopsError):
    """The local Prefect API server could not be started."""


def _home() -> Path:
    home = Path(os.environ["PREFECT_HOME"]) if os.environ.get("PREFECT_HOME") else Path.home() / ".prefect"
    home.mkdir(parents=True, exist_ok=True)
    return home


def _files() -> tuple[Path, Path, Path, Path]:
    home = _home()
    return home / "fedops-api.json", home / "fedops-api.lock", home / "fedops-api.users", home / "fedops-api.log"


def idle_seconds() -> float:
    return float(os.environ.get("FEDOPS_PREFECT_IDLE_SECONDS", "120"))


def healthy(url: str, *, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:  # reap it first if it is our own child (the command that started it), or it stays a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def running() -> dict | None:
    """The fedops-started server's record when its supervisor is alive and it answers."""
    state_file, *_ = _files()
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if _alive(int(state["pid"])) and healthy(state["url"]):
        return state
    return None


def _port() -> int:
    for port in (DEFAULT_PORT, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise ApiServerError("no free port on 127.0.0.1 for the Prefect API server")


def _start() -> dict:
    state_file, _, _, log_file = _files()
    port = _port()
    url = f"http://127.0.0.1:{port}/api"
    with open(log_file, "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.api_server", "--port", str(port),
                                 "--idle", str(idle_seconds())], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + START_TIMEOUT_S
    while not healthy(url):
        if proc.poll() is not None or time.time() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            raise ApiServerError(f"the local Prefect API server did not start on {url} within "
                                 f"{START_TIMEOUT_S:.0f} s; its log: {log_file}")
        time.sleep(0.25)
    state = {"pid": proc.pid, "url": url, "started": time.time()}
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(state_file)
    return state


@contextmanager
def local_api() -> Iterator[str | None]:
    """Run the block against one shared Prefect API (see module docstring); yields its URL."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    state_file, lock_file, users_file, _ = _files()
    users = os.open(users_file, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(users, fcntl.LOCK_SH)  # before looking: a supervisor shutting down holds it exclusively
    interrupted = False
    try:
        starting = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(starting, fcntl.LOCK_EX)  # one starter at a time
            state = running() or _start()
        finally:
            os.close(starting)
        os.environ["PREFECT_API_URL"] = state["url"]
        try:
            yield state["url"]
        except BaseException as exc:  # Ctrl-C, or prefect's TerminationSignal (SIGTERM inside a flow run)
            interrupted = isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TerminationSignal"
            raise
        finally:
            os.environ.pop("PREFECT_API_URL", None)
    finally:
        if interrupted:
            _drain_prefect_clients()
        fcntl.flock(users, fcntl.LOCK_UN)
        os.close(users)
        if interrupted:
            stop(only_if_unused=True)


def _drain_prefect_clients(timeout: float = 5.0) -> None:
    """Send Prefect's queued log lines and events now, while the server still answers: at exit
    Prefect drains them anyway, and against a stopped server that meant a minute of retries."""
    if "prefect.logging.handlers" not in sys.modules:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for service in (APILogWorker, EventsWorker):
            service.drain_all(timeout=timeout)
    except Exception:  # noqa: BLE001 - best effort: the interrupted command is exiting anyway
        pass


def stop(*, only_if_unused: bool = True, timeout: float = 15.0) -> bool:
    """Stop the fedops-started server (when no other command uses it, if asked). True if stopped."""
    state_file, _, users_file, _ = _files()
    users = os.open(users_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | (fcntl.LOCK_NB if only_if_unused else 0))
        except BlockingIOError:
            return False
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            return False
        pid = int(state["pid"])
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while _alive(pid) and time.time() < deadline:
                time.sleep(0.1)
        state_file.unlink(missing_ok=True)
        return True
    finally:
        os.close(users)


def _stop_group(server: subprocess.Popen, *, grace: float = 5.0) -> None:
    """SIGTERM the server's process group; SIGKILL what is left after ``grace`` seconds (uvicorn's
    graceful shutdown can wait much longer on idle keep-alive connections; SQLite keeps its journal)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the group's other processes (uvicorn workers) after the leader
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def _supervise(port: int, idle: float) -> int:
    """The supervisor: run ``prefect server start`` and stop it when idle or told to."""
    state_file, _, users_file, _ = _files()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], stdin=subprocess.DEVNULL, env=env,
                              process_group=0)  # the server and its workers: one group to stop
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} started prefect server pid {server.pid} on "
          f"http://127.0.0.1:{port}/api (supervisor pid {os.getpid()}, idle stop after {idle:.0f} s)", flush=True)
    stopping = False

    def terminate(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    users = os.open(users_file, os.O_RDWR | os.O_CREAT, 0o644)
    idle_since: float | None = None
    while not stopping and server.poll() is None:
        time.sleep(1.0)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            idle_since = None
            continue
        now = time.time()
        idle_since = idle_since or now
        if now - idle_since >= idle:
            state_file.unlink(missing_ok=True)  # under the exclusive lock: no user can be looking
            stopping = True
            reason = f"idle for {idle:.0f} s"
            break
        fcntl.flock(users, fcntl.LOCK_UN)
    else:
        reason = "asked to stop" if stopping else f"the server exited ({server.returncode})"
    _stop_group(server)
    try:
        if json.loads(state_file.read_text())["pid"] == os.getpid():
            state_file.unlink(missing_ok=True)
    except (OSError, ValueError, KeyError):
        pass
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stopped prefect server pid {server.pid}: {reason}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fedops' local Prefect API server supervisor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=float, required=True)
    args = parser.parse_args()
    from fedops.env import configure_environment

    configure_environment()
    sys.exit(_supervise(args.port, args.idle))
