"""Run widthlab's notebooks headlessly with the Rust (evcxr) kernel.

    python notebooks/run.py [--profile smoke|quick|paper] [--device cpu|cuda|auto] [--out DIR] [NAME ...]

Executes every notebooks/NN_*.ipynb (or the named ones) at the given profile, writes the
executed notebooks and an HTML rendering to OUT/notebooks/, and fails (exit 1) if any cell
raised an error, panicked, or printed a failed claims check. evcxr itself does not fail a run
on a runtime panic, so the outputs are scanned. Partial outputs of a failed notebook are kept.
All notebooks share one evcxr build directory (OUT/.evcxr), so dependencies such as tch are
compiled once, not once per notebook.
"""
import argparse
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
BAD_TEXT = ("panicked at", FAILED_MARKER)


DEVIATION_ERROR = "claims do not hold"


def problems(nb, allow_deviations=False):
    """Every error output, panic and failed check in an executed notebook. With
    allow_deviations, claims that do not hold are results (reported in the claims JSON and
    the report), not failures; errors and panics still are."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error":
                msg = f"{out.get('ename', 'error')}: {out.get('evalue', '')}"
                if not (allow_deviations and DEVIATION_ERROR in msg):
                    found.append(f"cell {i}: {msg}"[:500])
            text = out.get("text", "")
            if kind in ("display_data", "execute_result"):
                text = out.get("data", {}).get("text/plain", "")
            if isinstance(text, list):
                text = "".join(text)
            for line in str(text).splitlines():
                if allow_deviations and (FAILED_MARKER in line or DEVIATION_ERROR in line):
                    continue
                if any(b in line for b in BAD_TEXT):
                    found.append(f"cell {i}: {line.strip()}"[:500])
    return found


def run_one(path, out_dir, env, allow_deviations):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=3600,
        kernel_name="rust",
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
    found = problems(nb, allow_deviations) + ([crash] if crash else [])
    return seconds, found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default=os.environ.get("WIDTHLAB_PROFILE", "quick"), choices=["smoke", "quick", "paper"])
    ap.add_argument("--device", default=os.environ.get("WIDTHLAB_DEVICE", "cpu"), choices=["cpu", "cuda", "auto"],
                    help="device the notebooks train on (WIDTHLAB_DEVICE)")
    ap.add_argument("--out", default=str(ROOT / "out"))
    ap.add_argument("--allow-deviations", action="store_true",
                    help="claims that do not hold are reported, not failures (the main job); errors and panics still fail")
    ap.add_argument("names", nargs="*", help="notebooks to run (default: all), e.g. 01_background")
    args = ap.parse_args()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "WIDTHLAB_PROFILE": args.profile,
        "WIDTHLAB_DEVICE": args.device,
        "WIDTHLAB_OUT": str(out_dir),
        "EVCXR_TMPDIR": str(out_dir / ".evcxr"),
    }
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.names:
        wanted = {n.removesuffix(".ipynb") for n in args.names}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            sys.exit(f"unknown notebooks: {', '.join(sorted(unknown))}; have: {', '.join(p.stem for p in paths)}")
        paths = [p for p in paths if p.stem in wanted]
    total = time.time()
    results = {}
    for p in paths:
        print(f"[notebooks] {p.stem} ({args.profile}) ...", flush=True)
        seconds, found = run_one(p, out_dir, env, args.allow_deviations)
        results[p.stem] = {"seconds": round(seconds, 1), "ok": not found, "problems": found}
        status = "ok" if not found else "FAILED"
        print(f"[notebooks] {p.stem}: {status} in {seconds:.0f} s", flush=True)
        for f in found:
            print(f"    {f}", flush=True)
    elapsed = time.time() - total
    (out_dir / "notebook-runs.json").write_text(json.dumps({"profile": args.profile, "seconds": round(elapsed, 1), "notebooks": results}, indent=1))
    subprocess.run([sys.executable, str(ROOT / "notebooks" / "report.py"), "--out", str(out_dir)], check=False)
    failed = [n for n, r in results.items() if not r["ok"]]
    print(f"notebooks: {len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
