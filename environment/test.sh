#!/usr/bin/env bash
# The tests: set up what is missing, then run every cargo test, then (when present) the
# notebook suite at the smoke profile. Exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
bash environment/setup.sh --quiet
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release
if [ -f notebooks/run.sh ]; then
  bash notebooks/run.sh --profile smoke
fi
echo "widthlab tests: all passed in $(( $(date +%s) - START )) s"
