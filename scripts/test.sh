#!/usr/bin/env bash
# Set up, then run the default test suite (everything but tests marked slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -m "not slow" -q "$@"
