#!/usr/bin/env bash
# System packages the test suite uses: a real single-node SLURM cluster (slurm-wlm, munge),
# a real PostgreSQL server (postgresql) and a headless browser for the report (chromium).
# Installs them with apt-get when they are missing and we may (root or passwordless sudo);
# otherwise says what to install.  Without them the SLURM, PostgreSQL and browser tests skip (and fail
# under CI=true).
set -euo pipefail

packages=(slurm-wlm munge postgresql chromium)
missing=()
command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; else
  echo "cohortflow: SLURM/PostgreSQL tests need: apt-get install ${packages[*]} (not root; skipping)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "cohortflow: SLURM/PostgreSQL tests need ${packages[*]}; install them with your package manager" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
