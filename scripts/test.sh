#!/usr/bin/env bash
# README command 2: install, then run the test suite (unit, property and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Headless Chromium renders `dvc plots diff` in tests/flows/test_dvc_experiments.py (Debian's
# package, when root; that test's browser check is skipped, with its reason, where none is found).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "note: could not install chromium; the browser check of the DVC plots test will be skipped" >&2
fi
python3 -m uv run --frozen pytest "$@"
