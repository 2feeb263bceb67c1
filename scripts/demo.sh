#!/usr/bin/env bash
# Set up, then run the demo study on the laptop profile: results/demo/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Exported predictions carry keyed pseudonyms instead of subject ids.  The demo's data are
# synthetic, so a fixed demo key will do; a real study sets its own secret beforehand:
#   export COHORTFLOW_PSEUDONYM_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')
export COHORTFLOW_PSEUDONYM_KEY="${COHORTFLOW_PSEUDONYM_KEY:-cohortflow-demo-synthetic-data-only}"
.venv/bin/cohortflow run "$@"
echo "report: $(pwd)/results/demo/report.html"
