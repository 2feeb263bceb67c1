#!/usr/bin/env bash
# Set up, then run the demo study on the laptop profile: results/demo/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/cohortflow run "$@"
echo "report: $(pwd)/results/demo/report.html"
