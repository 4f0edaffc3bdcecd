#!/usr/bin/env bash
# Installs everything from nothing and runs the embedded-default pipeline end to end:
# seeds -> new questions -> teacher answers -> filters -> a dataset TRL can train on, audited for release, with its cards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
BIN=$(dirname "$(bash scripts/python.sh)")
"$BIN/distill" run examples/quickstart/config.yaml
"$BIN/distill" inspect examples/quickstart/out
# May this dataset be released for commercial use? (exit 1 and the reasons if not)
"$BIN/distill" audit examples/quickstart/out
echo "dataset: examples/quickstart/out/export/sft  (records with provenance: examples/quickstart/out/stages/)"
