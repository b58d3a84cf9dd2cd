#!/usr/bin/env bash
# Run the notebooks headlessly: bash notebooks/run.sh [--profile smoke|quick|paper] [NAME ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
exec "$ROOT/.venv/bin/python" "$ROOT/notebooks/run.py" "$@"
