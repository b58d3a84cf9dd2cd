#!/usr/bin/env bash
# The tests: set up what is missing, run every cargo test, check that the notebook runner
# catches every kind of failure (the fixture notebooks of tests/notebooks), then execute every
# notebook at the smoke profile (structural checks; an error, a panic or a failed check fails
# the run). The fixtures and the notebooks share the checkout's evcxr build cache (.evcxr).
# Exits non-zero on any failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
cargo test --release
# The library's tests once more without widthlab's kernels (the `kernels` feature off): every
# product and every monitor measurement then runs on libtorch, the path users without the
# kernels, and any product the kernels decline, take.
cargo test --release --no-default-features --lib
"$ROOT/.venv/bin/python" tests/notebooks/check.py --out "$ROOT/out/fixtures"
bash notebooks/run.sh --profile smoke --out "$ROOT/out/smoke"
echo "widthlab tests: all passed in $(( $(date +%s) - START )) s"
