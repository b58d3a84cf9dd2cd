# Sourced by main.sh and test.sh: enter the repository, install what is missing, put cargo
# on PATH and start the clock.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
bash environment/setup.sh --quiet
export PATH="$HOME/.cargo/bin:$PATH"
