#!/usr/bin/env bash
# The main job: set up what is missing, then run widthlab's reproduction.
# For now: one training run of the paper's 8-layer MLP (configs/quick.toml) and the
# Fig. 4 refined coordinate check at the quick profile, each with a readable summary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash environment/setup.sh --quiet
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin widthlab
./target/release/widthlab train --config configs/quick.toml --out results/main/train.json
./target/release/widthlab coord-check --preset e1 --profile quick --out results/main/coord-check-e1
if [ -f notebooks/run.sh ]; then
  bash notebooks/run.sh --profile "${WIDTHLAB_PROFILE:-quick}"
fi
