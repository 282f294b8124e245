#!/usr/bin/env bash
# README command 2: install, then run the test suite (unit, property and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
python3 -m uv run --frozen pytest "$@"
