#!/usr/bin/env bash
# Regenerates the figures the README shows: runs the main job (notebooks at the quick
# profile), then copies the figures below from out/figures/ into docs/figures/.
#   bash docs/regenerate.sh            # full main job, then copy
#   bash docs/regenerate.sh --copy     # only copy from an existing out/figures/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIGURES=(04_e1_effective 04_e2_effective 04_e3_effective 01_rcc_decomposition)
if [ "${1:-}" != "--copy" ]; then
  bash "$ROOT/environment/main.sh" || echo "[docs] the main job reported failures; copying the figures it produced"
fi
for f in "${FIGURES[@]}"; do
  src="$ROOT/out/figures/$f.svg"
  [ -f "$src" ] || { echo "[docs] missing $src: run the main job first" >&2; exit 1; }
  cp "$src" "$ROOT/docs/figures/$f.svg"
done
echo "[docs] copied ${#FIGURES[@]} figures to docs/figures/"
