#!/usr/bin/env bash
# Installs what fedops needs on a fresh machine that has Python 3.11 and pip: uv (from PyPI), the
# locked environment (uv.lock -> .venv), and the offline data packages (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -m uv --version >/dev/null 2>&1; then
  echo "bootstrap: installing uv" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
python3 -m uv sync --frozen --quiet
bash scripts/system-data.sh
