#!/usr/bin/env bash
# Installs everything from nothing, then runs the whole test suite (real models included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=$(bash scripts/python.sh)
exec "$PY" -m pytest -q "$@"
