#!/usr/bin/env bash
# Prints the Python that scripts/install.sh installed into.
cd "$(dirname "$0")/.."
if [ -n "${VIRTUAL_ENV:-}" ]; then echo "$VIRTUAL_ENV/bin/python"; else echo "$PWD/.venv/bin/python"; fi
