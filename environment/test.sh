#!/usr/bin/env bash
# The tests: set up what is missing, run every cargo test, then execute every notebook at the
# smoke profile (structural checks; a panic or failed check fails the run). Exits non-zero on
# any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
bash environment/setup.sh --quiet
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release
bash notebooks/run.sh --profile smoke --out "$ROOT/out/smoke"
echo "widthlab tests: all passed in $(( $(date +%s) - START )) s"
