"""Write the per-notebook time table of a headless run into notebooks/README.md.

    python notebooks/times.py [OUT_DIR]    (default out/, as written by notebooks/run.py)

Reads <OUT_DIR>/notebook-runs.json (profile, seconds per notebook, total) and
<OUT_DIR>/claims/*.json (claim counts by verdict), and replaces the table between the
`<!-- times:begin -->` and `<!-- times:end -->` markers of notebooks/README.md with them, the
date, the CPU and each notebook's 5-minute load average when it ended (recorded by run.py;
"-" for runs recorded before it was). The README holds the numbers of the
last run someone chose to record; nothing else in the repository repeats them.
"""
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "notebooks" / "README.md"
BEGIN, END = "<!-- times:begin -->", "<!-- times:end -->"


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "out")
    runs = json.loads((out / "notebook-runs.json").read_text())
    rows = ["| notebook | seconds | load at its end (5-min avg) | claims: holds / deviates / inconclusive / structural |",
            "|---|---:|---:|---|"]
    for name, r in runs["notebooks"].items():
        verdicts = Counter()
        path = out / "claims" / f"{name}.json"
        if path.exists():
            for c in json.loads(path.read_text()).get("claims", []):
                verdicts[c.get("verdict")] += 1
        counts = " / ".join(str(verdicts[v]) for v in ("holds", "deviates", "inconclusive", "structural"))
        load = f"{r['load_end'][1]:.1f}" if r.get("load_end") else "-"
        rows.append(f"| `{name}` | {r['seconds']:.0f}{'' if r['ok'] else ' (failed)'} | {load} | {counts} |")
    rows.append(f"| all | {runs['seconds']:.0f} | | |")
    head = (f"Profile `{runs['profile']}`, {time.strftime('%Y-%m-%d')}, {cpu()}, {os.cpu_count()} cores; "
            "written by `python notebooks/times.py` from `out/notebook-runs.json`. A load above the "
            "core count means the notebook shared the machine and its time is an overestimate.")
    text = README.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{README} has no {BEGIN} ... {END} section")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    README.write_text(before + BEGIN + "\n" + head + "\n\n" + "\n".join(rows) + "\n" + END + after)
    print(f"time table of {len(runs['notebooks'])} notebooks written to {README}")


if __name__ == "__main__":
    main()
