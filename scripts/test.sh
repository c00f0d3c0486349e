#!/usr/bin/env bash
# Set up, lint (ruff check + ruff format --check + mypy), then run the default test suite
# (everything but tests marked slow). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[lint] ruff check, ruff format --check, mypy"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy src
exec .venv/bin/python -m pytest -m "not slow" -q "$@"
