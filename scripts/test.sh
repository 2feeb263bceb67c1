#!/usr/bin/env bash
# Set up (Python env + SLURM for the real-cluster tests), then lint, type-check and test.
#   bash scripts/test.sh            everything (what CI runs); prints the 30 slowest tests
#   bash scripts/test.sh --fast     the fast lane: no services, no whole studies, no lint
# Further arguments go to pytest (a file, -k EXPR, -x ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fast" ]; then
  shift
  bash scripts/setup.sh
  exec .venv/bin/python -m pytest --fast "$@"
fi
bash scripts/setup.sh
bash scripts/install-system-deps.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest --durations=30 "$@"
