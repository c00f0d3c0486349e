#!/usr/bin/env bash
# Set up, lint (ruff check + ruff format --check + mypy), then run the default test suite
# (everything but tests marked slow; the OpenVINO and TFLite tests in a second pytest process).
# Extra arguments go to one pytest run instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[lint] ruff check, ruff format --check, mypy"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy src
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -m "not slow" -q "$@"
fi
# OpenVINO and LiteRT (with JAX) start native threads that can crash a later fork() in the same
# process (DataLoader workers, evaluation workers): their tests run in a process of their own
RUNTIMES=(tests/test_openvino.py tests/test_tflite.py)
.venv/bin/python -m pytest -m "not slow" -q "${RUNTIMES[@]/#/--ignore=}"
echo "[tests] the OpenVINO and TFLite backends, in their own process"
exec .venv/bin/python -m pytest -m "not slow" -q "${RUNTIMES[@]}"
