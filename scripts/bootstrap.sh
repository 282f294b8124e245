#!/usr/bin/env bash
# Installs what fedops needs on a fresh machine that has Python 3.11 and pip: uv (from PyPI), the
# locked environment (uv.lock -> .venv), and the offline data packages (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -m uv --version >/dev/null 2>&1; then
  echo "bootstrap: installing uv" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
# --compile-bytecode: the packages' .pyc files are written once, here. Where PYTHONDONTWRITEBYTECODE
# is set (as on this project's machines) Python would otherwise compile torch, MLflow and Prefect
# from source in every process: `import mlflow` 5.4 s against 1.9 s, `import torch._dynamo` 9.6 s
# against 4.5 s. The same for fedops' own modules (a stale .pyc is ignored, never used).
python3 -m uv sync --frozen --quiet --compile-bytecode
.venv/bin/python -m compileall -q fedops flows fedops_benchmarks >/dev/null
bash scripts/system-data.sh
