"""Run widthlab's notebooks headlessly with the Rust (evcxr) kernel.

    python notebooks/run.py [--profile smoke|quick|paper] [--device cpu|cuda|auto] [--out DIR]
                            [--dir DIR] [NAME ...]

Executes every notebooks/NN_*.ipynb (or the named ones; with --dir, every *.ipynb of DIR) at
the given profile, writes the executed notebooks and an HTML rendering to OUT/notebooks/ and
OUT/report.html (notebooks/report.py), and fails (exit 1) if

- a cell failed: evcxr (0.22) reports neither a `?` error nor a panic as a failed execution,
  so every notebook installs widthlab's guard in its first code cell
  (`widthlab::notebook::guard()?;`), which prints `WIDTHLAB CELL FAILED:` to the cell's
  stdout, a channel evcxr flushes before the cell completes; a notebook whose first code cell
  does not show the guard's line fails;
- a cell printed a failed claims check (`WIDTHLAB CHECK FAILED:`), or an error output (a
  compile error, a crash of evcxr's child process), or the kernel died or timed out;
- no notebook ran, or report.py failed.

Partial outputs of a failed notebook are kept. All runs in one checkout share one evcxr build
directory (<repo>/.evcxr, or $EVCXR_TMPDIR), so tch and widthlab are compiled once, whatever
--out is; a lock file keeps two runners from using it at once.
"""
import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
FAILED_MARKER = "WIDTHLAB CHECK FAILED:"
# printed by widthlab::notebook (src/notebook.rs)
CELL_FAILED = "WIDTHLAB CELL FAILED:"
GUARD_ACTIVE = "WIDTHLAB GUARD ACTIVE"
QUESTION_MARK = "through `?`"
KERNEL = "widthlab-rust"
BAD_TEXT = ("panicked at", FAILED_MARKER, CELL_FAILED)


def output_text(out):
    """All text of one output: a stream's text, every text-like value of a display."""
    if out.get("output_type") in ("display_data", "execute_result"):
        parts = [v if isinstance(v, str) else "".join(v) for k, v in out.get("data", {}).items() if isinstance(v, (str, list))]
        return "\n".join(parts)
    text = out.get("text", "")
    return "".join(text) if isinstance(text, list) else str(text)


def problems(nb):
    """Every failed cell, error output, panic and failed check in an executed notebook, and a
    missing guard. A claim that deviates is a result (reported in the claims JSON and the
    report), never a failure: only errors, panics and structural failures at `smoke` are."""
    found = []
    code = [(i, c) for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"]
    if not code or not any(GUARD_ACTIVE in output_text(o) for o in code[0][1].get("outputs", [])):
        found.append("the first code cell does not show the failure guard: add `widthlab::notebook::guard()?;` after its `:dep` lines")
    for i, cell in code:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename', 'error')}: {out.get('evalue', '')}"[:500])
            for line in output_text(out).splitlines():
                if any(b in line for b in BAD_TEXT):
                    found.append(f"cell {i}: {line.strip()}"[:500])
    return found


def kernel_spec(cache):
    """A Rust kernel spec of this checkout, in <cache>/jupyter (first on JUPYTER_PATH for the
    runner's kernels): evcxr with this checkout's libtorch, whatever checkout last registered
    the user's global `rust` kernel (setup.sh registers that one for interactive use). Returns
    the JUPYTER_PATH entry."""
    import shutil
    evcxr = shutil.which("evcxr_jupyter") or str(Path.home() / ".cargo" / "bin" / "evcxr_jupyter")
    libtorch = str(ROOT / ".libtorch")
    openblas = f"/usr/lib/{os.uname().machine}-linux-gnu/openblas-openmp"
    spec = {
        "argv": [evcxr, "--control_file", "{connection_file}"],
        "display_name": "Rust (widthlab runner)",
        "language": "rust",
        "interrupt_mode": "message",
        "env": {
            "LIBTORCH": libtorch,
            "LIBTORCH_CXX11_ABI": "1",
            "LD_LIBRARY_PATH": f"{libtorch}/lib:{openblas}",
            # as setup.sh's kernel: no debug assertions or overflow checks in evcxr's builds
            "CARGO_PROFILE_DEV_DEBUG_ASSERTIONS": "false",
            "CARGO_PROFILE_DEV_OVERFLOW_CHECKS": "false",
        },
    }
    d = cache / "jupyter" / "kernels" / KERNEL
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(json.dumps(spec, indent=1))
    return str(cache / "jupyter")


def run_one(path, out_dir, env):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=3600,
        kernel_name=KERNEL,
        allow_errors=True,  # keep going so the partial outputs are saved; failures are scanned below
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.time()
    os.environ.update(env)
    try:
        client.execute()
        crash = None
    except Exception as e:  # kernel death, timeout
        crash = f"execution aborted: {type(e).__name__}: {e}"[:500]
    seconds = time.time() - start
    nb_dir = out_dir / "notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, nb_dir / path.name)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (nb_dir / (path.stem + ".html")).write_text(html)
    found = problems(nb) + ([crash] if crash else [])
    return seconds, found


def notebooks(folder, names):
    """The notebooks to run: NN_*.ipynb of notebooks/ (every *.ipynb of another folder), or
    the named ones."""
    pattern = "[0-9][0-9]_*.ipynb" if folder == ROOT / "notebooks" else "*.ipynb"
    paths = sorted(folder.glob(pattern))
    if names:
        wanted = {n.removesuffix(".ipynb") for n in names}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            sys.exit(f"unknown notebooks: {', '.join(sorted(unknown))}; have: {', '.join(p.stem for p in paths)}")
        paths = [p for p in paths if p.stem in wanted]
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default=os.environ.get("WIDTHLAB_PROFILE", "quick"), choices=["smoke", "quick", "paper"])
    ap.add_argument("--device", default=os.environ.get("WIDTHLAB_DEVICE", "cpu"), choices=["cpu", "cuda", "auto"],
                    help="device the notebooks train on (WIDTHLAB_DEVICE)")
    ap.add_argument("--out", default=str(ROOT / "out"))
    ap.add_argument("--dir", default=str(ROOT / "notebooks"), help="folder of the notebooks (default notebooks/, whose NN_*.ipynb run; "
                    "elsewhere every *.ipynb, e.g. the failure fixtures in tests/notebooks)")
    ap.add_argument("names", nargs="*", help="notebooks to run (default: all), e.g. 01_background")
    args = ap.parse_args()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("EVCXR_TMPDIR") or ROOT / ".evcxr").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        "WIDTHLAB_PROFILE": args.profile,
        "WIDTHLAB_DEVICE": args.device,
        "WIDTHLAB_OUT": str(out_dir),
        "EVCXR_TMPDIR": str(cache),
        "JUPYTER_PATH": os.pathsep.join(filter(None, [kernel_spec(cache), os.environ.get("JUPYTER_PATH")])),
    }
    paths = notebooks(Path(args.dir).resolve(), args.names)
    if not paths:
        print(f"notebooks: FAILED: no notebooks to run in {args.dir}", flush=True)
        sys.exit(1)
    # evcxr builds in EVCXR_TMPDIR itself: one kernel at a time per cache
    lock = open(cache / ".runner.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"[notebooks] waiting for another notebook run that uses {cache} ...", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    total = time.time()
    results = {}
    for p in paths:
        print(f"[notebooks] {p.stem} ({args.profile}) ...", flush=True)
        seconds, found = run_one(p, out_dir, env)
        # (the machine's load when the notebook ended: times measured on a shared machine are
        # read against it; notebooks/times.py shows it next to each time)
        load = [round(v, 2) for v in os.getloadavg()]
        results[p.stem] = {"seconds": round(seconds, 1), "ok": not found, "problems": found, "load_end": load}
        status = "ok" if not found else "FAILED"
        print(f"[notebooks] {p.stem}: {status} in {seconds:.0f} s", flush=True)
        for f in found:
            print(f"    {f}", flush=True)
    elapsed = time.time() - total
    (out_dir / "notebook-runs.json").write_text(json.dumps({"profile": args.profile, "seconds": round(elapsed, 1), "notebooks": results}, indent=1))
    report = subprocess.run([sys.executable, str(ROOT / "notebooks" / "report.py"), "--out", str(out_dir)], check=False)
    failed = [n for n, r in results.items() if not r["ok"]]
    print(f"notebooks: {len(results) - len(failed)} passed, {len(failed)} failed")
    if report.returncode != 0:
        print(f"notebooks: FAILED: notebooks/report.py exited with {report.returncode}", flush=True)
    sys.exit(1 if failed or report.returncode != 0 else 0)


if __name__ == "__main__":
    main()
