#!/usr/bin/env bash
# Make .venv hold exactly the packages of requirements.lock (each file checked against its
# sha256, nothing else left installed) plus cohortflow itself, editable; a no-op when the
# stamp says it already holds this lock and this pyproject.toml. Refresh the lock: make lock.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
lock=requirements.lock
stamp=.venv/.installed
want=$(sha256sum "$lock" pyproject.toml)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "cohortflow needs Python 3.11 or newer (found $("$python" --version 2>&1))" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  echo "warning: $lock is resolved for Python 3.11; $("$python" --version 2>&1) may install" \
       "or run differently (set PYTHON=python3.11 to use 3.11)" >&2
rm -f "$stamp"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install --require-hashes --no-deps -r "$lock"
# An existing .venv may hold packages an earlier lock had: remove what this lock does not name.
unlocked=$(PYTHONPATH=src .venv/bin/python -c '
import sys
from cohortflow.environment import installed_versions, read_lock
print(" ".join(sorted(set(installed_versions()) - set(read_lock(sys.argv[1])) - {"cohortflow"})))
' "$lock")
if [ -n "$unlocked" ]; then "${pip[@]}" uninstall --yes $unlocked; fi
# Built from the locked setuptools and wheel, so nothing unhashed is fetched.
"${pip[@]}" install --no-deps --no-build-isolation -e .
if ! broken=$(.venv/bin/python -m pip check 2>&1); then
  echo "$broken" >&2
  echo "$lock does not hold what pyproject.toml asks for; fix: make lock, then" \
       "bash scripts/setup.sh" >&2
  exit 1
fi
echo "$want" > "$stamp"
