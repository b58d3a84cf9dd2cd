"""Build OUT/report.html: every claim checked by the notebooks (paper value, measured value,
holds or deviates), the figures they saved, and the run times.

    python notebooks/report.py [--out DIR]
"""
import argparse
import html
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out"))
    out = Path(ap.parse_args().out)
    claims = [json.loads(p.read_text()) for p in sorted((out / "claims").glob("*.json"))]
    runs = json.loads((out / "notebook-runs.json").read_text()) if (out / "notebook-runs.json").exists() else {}
    rows = []
    n_hold = n_all = 0
    for c in claims:
        for cl in c["claims"]:
            n_all += 1
            n_hold += cl["holds"]
            mark = "holds" if cl["holds"] else "deviates"
            rows.append(
                f"<tr class='{mark}'><td>{html.escape(c['notebook'])}</td><td>{html.escape(cl['claim'])}</td>"
                f"<td>{html.escape(cl['paper'])}</td><td>{html.escape(cl['measured'])}</td><td>{mark}</td></tr>"
            )
    figures = []
    for svg in sorted((out / "figures").glob("*.svg")):
        figures.append(f"<h3>{html.escape(svg.stem)}</h3><div class='fig'>{svg.read_text()}</div>")
    times = "".join(
        f"<li>{html.escape(n)}: {r['seconds']} s, {'ok' if r['ok'] else 'FAILED'}</li>" for n, r in runs.get("notebooks", {}).items()
    )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>widthlab reproduction report</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} tr.deviates{{background:#fde0dc}} tr.holds{{background:#e6f4ea}}
.fig svg{{max-width:100%;height:auto}}</style></head><body>
<h1>widthlab reproduction report</h1>
<p>Profile: {html.escape(str(runs.get('profile', '?')))}. Total notebook time: {runs.get('seconds', '?')} s.
Claims holding: {n_hold} of {n_all}.</p><ul>{times}</ul>
<h2>Claims</h2><table><tr><th>notebook</th><th>claim</th><th>paper</th><th>measured</th><th>verdict</th></tr>{''.join(rows)}</table>
<h2>Figures</h2>{''.join(figures)}</body></html>"""
    (out / "report.html").write_text(doc)
    print(f"[report] {out / 'report.html'}: {n_hold} of {n_all} claims hold, {len(figures)} figures")


if __name__ == "__main__":
    main()
