#!/usr/bin/env bash
# The main job: set up what is missing, then run widthlab's reproduction and write the report.
#   1. one epoch of the paper's 8-layer MLP in SP (configs/quick.toml), with a summary;
#   2. the Fig. 4 refined coordinate check (CLI), with verdicts against the theory;
#   3. every notebook at the quick profile (WIDTHLAB_PROFILE overrides), then out/report.html
#      with all claims (paper value, measured value, holds/deviates), figures and run times.
#      A claim that deviates is a result shown in the report; an error or panic fails the job.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
cargo build --release --quiet --bin widthlab
./target/release/widthlab train --config configs/quick.toml --out results/main/train.json
./target/release/widthlab coord-check --preset e1 --profile quick --out results/main/coord-check-e1
status=0
bash notebooks/run.sh --profile "${WIDTHLAB_PROFILE:-quick}" || status=$?
echo "main job finished in $(( $(date +%s) - START )) s; report: $ROOT/out/report.html"
exit $status
