"""Graph-SVM for general (unit-norm, non-orthonormal) embeddings at scale (issue 11 item 1).

Synthetic corpora as in the papers' notebooks: T = 8, K = d, random unit-norm embeddings,
seed 0.  Per size, in fresh subprocesses (time limit --timeout, address-space limit
--mem-gib): the active-set dual solver (``solve_dual``) and, for n <= --cvxpy-max-n, the
cvxpy d×d formulation (``solve_general``, Clarabel) in the same run.  Columns:

* constraints: transitively reduced inequality rows + SCC equality rows;
* time: the SVM stage (constraint rows, start, solve, diagnostics), wall clock;
* peak: tracemalloc peak during the solve (numpy's buffers included; solve_dual's and cvxpy's times are
  taken under it, the nuclear ALM's without) / ru_maxrss of the
  whole subprocess (interpreter, imports and the corpus included);
* load: the 1-minute load average when the cell started (the machine may be shared);
* KKT: the solver's stationarity residual, the complementarity max |lambda_j (margin_j - 1)|,
  the most negative multiplier and the max constraint violation (checked on all TPG rows);
* cvxpy (Clarabel, gap and feasibility tolerances 1e-12: at the library default 1e-10 its W
  is only accurate to ~3e-6 relative, since the gap is relative to ||W||^2): its time and
  the relative difference ||W - W_cvxpy||_F / ||W_cvxpy||_F, with
  ||W|| - ||W_cvxpy|| (the objective: a feasible W closer to optimal has the smaller norm).

``--nuclear``: the nuclear-norm Graph-SVM instead (``solve_graph_svm_nuclear``: the ALM
default against its cvxpy SDP reference, ``method="cvxpy"``), with the ALM's status, rank,
KKT residual (subgradient test on its multipliers) and relative duality gap; the ALM gets
``--timeout`` minus 30 s as its own time limit, so a cell that runs out still reports how
far it got.

Usage::

    python benchmarks/bench_svm_general.py
    python benchmarks/bench_svm_general.py --nuclear --sizes 500,32 2000,64 10000,256 --cvxpy-max-n 500
    python benchmarks/bench_svm_general.py --sizes 2000,64 10000,256 --cvxpy-max-n 0

``main(argv)`` returns the rows (dicts) as well as printing the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

CVXPY_TOL = 1e-12  # Clarabel gap tolerance of the reference: W accurate to ~1e-8 relative (1e-10: ~3e-6)
DEFAULT_SIZES = ((500, 32), (1000, 48), (2000, 64), (5000, 128), (10000, 256))


def child(solver: str, n: int, K: int, mem_gib: float, save: str, max_seconds: float = 600.0) -> dict:
    limit = int(mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import tracemalloc

    import numpy as np

    from theorycheck.corpus.synthetic import synthetic
    from theorycheck.graphs import build_graphs
    from theorycheck.svm import constraint_rows, solve_dual, solve_general, solve_graph_svm_nuclear

    corpus = synthetic(n=n, T=8, K=K, d=K, embeddings="unit-norm", seed=0).realizable()
    graphs = build_graphs(corpus)
    ga, *_, ea, _, _ = constraint_rows(graphs, reduced=True)
    trace = not solver.startswith("nuclear")  # the nuclear table shows no traced peak: time it untraced
    if trace:
        tracemalloc.start()  # slows numpy-call-heavy loops (the ALM's CG: 1.0 s -> 1.8 s at n = 2,000)
    t0 = time.perf_counter()
    if solver == "nuclear":
        sol = solve_graph_svm_nuclear(corpus.E, graphs, method="alm", max_seconds=max_seconds)
    elif solver == "nuclear-cvxpy":
        sol = solve_graph_svm_nuclear(corpus.E, graphs, method="cvxpy")
    elif solver == "dual":
        sol = solve_dual(corpus.E, graphs)
    else:
        sol = solve_general(corpus.E, graphs, tol=CVXPY_TOL)
    seconds = time.perf_counter() - t0
    traced = 0
    if trace:
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    np.save(save, sol.W)
    details = sol.details
    return {
        "solver": solver, "n": n, "K": K, "windows": corpus.n, "inequalities": int(ga.size),
        "equalities": int(ea.size), "seconds": seconds, "traced_mib": traced / 2**20,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "status": sol.status, "violation": sol.max_violation, "kkt": sol.kkt_residual,
        "min_dual": sol.min_dual, "norm": sol.norm,
        "complementarity": details.get("complementarity", float("nan")),
        "active": details.get("active", -1), "iterations": details.get("active_set_iterations", -1),
        "nuclear": float(np.linalg.norm(sol.W, "nuc")), "gap": details.get("relative_gap", float("nan")),
        "rank": details.get("rank", -1), "newton": details.get("alm_newton", -1), "cg": details.get("alm_cg", -1),
        "outer": details.get("alm_outer", -1), "working": details.get("alm_working_rows", -1),
    }


def measure(solver: str, n: int, K: int, timeout: float, mem_gib: float, save: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", solver, str(n), str(K),
           "--mem-gib", str(mem_gib), "--save", save, "--max-seconds", str(max(1.0, timeout - 30.0))]
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"solver": solver, "failed": f"> {timeout:.0f} s", "load": load}
    if proc.returncode != 0:
        oom = any(m in proc.stderr for m in ("MemoryError", "Unable to allocate", "bad_alloc"))
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:60]
        return {"solver": solver, "failed": f"> {mem_gib:g} GiB" if oom else tail, "load": load}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load"] = load
    return out


def table(header, rows) -> None:
    """The benchmarks' Markdown table (bench_analyze.table)."""
    from bench_analyze import table as markdown_table

    markdown_table(header, rows)


def parse_size(text: str) -> tuple[int, int]:
    n, K = text.split(",")
    return int(n), int(K)


def main(argv: list[str] | None = None) -> list[dict]:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=list(DEFAULT_SIZES),
                        help="n,K pairs (d = K, T = 8)")
    parser.add_argument("--cvxpy-max-n", type=int, default=1000, help="run cvxpy only up to this n")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    parser.add_argument("--mem-gib", type=float, default=6.0, help="address-space limit per cell")
    parser.add_argument("--nuclear", action="store_true", help="the nuclear-norm Graph-SVM (ALM vs cvxpy SDP)")
    args = parser.parse_args(argv)
    if args.nuclear:
        return nuclear_table(args)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n, K in args.sizes:
            fast = measure("dual", n, K, args.timeout, args.mem_gib, f"{tmp}/dual_{n}_{K}.npy")
            ref = None
            if n <= args.cvxpy_max_n:
                ref = measure("cvxpy", n, K, args.timeout, args.mem_gib, f"{tmp}/cvxpy_{n}_{K}.npy")
            entry = {"n": n, "K": K, "dual": fast, "cvxpy": ref}
            if "failed" in fast:
                row = [n, K, "-", fast["failed"], "-", f"{fast['load']:.1f}", "-", "-", "-", "-", "-"]
            else:
                row = [n, K, f"{fast['inequalities']} + {fast['equalities']}", f"{fast['seconds']:.2f} s",
                       f"{fast['traced_mib']:.0f} / {fast['rss_mib']:.0f} MiB", f"{fast['load']:.1f}",
                       f"{fast['status']}, {fast['iterations']} it",
                       f"{fast['kkt']:.1e} / {fast['complementarity']:.1e} / {fast['min_dual']:.1e}",
                       f"{fast['violation']:.1e}"]
                if ref is None:
                    row += ["skipped", "-"]
                elif "failed" in ref:
                    row += [ref["failed"] + f" (load {ref['load']:.1f})", "-"]
                else:
                    W = np.load(f"{tmp}/dual_{n}_{K}.npy")
                    W_ref = np.load(f"{tmp}/cvxpy_{n}_{K}.npy")
                    entry["relative_difference"] = float(np.linalg.norm(W - W_ref) / np.linalg.norm(W_ref))
                    entry["norm_difference"] = fast["norm"] - ref["norm"]
                    row += [f"{ref['seconds']:.1f} s, {ref['rss_mib']:.0f} MiB (viol {ref['violation']:.0e})",
                            f"{entry['relative_difference']:.1e} (Δ||W|| {entry['norm_difference']:.1e})"]
            rows.append(row)
            results.append(entry)
            print(f"done n={n} K={K}", file=sys.stderr, flush=True)
    print("## Graph-SVM, general embeddings: unit-norm, T = 8, K = d (solve_dual vs cvxpy d×d formulation)\n")
    table(["n", "K", "constraints (ineq + eq)", "time", "peak traced / RSS", "load", "status",
           "KKT stat / compl / min λ", "max viol", "cvxpy", "rel. diff vs cvxpy"], rows)
    print("\nThe solver's multipliers and margins are exact to the dual residual (<= 1e-11); where the "
          "relative difference exceeds 1e-6, compare Δ||W||: a negative value means the active-set "
          "point has the smaller norm at violation <= 1e-9, i.e. the interior-point answer is the "
          "less converged one (its duality-gap tolerance is relative to ||W||^2).")
    return results


def nuclear_table(args) -> list[dict]:
    import numpy as np

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n, K in args.sizes:
            fast = measure("nuclear", n, K, args.timeout, args.mem_gib, f"{tmp}/alm_{n}_{K}.npy")
            ref = None
            if n <= args.cvxpy_max_n:
                ref = measure("nuclear-cvxpy", n, K, args.timeout, args.mem_gib, f"{tmp}/sdp_{n}_{K}.npy")
            entry = {"n": n, "K": K, "alm": fast, "cvxpy": ref}
            if "failed" in fast:
                row = [n, K, "-", fast["failed"], f"{fast['load']:.1f}"] + ["-"] * 6
            else:
                row = [n, K, f"{fast['inequalities']} + {fast['equalities']}", f"{fast['seconds']:.2f} s",
                       f"{fast['load']:.1f}", f"{fast['status']}, rank {fast['rank']}, {fast['outer']} outer / {fast['newton']} Newton / "
                       f"{fast['cg']} CG, {fast['working']} working rows",
                       f"{fast['violation']:.1e}", f"{fast['kkt']:.1e}", f"{fast['gap']:.1e}"]
                if ref is None:
                    row += ["skipped", "-"]
                elif "failed" in ref:
                    row += [ref["failed"] + f" (load {ref['load']:.1f})", "-"]
                else:
                    W = np.load(f"{tmp}/alm_{n}_{K}.npy")
                    W_ref = np.load(f"{tmp}/sdp_{n}_{K}.npy")
                    entry["relative_difference"] = float(np.linalg.norm(W - W_ref) / np.linalg.norm(W_ref))
                    entry["nuclear_difference"] = fast["nuclear"] - ref["nuclear"]
                    row += [f"{ref['seconds']:.1f} s (viol {ref['violation']:.0e}, gap {ref['gap']:.0e})",
                            f"{entry['relative_difference']:.1e} (Δ||W||_* {entry['nuclear_difference']:.1e})"]
            rows.append(row)
            results.append(entry)
            print(f"done n={n} K={K}", file=sys.stderr, flush=True)
    print("## Nuclear-norm Graph-SVM, unit-norm, T = 8, K = d (ALM + semismooth Newton-CG vs cvxpy SDP)\n")
    table(["n", "K", "constraints (ineq + eq)", "time", "load", "ALM status", "max viol", "KKT", "rel. gap",
           "cvxpy SDP", "rel. diff vs cvxpy"], rows)
    print("\nKKT: max(||Z||_2 - 1, |<Z, W> - ||W||_*| / ||W||_*) from the multipliers; rel. gap: (||W||_* - "
          "sum lambda+ / ||Z+||_2) / ||W||_*, a weak-duality bound.  Δ||W||_* < 0: the ALM point is the "
          "smaller at violation <= 1e-9 (the SDP's W is accurate to ~1e-6 at its tolerance 1e-10).")
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        p = argparse.ArgumentParser()
        p.add_argument("--child", nargs=3)
        p.add_argument("--mem-gib", type=float)
        p.add_argument("--save")
        p.add_argument("--max-seconds", type=float, default=600.0)
        a = p.parse_args()
        solver, n, K = a.child
        print(json.dumps(child(solver, int(n), int(K), a.mem_gib, a.save, a.max_seconds)))
    else:
        main()
