"""The headless notebook runner must catch every kind of failure: run it on the fixture
notebooks of this folder and check what it reports (issue 18).

    python tests/notebooks/check.py [--out DIR]

- `clean` must pass; `question_mark` (a `?` error), `panic_middle`, `panic_last`,
  `claims_failure` (a structural check at smoke), `kernel_death` (the kernel killed),
  `child_crash` (evcxr's child process aborts) and `no_guard` (no failure guard installed)
  must fail, each for its own reason: a guarded cell failure must be reported through the
  guard's stdout line, not through stderr, which evcxr may not flush in time;
- a run of zero notebooks must fail;
- a run whose report.py fails must fail, even when every notebook passed.

The fixtures are not matched by the runner's `notebooks/[0-9][0-9]_*.ipynb` glob. They share
the checkout's evcxr build cache with the numbered notebooks, so widthlab is compiled in the
kernel at most once. Exit code 0 iff every expectation holds.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUN = ROOT / "notebooks" / "run.py"
CELL_FAILED = "WIDTHLAB CELL FAILED:"

# fixture -> None (must pass) or the substrings one reported problem must contain
EXPECT = {
    "clean": None,
    "question_mark": [CELL_FAILED, "through `?`"],
    "panic_middle": [CELL_FAILED, "the cell panicked", "index out of bounds"],
    "panic_last": [CELL_FAILED, "the cell panicked", "boom in the last cell"],
    "claims_failure": ["WIDTHLAB CHECK FAILED:", "a quantity that was not measured"],
    "kernel_death": ["execution aborted"],
    "child_crash": ["cell 2:"],
    "no_guard": ["failure guard"],
}


def runner(out, *args):
    cmd = [sys.executable, str(RUN), "--profile", "smoke", "--out", str(out), *map(str, args)]
    print("[fixtures] " + " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "fixtures"))
    out = Path(ap.parse_args().out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    errors = []

    fixtures = sorted(p.stem for p in HERE.glob("*.ipynb"))
    if sorted(EXPECT) != fixtures:
        errors.append(f"fixtures {fixtures} and expectations {sorted(EXPECT)} differ")
    r = runner(out / "all", "--dir", HERE)
    print(r.stdout, end="", flush=True)
    if r.returncode != 1:
        errors.append(f"the run of every fixture exited with {r.returncode}, not 1")
    runs = json.loads((out / "all" / "notebook-runs.json").read_text())["notebooks"]
    for name, want in EXPECT.items():
        got = runs.get(name)
        if got is None:
            errors.append(f"{name}: not run")
        elif want is None and not got["ok"]:
            errors.append(f"{name}: must pass, failed with {got['problems']}")
        elif want is not None and got["ok"]:
            errors.append(f"{name}: must fail, passed")
        elif want is not None and not any(all(w in p for w in want) for p in got["problems"]):
            errors.append(f"{name}: no problem mentions {want}: {got['problems']}")

    with tempfile.TemporaryDirectory() as empty:
        r = runner(out / "none", "--dir", empty)
        if r.returncode == 0 or "no notebooks" not in r.stdout:
            errors.append(f"a run of zero notebooks exited with {r.returncode}: {r.stdout[-300:]}")

    broken = out / "report-fails"
    (broken / "claims").mkdir(parents=True)
    (broken / "claims" / "broken.json").write_text("{ not json")
    r = runner(broken, "--dir", HERE, "clean")
    if r.returncode == 0 or "report.py exited" not in r.stdout:
        errors.append(f"a run whose report.py fails exited with {r.returncode}: {r.stdout[-300:]}{r.stderr[-300:]}")

    for e in errors:
        print(f"[fixtures] FAILED: {e}", flush=True)
    print(f"[fixtures] {'all expectations hold' if not errors else f'{len(errors)} expectations do not hold'}", flush=True)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
