#!/usr/bin/env bash
# Flower's own environment for the engine benchmark (`fedops bench engine`): flwr with its Ray
# simulation engine and the same torch as the project, in .flower-venv (never in the project's
# lock). The benchmark runs fedops_benchmarks/flower_peer.py with this interpreter. Bytecode is
# compiled at install, as for the project's environment (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m uv venv --quiet --allow-existing --python 3.11 .flower-venv
python3 -m uv pip install --quiet --python .flower-venv/bin/python "flwr[simulation]==1.42.*" "torch==2.13.0" "numpy==2.4.6"
.flower-venv/bin/python -m compileall -q -j 0 .flower-venv/lib >/dev/null || true  # a file or two of test data may not compile
.flower-venv/bin/python -c "import flwr, ray, torch; print('flower env:', flwr.__version__, 'ray', ray.__version__, 'torch', torch.__version__)"
