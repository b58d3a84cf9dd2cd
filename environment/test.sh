#!/usr/bin/env bash
# The tests: set up what is missing, run every cargo test, then execute every notebook at the
# smoke profile (structural checks; a panic or failed check fails the run). Exits non-zero on
# any failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
cargo test --release
bash notebooks/run.sh --profile smoke --out "$ROOT/out/smoke"
echo "widthlab tests: all passed in $(( $(date +%s) - START )) s"
