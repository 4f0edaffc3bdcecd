#!/usr/bin/env bash
# Installs everything from nothing, runs the static checks, then the whole test suite (real
# models included). `bash scripts/test.sh -m "not slow"` runs the fast tier instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/check.sh
PY=$(bash scripts/python.sh)
exec "$PY" -m pytest -q "$@"
