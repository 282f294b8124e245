#!/usr/bin/env bash
# README command 2: install, then run the test suite (unit, property and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Headless Chromium renders `dvc plots diff` in tests/flows/test_dvc_experiments.py and, driven by
# chromedriver (selenium), the market's web app in tests/market (Debian's packages, when root; the
# DVC test's browser check is skipped where none is found, the market's browser test fails in CI).
if { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
        || echo "note: could not install chromium and chromium-driver; the browser checks need them" >&2
fi
python3 -m uv run --frozen pytest "$@"
