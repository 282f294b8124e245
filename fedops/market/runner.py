"""``python -m fedops.market.runner ROOT``: the Prefect runner process that executes the market's
training runs (started by ``fedops market serve``; it exits when that process goes away)."""

from __future__ import annotations

import os
import sys
import threading
import time


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(1)


if __name__ == "__main__":  # pragma: no cover - run as a process by the end-to-end tests
    from fedops.market.launcher import serve_runner

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    serve_runner(sys.argv[1])
