#!/usr/bin/env bash
# Installs everything from nothing and runs the embedded-default pipeline end to end:
# seeds -> new questions -> teacher answers -> filters -> a dataset TRL can train on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
BIN=$(dirname "$(bash scripts/python.sh)")
"$BIN/distill" run examples/quickstart/config.yaml
"$BIN/distill" inspect examples/quickstart/out
echo "dataset: examples/quickstart/out/export/sft  (records with provenance: examples/quickstart/out/stages/)"
