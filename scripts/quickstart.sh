#!/usr/bin/env bash
# The main job: set up, then train the tiny preset on synthetic data, evaluate PQ,
# predict held-out images and write pictures + curves to runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/maskconver quickstart --output-dir "${OUT:-runs/quickstart}" "$@"
