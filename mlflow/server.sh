#!/usr/bin/env bash
# An MLflow tracking server over this project's store (default) or a database URI given as $1.
# Artifacts are served by the server (--serve-artifacts) from mlflow/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE="${1:-sqlite:///$(pwd)/mlflow/mlflow.db}"
mkdir -p mlflow/artifacts
export MLFLOW_DISABLE_TELEMETRY=true
exec .venv/bin/mlflow server --backend-store-uri "$STORE" --artifacts-destination "$(pwd)/mlflow/artifacts" \
  --serve-artifacts --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}"
