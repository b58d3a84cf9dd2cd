"""Build OUT/report.html and print the console summary: every claim the notebooks checked
(`widthlab::claims`), counted by kind (paper / extension) and verdict (holds / deviates /
inconclusive; structural at smoke), each with its measured value, 95% CI, expectation and
alternatives, and for every claim that does not hold the reason from its interval and the
notebook's caveat; then the figures and the run times.

    python notebooks/report.py [--out DIR]

Exits non-zero when a claims file cannot be read (a broken report must not pass).
"""
import argparse
import html
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("paper", "extension")
VERDICTS = ("holds", "deviates", "inconclusive", "structural")


def fmt(v):
    if v is None:
        return "n/a"
    if v == 0 or 1e-2 <= abs(v) < 1e4:
        return f"{v:+.2f}"
    return f"{v:+.2e}"


def measured(c):
    m = c.get("measured") or {}
    v, lo, hi = m.get("value"), m.get("low"), m.get("high")
    if v is None:
        return "not measured"
    if lo is None or hi is None:
        return f"{fmt(v)} (no interval)"
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


def expected(c):
    e = c.get("expectation") or {}
    t = e.get("type")
    if t == "near":
        alts = ", ".join(fmt(a) for a in e.get("alternatives", []))
        return f"{fmt(e['value'])} &plusmn; {e['tolerance']:.2f}" + (f" (not {alts})" if alts else "")
    if t == "above":
        return f"&gt; {fmt(e['bound'])}"
    if t == "below":
        return f"&lt; {fmt(e['bound'])}"
    return "?"


def load(out):
    notebooks = []
    for p in sorted((out / "claims").glob("*.json")):
        try:
            notebooks.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            sys.exit(f"[report] cannot read {p}: {e}")
    return notebooks


def counts_table(counts):
    head = "".join(f"<th>{v}</th>" for v in VERDICTS) + "<th>all</th>"
    rows = []
    for k in KINDS + ("all",):
        cells = [sum(n for (kk, v), n in counts.items() if (k == "all" or kk == k) and v == vv) for vv in VERDICTS]
        rows.append(f"<tr><th>{k}</th>" + "".join(f"<td>{n}</td>" for n in cells) + f"<td>{sum(cells)}</td></tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def summary_line(counts):
    parts = []
    for k in KINDS:
        by = [f"{counts.get((k, v), 0)} {v}" for v in VERDICTS if counts.get((k, v), 0)]
        total = sum(counts.get((k, v), 0) for v in VERDICTS)
        parts.append(f"{total} {k} ({', '.join(by) if by else 'none'})")
    return "; ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out"))
    out = Path(ap.parse_args().out)
    notebooks = load(out)
    runs = json.loads((out / "notebook-runs.json").read_text()) if (out / "notebook-runs.json").exists() else {}
    counts = Counter()
    rows, open_rows = [], []
    for nb in notebooks:
        for c in nb["claims"]:
            verdict = c.get("verdict") or "inconclusive"
            counts[(c["kind"], verdict)] += 1
            cells = [nb["notebook"], c["id"], c["kind"], html.escape(c["statement"]), html.escape(c.get("source", "")),
                     html.escape(c.get("paper", "")), measured(c), expected(c), verdict]
            rows.append(f"<tr class='{verdict}'>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
            if verdict in ("deviates", "inconclusive"):
                why = html.escape(c.get("reason", ""))
                cav = html.escape(c.get("caveat", ""))
                tol = html.escape(c.get("tolerance_reason", ""))
                open_rows.append(
                    f"<tr class='{verdict}'><td>{nb['notebook']}</td><td>{c['id']}</td><td>{verdict}</td>"
                    f"<td>{why}</td><td>{cav}</td><td>{tol}</td><td>{html.escape(c['measured'].get('method', '') if c.get('measured') else '')}</td></tr>")
    figures = [f"<h3>{html.escape(svg.stem)}</h3><div class='fig'>{svg.read_text()}</div>" for svg in sorted((out / "figures").glob("*.svg"))]
    times = "".join(f"<li>{html.escape(n)}: {r['seconds']} s, {'ok' if r['ok'] else 'FAILED'}</li>" for n, r in runs.get("notebooks", {}).items())
    profile = runs.get("profile", "?")
    smoke_note = "<p><b>smoke profile</b>: measurements too small to judge; claims are structural (the measurement exists).</p>" if profile == "smoke" else ""
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>widthlab reproduction report</title>
<style>body{{font-family:sans-serif;max-width:1500px;margin:2em auto}} table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}} tr.deviates{{background:#fde0dc}} tr.holds{{background:#e6f4ea}}
tr.inconclusive{{background:#fff4d6}} tr.structural{{background:#eef}} .fig svg{{max-width:100%;height:auto}}</style></head><body>
<h1>widthlab reproduction report</h1>
<p>Profile: {html.escape(str(profile))}. Total notebook time: {runs.get('seconds', '?')} s.</p>{smoke_note}
<h2>Claims by kind and verdict</h2>{counts_table(counts)}
<p>A claim <i>holds</i> when its 95% confidence interval lies within the tolerance of the expected value and excludes every
alternative (ordinal claims: the interval of the difference lies on the claimed side); it <i>deviates</i> when the interval
excludes the expected value (beyond tolerance); otherwise it is <i>inconclusive</i>. Kinds: <i>paper</i> claims are stated in the
paper (section or figure given); <i>extension</i> claims go beyond it.</p>
<h2>Claims that deviate or are inconclusive, and why</h2>
<table><tr><th>notebook</th><th>id</th><th>verdict</th><th>from the interval</th><th>what limits the measurement</th><th>tolerance</th><th>how the CI was obtained</th></tr>{''.join(open_rows)}</table>
<h2>Every claim</h2><table><tr><th>notebook</th><th>id</th><th>kind</th><th>claim</th><th>source</th><th>paper says</th>
<th>measured [95% CI]</th><th>expected</th><th>verdict</th></tr>{''.join(rows)}</table>
<h2>Run times</h2><ul>{times}</ul>
<h2>Figures</h2>{''.join(figures)}</body></html>"""
    (out / "report.html").write_text(doc)
    print(f"[report] {out / 'report.html'}: {sum(counts.values())} claims: {summary_line(counts)}; {len(figures)} figures")


if __name__ == "__main__":
    main()
