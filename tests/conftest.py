"""Test-session environment: Prefect state in a temporary home, telemetry off.

Set before anything imports prefect, so the tests never touch the project's own .prefect/.
"""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="fedops-test-prefect-")
os.environ["PREFECT_HOME"] = _home
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.pop("MLFLOW_TRACKING_URI", None)

from fedops.env import configure_environment  # noqa: E402

configure_environment()
