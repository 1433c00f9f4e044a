"""Speed and memory of the analyze stage against the monolithic cvxpy formulation; prints tables.

    python benchmarks/bench_analyze.py                    # pydoc V in {100, 500, 2000} x T in {16, 32}
    python benchmarks/bench_analyze.py --vocab 100 --window 16 --timeout 60
    python benchmarks/bench_analyze.py --skip-monolithic

Every measurement runs in a fresh subprocess, which reports its wall time and its peak
resident memory (ru_maxrss, Python and the imports included).  A subprocess runs under a
time limit (--timeout) and an address-space limit (--mem-gib); beyond either the case is
reported as "did not finish".

Stages on ``read_pydoc(window, vocab)`` (one-hot embeddings, realizable windows):
  (a) graphs   drop unrealizable windows, build every token-priority graph and its SCCs
  (b) svm      W^svm by the fast path (solve_graph_svm: the per-query ranking QPs)
  (c) fin      W^fin (S_fin coordinates + Newton-CG)
  (d) mono     the monolithic formulation of the official code (THEORY.md §7.3): one
               cp.Variable((d, d)), one dense row per (window, other position) with duplicates,
               stacked per query as vstack(rows) @ W @ e_k (== 0 inside an SCC, <= -1 across),
               objective ||W||_F, solver SCS (the official default).  Its SCCs come from stage (a)
               and are not timed; constraint assembly and the solve are.
(b), (c) and (d) build the corpus and graphs first, untimed; their peak memory includes that.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

MIB = 1024.0  # ru_maxrss is in KiB on Linux


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB


# --------------------------------------------------------------------------- child side


def read(case: dict):
    from theorycheck.corpus import read_pydoc
    from theorycheck.corpus.synthetic import synthetic

    if case["corpus"] == "pydoc":
        return read_pydoc(window=case["window"], vocab=case["vocab"])
    return synthetic(n=case["n"], T=case["T"], K=case["K"], d=case["d"], embeddings=case["embeddings"],
                     seed=case.get("seed", 0))


def monolithic_svm(corpus, graphs, solver: str):
    """The official formulation (nxt_token_solver.W_svm_solver_cvxpy, global case), rebuilt."""
    import cvxpy as cp
    import numpy as np

    t0 = time.perf_counter()
    E = corpus.E
    K, d = E.shape
    counts = corpus.counts
    scc_of = np.full((K, K), -1)  # scc_of[k, a]: SCC of token a in G^(k) (the official scc_lst)
    scc_of[graphs.pair_query, graphs.pair_token] = graphs.scc
    zero_rows = [[] for _ in range(K)]
    neg_rows = [[] for _ in range(K)]
    for i in range(corpus.n):
        k, y = int(corpus.last[i]), int(corpus.label[i])
        lo, hi = counts.indptr[i], counts.indptr[i + 1]
        for j, c in zip(counts.indices[lo:hi], counts.data[lo:hi], strict=True):
            if j == y:
                continue
            same = scc_of[k, j] == scc_of[k, y]
            for _ in range(int(c)):  # one row per position, duplicates kept
                (zero_rows if same else neg_rows)[k].append(E[y] - E[j] if same else E[j] - E[y])
    W = cp.Variable((d, d))
    constraints = []
    for k in range(K):
        if zero_rows[k]:
            constraints.append(cp.vstack(zero_rows[k]) @ W @ E[k].reshape(-1, 1) == 0)
    for k in range(K):
        if neg_rows[k]:
            constraints.append(cp.vstack(neg_rows[k]) @ W @ E[k].reshape(-1, 1) <= -1)
    problem = cp.Problem(cp.Minimize(cp.norm(W, "fro")), constraints)
    rows = sum(map(len, zero_rows)) + sum(map(len, neg_rows))
    assembled = time.perf_counter() - t0
    problem.solve(solver=solver)
    return np.asarray(W.value), problem.status, rows, assembled, time.perf_counter() - t0 - assembled


def child(stage: str, case: dict, mem_gib: float) -> dict:
    limit = int(mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np

    from theorycheck.finite import solve_finite
    from theorycheck.graphs import build_graphs
    from theorycheck.svm import solve_graph_svm

    out: dict = {"stage": stage}
    t0 = time.perf_counter()
    raw = read(case)
    out["read_s"] = time.perf_counter() - t0
    if stage == "ntp":  # Thrampoulidis (2024) on every window (labels need not be realizable there)
        from theorycheck.theories.ntp2024.contexts import build_contexts
        from theorycheck.theories.ntp2024.predict import predict

        t0 = time.perf_counter()
        ctx = build_contexts(raw, case.get("context", "last"))
        pred = predict(ctx)
        out.update(seconds=time.perf_counter() - t0, windows=raw.n, contexts=ctx.m, dim_F=pred.finite.dim,
                   method=pred.solver["method"], peak_mib=peak_mib())
        return out
    t0 = time.perf_counter()
    corpus = raw.realizable()
    graphs = build_graphs(corpus)
    graphs_seconds = time.perf_counter() - t0
    out["windows"] = corpus.n
    out["edges"] = int(graphs.edge_src.size)
    out["K"], out["d"] = corpus.K, corpus.d
    if stage == "graphs":
        out["seconds"] = graphs_seconds
        rows = corpus.counts.sum() - np.asarray(corpus.counts[np.arange(corpus.n), corpus.label]).sum()
        out["position_rows"] = int(rows)  # the monolithic formulation's constraint count
        out["cyclic_sccs"] = int((graphs.scc_size >= 2).sum())
    elif stage == "svm":
        t0 = time.perf_counter()
        sol = solve_graph_svm(corpus.E, graphs)
        out["seconds"] = time.perf_counter() - t0
        out.update(method=sol.method, status=sol.status, min_margin=sol.min_margin, violation=sol.max_violation)
    elif stage == "fin":
        t0 = time.perf_counter()
        sol = solve_finite(corpus, graphs)
        out["seconds"] = time.perf_counter() - t0
        out.update(status=sol.status, dim=sol.dim, gradient_norm=sol.gradient_norm)
    elif stage == "mono":
        reference = solve_graph_svm(corpus.E, graphs).W if case.get("compare", True) else None
        W, status, rows, assembled, solved = monolithic_svm(corpus, graphs, case.get("solver", "SCS"))
        out.update(seconds=assembled + solved, assemble_s=assembled, solve_s=solved, status=status, rows=rows)
        if reference is not None and W is not None and W.ndim == 2:
            out["rel_diff_vs_fast"] = float(np.linalg.norm(W - reference) / max(np.linalg.norm(reference), 1e-300))
    out["peak_mib"] = peak_mib()
    return out


# --------------------------------------------------------------------------- parent side


def measure(stage: str, case: dict, timeout: float, mem_gib: float) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, json.dumps(case), "--mem-gib", str(mem_gib)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"stage": stage, "failed": f"did not finish in {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        oom = ("MemoryError", "Unable to allocate", "bad_alloc", "memory allocation of")
        why = f"out of memory (> {mem_gib:g} GiB)" if any(m in proc.stderr for m in oom) \
            or proc.returncode in (-9, 137) else tail[:80]
        return {"stage": stage, "failed": f"did not finish: {why}", "wall_s": wall}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_time(r: dict) -> str:
    return r["failed"] if "failed" in r else f"{r['seconds']:.3f} s"


def fmt_mem(r: dict) -> str:
    return "-" if "failed" in r else f"{r['peak_mib']:.0f}"


def table(header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) + " |")


def slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--window", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement")
    parser.add_argument("--mem-gib", type=float, default=12.0, help="address-space limit per measurement")
    parser.add_argument("--skip-monolithic", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-ntp", action="store_true", help="skip the ntp2024 predictions table")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]), args.mem_gib)))
        return

    import platform

    import numpy

    print(f"# analyze benchmark: Python {platform.python_version()}, numpy {numpy.__version__}, "
          f"{platform.machine()}, limits {args.timeout:.0f} s and {args.mem_gib:g} GiB per measurement")
    print("# peak = max resident memory of the measuring subprocess in MiB (interpreter + imports included)\n")
    results = {}
    rows = []
    for vocab in args.vocab:
        for window in args.window:
            case = {"corpus": "pydoc", "vocab": vocab, "window": window}
            r = {s: measure(s, case, args.timeout, args.mem_gib) for s in ("graphs", "svm", "fin")}
            if not args.skip_monolithic:
                r["mono"] = measure("mono", case, args.timeout, args.mem_gib)
            results[(vocab, window)] = r
            g = r["graphs"]
            fast_total = sum(r[s]["seconds"] for s in ("graphs", "svm", "fin") if "failed" not in r[s])
            mono = r.get("mono", {"failed": "skipped"})
            rows.append([vocab, window, g.get("windows", "?"), g.get("edges", "?"), g.get("position_rows", "?"),
                         fmt_time(g), fmt_mem(g), fmt_time(r["svm"]), fmt_mem(r["svm"]),
                         fmt_time(r["fin"]), fmt_mem(r["fin"]), f"{fast_total:.2f} s",
                         fmt_time(mono), fmt_mem(mono)])
            print(f"  done V={vocab} T={window}", file=sys.stderr, flush=True)
    print("## pydoc_data.topics, one-hot embeddings\n")
    table(["V", "T", "windows", "TPG edges", "position rows", "(a) graphs", "MiB", "(b) W^svm fast", "MiB",
           "(c) W^fin", "MiB", "a+b+c", "(d) monolithic cvxpy", "MiB"], rows)

    if not args.skip_monolithic:
        finished = [(k, r) for k, r in results.items() if "failed" not in r["mono"]]
        print()
        for (vocab, window), r in finished:
            m = r["mono"]
            print(f"monolithic V={vocab} T={window}: {m['rows']} rows, assembly {m['assemble_s']:.1f} s, "
                  f"SCS {m['solve_s']:.1f} s, status {m['status']}, ||W_mono - W_fast|| / ||W_fast|| = "
                  f"{m.get('rel_diff_vs_fast', float('nan')):.1e}")
        if finished:
            # largest = largest vocabulary (d^2 variables), then most constraint rows
            (vocab, window), r = max(finished, key=lambda kv: (kv[0][0], kv[1]["graphs"].get("position_rows", 0)))
            fast = r["graphs"]["seconds"] + r["svm"]["seconds"]
            mono = r["graphs"]["seconds"] + r["mono"]["seconds"]
            print(f"speed-up on the largest size the monolithic formulation finishes (V={vocab}, T={window}): "
                  f"graphs+W^svm {fast:.3f} s vs graphs+monolithic {mono:.1f} s = {mono / fast:.0f}x; "
                  f"W^svm alone {r['mono']['seconds'] / r['svm']['seconds']:.0f}x")
        else:
            print("the monolithic formulation finished no case within the limits")

    ok = {k: r for k, r in results.items() if all("failed" not in r[s] for s in ("graphs", "svm", "fin"))}
    total = {k: sum(r[s]["seconds"] for s in ("graphs", "svm", "fin")) for k, r in ok.items()}
    print()
    for window in args.window:
        ks = sorted(k for k in ok if k[1] == window)
        if len(ks) >= 2:
            per_edge = ", ".join(f"{1e6 * total[k] / ok[k]['graphs']['edges']:.1f}" for k in ks)
            print(f"growth, T={window}: a+b+c ~ V^{slope([k[0] for k in ks], [total[k] for k in ks]):.2f}, "
                  f"edges ~ V^{slope([k[0] for k in ks], [ok[k]['graphs']['edges'] for k in ks]):.2f}, "
                  f"time per edge {per_edge} µs (V = {', '.join(str(k[0]) for k in ks)})")
    for vocab in args.vocab:
        ks = sorted(k for k in ok if k[0] == vocab)
        if len(ks) >= 2:
            first, last = ok[ks[0]]["graphs"], ok[ks[-1]]["graphs"]
            print(f"growth, V={vocab}: T {ks[0][1]} -> {ks[-1][1]} multiplies a+b+c by "
                  f"{total[ks[-1]] / total[ks[0]]:.2f}, edges by {last['edges'] / first['edges']:.2f}, "
                  f"windows by {last['windows'] / first['windows']:.2f}")

    if not args.skip_ntp:
        print("\n## ntp2024 predictions (Thrampoulidis 2024): contexts, W^mm, W^⋆, F; `last` contexts, one-hot\n")
        rows = []
        for vocab in args.vocab:
            for window in args.window:
                r = measure("ntp", {"corpus": "pydoc", "vocab": vocab, "window": window}, args.timeout, args.mem_gib)
                rows.append([vocab, window, r.get("windows", "?"), r.get("contexts", "?"), r.get("dim_F", "?"),
                             fmt_time(r), fmt_mem(r)])
        table(["V", "T", "windows", "contexts", "dim F", "contexts + W^mm + W^⋆ (target 2 s at V=2000, T=32)", "MiB"],
              rows)

    if not args.skip_synthetic:
        print("\n## synthetic n=2000, T=16, K=64, d=64 (THEORY.md §7.3: the official code ran out of memory)\n")
        rows = []
        for emb in ("unit-norm", "orthonormal"):
            case = {"corpus": "synthetic", "n": 2000, "T": 16, "K": 64, "d": 64, "embeddings": emb, "seed": 0}
            r = {s: measure(s, case, args.timeout, args.mem_gib) for s in ("graphs", "svm", "fin")}
            if not args.skip_monolithic:
                r["mono"] = measure("mono", {**case, "compare": False}, args.timeout, args.mem_gib)
            mono = r.get("mono", {"failed": "skipped"})
            rows.append([emb, r["graphs"].get("edges", "?"), r["svm"].get("method", "-"), fmt_time(r["graphs"]),
                         fmt_time(r["svm"]), fmt_mem(r["svm"]), fmt_time(r["fin"]), fmt_mem(r["fin"]),
                         fmt_time(mono), fmt_mem(mono)])
        table(["embeddings", "TPG edges", "W^svm path", "(a) graphs", "(b) W^svm", "MiB", "(c) W^fin", "MiB",
               "(d) monolithic", "MiB"], rows)


if __name__ == "__main__":
    main()
