#!/usr/bin/env bash
# Resolve requirements.lock: exact versions and sha256 hashes of every package that
# scripts/setup.sh installs (pyproject.toml's dependencies, its `test` extra and
# scripts/lock-tools.in), for CPython 3.11 on Linux x86_64. Needs PyPI.
#   bash scripts/lock.sh             keep the locked versions that still fit pyproject.toml
#   bash scripts/lock.sh --upgrade   move every package to its newest allowed version
# uv runs from a throwaway virtual environment and is pinned, so the lock's format is stable.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
"$python" -m venv "$tool"
"$tool/bin/python" -m pip install --quiet "uv==0.13.9"
"$tool/bin/uv" pip compile pyproject.toml scripts/lock-tools.in --extra test \
  --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
  --index-url https://pypi.org/simple --custom-compile-command "make lock" \
  --quiet --output-file requirements.lock "$@"
