#!/usr/bin/env bash
# The static checks: import contracts, private names, lint, format, types. CI runs them before
# the tests (scripts/test.sh); run them yourself before you push (see CONTRIBUTING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/python.sh)
BIN=$(dirname "$PY")
echo "== import contracts (lint-imports)"; "$BIN/lint-imports"
echo "== private names"; "$PY" scripts/check_private_imports.py
echo "== ruff check"; "$BIN/ruff" check .
echo "== ruff format --check"; "$BIN/ruff" format --check .
echo "== mypy distill"; "$BIN/mypy"
