#!/usr/bin/env bash
# Installs everything from nothing and runs the quickstart end to end on a CPU: the teacher writes
# and ranks data, filters clean it, a student is trained (SFT then DPO) and measured against the
# base model and the prompted teacher, the dataset and the student are audited and carded, and
# the run's report is written (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
BIN=$(dirname "$(bash scripts/python.sh)")
"$BIN/distill" run examples/quickstart/config.yaml
"$BIN/distill" inspect examples/quickstart/out
# May the dataset and the student be released for commercial use? (exit 1 and the reasons if not)
"$BIN/distill" audit examples/quickstart/out
echo "dataset: examples/quickstart/out/export/sft  student: examples/quickstart/out/models/student/dpo"
echo "report:  examples/quickstart/out/report.html"
