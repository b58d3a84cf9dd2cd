# Source this file to use widthlab's libtorch and tools from your own shell or project:
#   source environment/env.sh
# It sets LIBTORCH (so a crate depending on tch/widthlab builds against the venv's torch),
# LD_LIBRARY_PATH (so binaries find libtorch and OpenBLAS's OpenMP build at run time) and PATH (evcxr, venv tools).
_WL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export LIBTORCH="$_WL_ROOT/.libtorch"
export LIBTORCH_CXX11_ABI=1
# libtorch, then OpenBLAS's OpenMP build ahead of the system's pthreads build (crates/widthlab-kernels/src/threads.rs)
export LD_LIBRARY_PATH="$_WL_ROOT/.libtorch/lib:/usr/lib/$(uname -m)-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$_WL_ROOT/.venv/bin:$HOME/.cargo/bin:$PATH"
unset _WL_ROOT
