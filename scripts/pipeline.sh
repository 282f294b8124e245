#!/usr/bin/env bash
# README command 1: install, then reproduce the whole pipeline with DVC on the default config
# (params.yaml): prepare -> validate -> partition -> train -> evaluate -> baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
python3 -m uv run --frozen dvc repro "$@"
python3 -m uv run --frozen python -c "
import json; m = json.load(open('reports/metrics.json')); b = json.load(open('reports/baseline.json'))
t = json.load(open('reports/train.json'))
print(f\"federated test accuracy {m['test_accuracy']:.4f} after {m['rounds']} rounds (centralised baseline {b['test_accuracy']:.4f})\")
print(f\"model params sha256 {m['model_params_sha256']}\")
print(f\"MLflow run {t['run_id']}; browse with: .venv/bin/fedops ui\")"
