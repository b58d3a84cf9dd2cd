"""NumPy reference for benches/uv_scan.rs: the uv recursion of appendix C.4 over a grid of
(width, seed, learning rate), as the authors run it (uv_dynamics_closedform: a Python loop of
scalar updates per run, every step), and vectorised over the whole grid with NumPy.

Usage: python uv_scan.py JOBS.json OUT.json
JOBS.json: {"etas": [...], "runs": [{"f0", "lambda0", "k_a", "k_p", "k_q"}, ...], "y": 1.0,
"steps": [T(eta) for eta in etas], "vectorised_only": false}
Writes {"scalar_seconds", "vector_seconds", "f_scalar", "f_vector"} (final f per run x eta,
NaN where diverged). No early exit except on non-finite states, exactly as the Rust side.
"""
import json
import math
import sys
import time

import numpy as np


def scalar_run(f, lam, eta, steps, k_a, k_p, k_q, y):
    # one run, one Python step at a time on np.float64 scalars (the authors' style)
    f, lam = np.float64(f), np.float64(lam)
    for _ in range(steps):
        chi = f - y
        g = 1.0 + eta * eta * k_p * chi * chi
        f, lam = g * f - eta * k_a * chi * lam, g * lam - 4.0 * eta * k_q * chi * f
        if not (math.isfinite(f) and math.isfinite(lam)):
            return float("nan")
    return float(f)


def vector_grid(runs, etas, steps, y):
    # every (run, eta) at once; runs with fewer steps are frozen by a mask
    r, e = len(runs), len(etas)
    f = np.repeat(np.array([x["f0"] for x in runs]), e)
    lam = np.repeat(np.array([x["lambda0"] for x in runs]), e)
    k_a = np.repeat(np.array([x["k_a"] for x in runs]), e)
    k_p = np.repeat(np.array([x["k_p"] for x in runs]), e)
    k_q = np.repeat(np.array([x["k_q"] for x in runs]), e)
    eta = np.tile(np.array(etas), r)
    t_end = np.tile(np.array(steps), r)
    with np.errstate(all="ignore"):
        for t in range(int(t_end.max())):
            live = (t < t_end) & np.isfinite(f) & np.isfinite(lam)
            chi = f - y
            g = 1.0 + eta * eta * k_p * chi * chi
            f_new = g * f - eta * k_a * chi * lam
            lam_new = g * lam - 4.0 * eta * k_q * chi * f
            f = np.where(live, f_new, f)
            lam = np.where(live, lam_new, lam)
    f[~(np.isfinite(f) & np.isfinite(lam))] = np.nan
    return f


def main():
    jobs = json.load(open(sys.argv[1]))
    runs, etas, steps, y = jobs["runs"], jobs["etas"], jobs["steps"], jobs["y"]
    out = {}
    if not jobs.get("vectorised_only"):
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            out["f_scalar"] = [scalar_run(r["f0"], r["lambda0"], eta, T, r["k_a"], r["k_p"], r["k_q"], y) for r in runs for eta, T in zip(etas, steps)]
        out["scalar_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["f_vector"] = vector_grid(runs, etas, steps, y).tolist()
    out["vector_seconds"] = time.perf_counter() - t0
    for k in ("f_scalar", "f_vector"):
        if k in out:
            out[k] = [None if not math.isfinite(v) else v for v in out[k]]
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
