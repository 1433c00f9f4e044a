"""Scale benchmark (issue 11): general embeddings at the authors' sizes, and the predictions
on a large real corpus.  Prints tables; every cell runs in a fresh subprocess under a time
limit (--timeout) and an address-space limit (--mem-gib), and reports wall time and peak
resident memory (ru_maxrss, interpreter and imports included).

The large corpus is the Python documentation sources from the Debian package
``python3-doc`` (theorycheck.corpus.large; about 560,000 words with the default books)::

    apt-get update && apt-get install -y python3-doc
    python benchmarks/bench_scale.py                      # both parts
    python benchmarks/bench_scale.py --part svm --timeout 120
    python benchmarks/bench_scale.py --part corpus --vocab 2000 5000 --window 32 64
    python benchmarks/bench_scale.py --part general --general-cells 100,8,128 200,8,256

Part ``svm`` (general embeddings): ``benchmarks/bench_svm_general.py``'s ``main(argv)``
(the active-set dual solver against the cvxpy d×d formulation in the same run; sizes from
--svm-sizes); skipped with a note when that file is missing.

Part ``corpus``: read (the text reader), graphs (+ window statistics), W^svm, W^fin, the
regularization path (default radii) and training (full-batch split-ngd steps per second, numpy
backend, no monitor), one-hot embeddings; sizes vocabulary × window (default 2,000 and
5,000 × 32 and 64).  Columns: windows, TPG edges, dim S_fin, time and peak memory per stage,
the 1-minute load average when each cell started (the machine may be shared), µs per edge
of the predictions (graphs + W^svm + W^fin), and ``analyze`` (no path): the predictions as
the pipeline computes them in one process (W^fin in a thread beside the SVM), against that
process's own graph stage, and the whole ``theorycheck analyze`` command (read, predictions
with the default path, files written) with its peak memory.  The closing lines state how the cost grows with
windows, vocabulary and window length (log-log slopes over the cells that finished).

Part ``general``: the same corpus with seeded random unit-norm embeddings of dimension d
(V,T,d cells): S_fin's frame (the generators' Gram and its Cholesky factor), W^svm, W^fin,
analyze without the path, and split-ngd steps per second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(stage: str, case: dict, mem_gib: float) -> dict:
    limit = int(mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np

    from theorycheck.finite import CyclicSubspace, solve_finite
    from theorycheck.graphs import build_graphs
    from theorycheck.model import ScoreMap, window_stats
    from theorycheck.path import regularization_path
    from theorycheck.svm import solve_graph_svm
    from theorycheck.train import FinSplit, TrainConfig, train

    out: dict = {"stage": stage, "load": os.getloadavg()[0]}
    if stage == "command":  # what a user runs: read, predictions with the path, files written
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "theorycheck", "analyze", "python3-doc", "-V",
                                   str(case["vocab"]), "-T", str(case["window"]), "--out", tmp],
                                  capture_output=True, text=True)
            out["seconds"] = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError((proc.stderr.strip().splitlines() or ["?"])[-1])
            with open(os.path.join(tmp, "timings.json"), encoding="utf-8") as fh:
                out["timings"] = json.load(fh)
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        return out
    t0 = time.perf_counter()
    from theorycheck.corpus.large import read_python_doc

    raw = read_python_doc(window=case["window"], vocab=case["vocab"])
    if case.get("d"):  # general embeddings: seeded random unit-norm rows of dimension d
        from dataclasses import replace

        E = np.random.default_rng(0).standard_normal((len(raw.vocab), case["d"]))
        raw = replace(raw, E=E / np.linalg.norm(E, axis=1, keepdims=True))
    out["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    corpus = raw.realizable()
    graphs = build_graphs(corpus)
    stats = window_stats(corpus, graphs)
    out["graphs_s"] = time.perf_counter() - t0
    out.update(windows=corpus.n, edges=int(graphs.edge_src.size), entries=int(stats.entry_pair.size))
    t0 = time.perf_counter()
    if stage == "graphs":
        out["seconds"] = out["graphs_s"]
    elif stage == "frame":
        sub = CyclicSubspace(corpus.E, graphs)
        out["seconds"] = time.perf_counter() - t0
        out.update(dim=sub.dim, route="cholesky" if sub.scores_bijective else "eigenvectors")
    elif stage == "svm":
        sol = solve_graph_svm(corpus.E, graphs)
        out["seconds"] = time.perf_counter() - t0
        out.update(status=sol.status, violation=sol.max_violation)
    elif stage in ("fin", "path"):
        sub = CyclicSubspace(corpus.E, graphs)
        fin = solve_finite(corpus, graphs, sub, stats)
        out["fin_s"] = time.perf_counter() - t0
        out.update(dim=fin.dim, status=fin.status, gradient_norm=fin.gradient_norm, iterations=fin.iterations)
        if stage == "fin":
            out["seconds"] = out["fin_s"]
        else:
            svm = solve_graph_svm(corpus.E, graphs)
            t0 = time.perf_counter()
            points = regularization_path(stats, ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query),
                                         sub.orthonormal, svm.W, fin.W, sub)
            out["seconds"] = time.perf_counter() - t0
            out["resolved"] = sum(p.resolved for p in points)
    elif stage == "analyze":  # the pipeline as `analyze` runs it: W^fin in a thread beside the SVM
        from theorycheck.predictions import analyze

        t0 = time.perf_counter()
        pred = analyze(raw, radii=None)
        out["seconds"] = time.perf_counter() - t0
        out["timings"] = pred.timings
    elif stage == "train":
        smap = ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)
        steps = case["steps"]
        t_prep = time.perf_counter()
        split = FinSplit(CyclicSubspace(corpus.E, graphs), graphs.scc)  # S_fin for split-ngd, the default
        train(stats, smap, corpus.orthonormal, TrainConfig(steps=2), split=split)  # merges windows, builds the matrices
        # general E: Gamma^-1 for the projections, as a training run of the default length builds it
        split.subspace.prepare_repeated_projections(2 * TrainConfig().steps)
        out["prep_s"] = time.perf_counter() - t_prep
        result = train(stats, smap, corpus.orthonormal, TrainConfig(steps=steps), split=split)
        out["seconds"] = result.seconds
        out["steps_per_s"] = steps / result.seconds
        out["finite"] = bool(np.all(np.isfinite(result.W)))
    out["peak_mib"] = peak_mib()
    return out


def measure(stage: str, case: dict, timeout: float, mem_gib: float) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, json.dumps(case), "--mem-gib", str(mem_gib)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"stage": stage, "failed": f"> {timeout:.0f} s"}
    if proc.returncode != 0:
        oom = any(m in proc.stderr for m in ("MemoryError", "Unable to allocate", "bad_alloc"))
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:60]
        return {"stage": stage, "failed": f"> {mem_gib:g} GiB" if oom else tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cell(r: dict) -> str:
    return r["failed"] if "failed" in r else f"{r['seconds']:.2f} s / {r['peak_mib']:.0f} MiB"


def table(header, rows) -> None:
    """The benchmarks' Markdown table (bench_analyze.table)."""
    from bench_analyze import table as markdown_table

    markdown_table(header, rows)


def slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den if den else float("nan")


def part_svm(args) -> None:
    print("## general embeddings: unit-norm, T = 8, K = d (benchmarks/bench_svm_general.py)\n")
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_svm_general
    except ImportError as exc:
        print(f"(skipped: benchmarks/bench_svm_general.py is not importable: {exc})")
        return
    argv = ["--sizes", *[f"{n},{K}" for n, K in args.svm_sizes], "--timeout", str(args.timeout),
            "--mem-gib", str(args.mem_gib)]
    if args.skip_cvxpy:
        argv += ["--cvxpy-max-n", "0"]
    bench_svm_general.main(argv)


def part_corpus(args) -> None:
    print("\n## Python documentation (Debian python3-doc), one-hot embeddings\n")
    rows = []
    done = {}
    for vocab in args.vocab:
        for window in args.window:
            case = {"vocab": vocab, "window": window, "steps": args.train_steps}
            g = measure("graphs", case, args.timeout, args.mem_gib)
            s = measure("svm", case, args.timeout, args.mem_gib)
            f = measure("fin", case, args.timeout, args.mem_gib)
            a = measure("analyze", case, args.timeout, args.mem_gib)
            p = measure("path", case, args.timeout, args.mem_gib) if not args.skip_path else {"failed": "skipped"}
            tr = measure("train", case, args.timeout, args.mem_gib) if not args.skip_train else {"failed": "skipped"}
            cmd = measure("command", case, args.timeout, args.mem_gib)
            ok = all("failed" not in r for r in (g, s, f))
            total = g["seconds"] + s["seconds"] + f["seconds"] if ok else None
            if "failed" not in g:
                done[(vocab, window)] = {
                    "windows": g["windows"], "edges": g["edges"], "predictions": total,
                    **({"analyze": a["seconds"]} if "failed" not in a else {}),
                    **{name: r["seconds"] for name, r in (("graphs", g), ("svm", s), ("fin", f), ("path", p))
                       if "failed" not in r},
                    **({"train_step": 1.0 / tr["steps_per_s"]} if "failed" not in tr else {})}
            loads = "/".join(f"{r['load']:.1f}" for r in (g, s, f, a, p, tr, cmd) if "load" in r)
            if "failed" in a:
                pipeline = a["failed"]
            else:
                own = a["timings"]
                pipeline = (f"{a['seconds']:.2f} s = {a['seconds'] / own['graphs']:.1f}× its graphs "
                            f"({own['graphs']:.2f} s; svm {own['svm']:.2f} ‖ fin {own['finite']:.2f} s), "
                            f"{a['peak_mib']:.0f} MiB")
            rows.append([vocab, window, g.get("windows", "?"), g.get("edges", "?"), f.get("dim", "?"),
                         cell(g), cell(s), cell(f) + (f" ({f['iterations']} it)" if "failed" not in f else ""),
                         cell(p), f"{tr['steps_per_s']:.1f} /s, {tr['peak_mib']:.0f} MiB" if "failed" not in tr
                         else tr["failed"],
                         f"{total:.1f} s" if ok else "-", pipeline,
                         f"{1e6 * total / g['edges']:.2f}" if ok else "-",
                         cmd["failed"] if "failed" in cmd else
                         f"{cmd['seconds']:.1f} s, {cmd['peak_mib'] / 1024:.1f} GiB (path {cmd['timings']['path']:.1f} s)",
                         loads])
            print(f"  done V={vocab} T={window}", file=sys.stderr, flush=True)
    table(["V", "T", "windows", "TPG edges", "dim S_fin", "graphs", "W^svm", "W^fin", "path", "training",
           "graphs+svm+fin", "analyze (no path)", "µs/edge", "theorycheck analyze (whole command)",
           "load g/s/f/a/p/t/c"], rows)
    print("\n(each stage: wall time / peak resident memory of its own process, interpreter, imports and "
          "corpus included; reading the corpus is not counted in any stage; training: split-ngd (the default optimizer) steps per "
          "second after the windows are merged and the sparse matrices built; analyze: predictions.analyze "
          "without the regularization path in one process, from the raw corpus (realizability, graphs, "
          "then W^svm and, in a thread beside it, W^fin), against the graph stage of the same process; the whole "
          "command: `theorycheck analyze python3-doc -V V -T T` as a user runs it, reading the corpus, the "
          "default path and writing results.json and the .npy files included)")
    print()
    growth(done)


def part_general(args) -> None:
    print("\n## Python documentation with general embeddings (random unit-norm rows, dimension d)\n")
    rows = []
    for vocab, window, d in args.general_cells:
        case = {"vocab": vocab, "window": window, "d": d, "steps": args.train_steps}
        fr = measure("frame", case, args.timeout, args.mem_gib)
        s = measure("svm", case, args.timeout, args.mem_gib)
        f = measure("fin", case, args.timeout, args.mem_gib)
        a = measure("analyze", case, args.timeout, args.mem_gib)
        tr = measure("train", case, args.timeout, args.mem_gib) if not args.skip_train else {"failed": "skipped"}
        rows.append([vocab, window, d, fr.get("windows", "?"), fr.get("dim", "?"), fr.get("route", "-"), cell(fr),
                     cell(s), cell(f), cell(a),
                     f"{tr['steps_per_s']:.1f} /s (setup {tr['prep_s']:.1f} s)" if "failed" not in tr else tr["failed"],
                     "/".join(f"{r['load']:.1f}" for r in (fr, s, f, a, tr) if "load" in r)])
        print(f"  done V={vocab} T={window} d={d}", file=sys.stderr, flush=True)
    table(["V", "T", "d", "windows", "dim S_fin", "frame", "S_fin frame", "W^svm", "W^fin (frame incl.)",
           "analyze (no path)", "training", "load"], rows)
    print("\n(S_fin's frame: CyclicSubspace, the generators' Gram and its Cholesky factor (or eigenvectors "
          "where the generators are dependent); W^fin includes building the frame; analyze as in the "
          "corpus part, without the path; training: split-ngd steps per second, its setup (S_fin, the "
          "windows merged, the sparse matrices, Gamma^-1 for the projections) apart)")


def growth(done: dict) -> None:
    """Log-log slopes of each stage's time against edges, windows, vocabulary and window length,
    only over cells whose x spans a factor of at least 1.2 (windows: 2, since they grow with
    the window length and a short span would credit them with the edges' growth)."""

    def fit(keys, x_of, y_of, span=1.2):
        xs, ys = [x_of(k) for k in keys], [y_of(k) for k in keys]
        if len(keys) < 2 or max(xs) < span * min(xs) or min(ys) <= 0:
            return None
        return slope(xs, ys)

    stages = ("graphs", "svm", "fin", "path", "train_step", "predictions", "analyze")
    for stage in stages:
        have = sorted(k for k in done if done[k].get(stage))
        y = (lambda k, stage=stage: done[k][stage])  # noqa: E731
        parts = []
        for label, x, span in (("edges", lambda k: done[k]["edges"], 1.2),
                               ("windows", lambda k: done[k]["windows"], 2.0)):
            b = fit(have, x, y, span)
            if b is not None:
                parts.append(f"~ {label}^{b:.2f}")
        for window in sorted({k[1] for k in have}):
            b = fit([k for k in have if k[1] == window], lambda k: k[0], y)
            if b is not None:
                parts.append(f"~ V^{b:.2f} at T={window}")
        for vocab in sorted({k[0] for k in have}):
            b = fit([k for k in have if k[0] == vocab], lambda k: k[1], y)
            if b is not None:
                parts.append(f"~ T^{b:.2f} at V={vocab}")
        if parts:
            name = {"train_step": "training step", "predictions": "graphs+svm+fin",
                    "analyze": "analyze (no path)"}.get(stage, stage)
            print(f"{name}: time " + ", ".join(parts))
    keys = sorted(done)
    for label, key in (("windows", "windows"), ("edges", "edges")):
        for window in sorted({k[1] for k in keys}):
            b = fit([k for k in keys if k[1] == window], lambda k: k[0], lambda k, key=key: done[k][key])
            if b is not None:
                print(f"{label} ~ V^{b:.2f} at T={window}")
        for vocab in sorted({k[0] for k in keys}):
            b = fit([k for k in keys if k[0] == vocab], lambda k: k[1], lambda k, key=key: done[k][key])
            if b is not None:
                print(f"{label} ~ T^{b:.2f} at V={vocab}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["svm", "corpus", "general", "all"], default="all")
    parser.add_argument("--general-cells", type=lambda s: tuple(int(x) for x in s.split(",")), nargs="+",
                        default=[(100, 8, 128), (200, 8, 256)], help="V,T,d triples for --part general")
    parser.add_argument("--svm-sizes", type=lambda s: tuple(int(x) for x in s.split(",")), nargs="+",
                        default=[(2000, 64), (10000, 256)], help="n,K pairs")
    parser.add_argument("--vocab", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--window", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--mem-gib", type=float, default=12.0)
    parser.add_argument("--skip-cvxpy", action="store_true")
    parser.add_argument("--skip-path", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--train-steps", type=int, default=300, help="NGD steps timed per cell")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]), args.mem_gib)))
        return
    import platform

    import numpy

    print(f"# scale benchmark: Python {platform.python_version()}, numpy {numpy.__version__}, "
          f"limits {args.timeout:.0f} s and {args.mem_gib:g} GiB per cell\n")
    if args.part in ("svm", "all"):
        part_svm(args)
    if args.part in ("corpus", "all"):
        part_corpus(args)
    if args.part in ("general", "all"):
        part_general(args)


if __name__ == "__main__":
    main()
