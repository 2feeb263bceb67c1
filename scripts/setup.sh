#!/usr/bin/env bash
# Create .venv with cohortflow (editable) and its test tools; a no-op when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "cohortflow needs Python 3.11 or newer (found $("$python" --version 2>&1))" >&2; exit 1; }
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
touch "$stamp"
