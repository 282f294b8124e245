"""Prefect flows: thin orchestration over the fedops library. Importing this package sets the
project-local environment (Prefect home, telemetry off) before prefect is imported."""

from fedops.env import configure_environment

configure_environment()
