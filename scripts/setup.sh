#!/usr/bin/env bash
# Create .venv (if missing) and install maskconver with its test extras.
# A torch that is already importable in the venv is kept (GPU users: install your CUDA torch
# into .venv first); otherwise the CPU build torch==2.13.0 is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 (CPU)"
  "$VPY" -m pip install -q torch==2.13.0
fi
echo "[setup] installing maskconver and its test extras"
"$VPY" -m pip install -q -e ".[dev]"
"$VPY" -c "import torch, maskconver; print(f'[setup] torch {torch.__version__}, maskconver {maskconver.__version__}')"
