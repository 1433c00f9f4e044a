"""Sizes and times of the exact certificates (theorycheck.symbolic); prints tables.

    python benchmarks/certificates.py            # default sizes (a few minutes)
    python benchmarks/certificates.py --quick    # smaller sizes

Measures the per-query SCC-value certificate of W^svm on the bundled pydoc corpus
(one-hot), the d×d certificate on synthetic unit-norm embeddings, and the W^fin radius.
"""

from __future__ import annotations

import argparse
import time

from theorycheck.corpus import load_corpus
from theorycheck.corpus.synthetic import synthetic
from theorycheck.finite import CyclicSubspace, solve_finite
from theorycheck.graphs import build_graphs
from theorycheck.svm import solve_graph_svm
from theorycheck.symbolic.finite_bound import certify_finite
from theorycheck.symbolic.svm_certificate import certify_svm


def row(*cells) -> str:
    return " | ".join(str(c) for c in cells)


def scc_form(configs) -> None:
    print("\nW^svm certificate, SCC-value form (pydoc corpus, one-hot)")
    print(row("vocab", "window", "windows", "cond. edges", "active", "solve s", "certify s", "status",
              "||W - W*|| / ||W*||", "failed"))
    for vocab, window in configs:
        corpus = load_corpus(None, window=window, vocab=vocab).realizable()
        graphs = build_graphs(corpus)
        t0 = time.perf_counter()
        svm = solve_graph_svm(corpus.E, graphs)
        solve = time.perf_counter() - t0
        cert = certify_svm(corpus.E, graphs, svm.W)
        relative = cert.distance / max(1.0, float(cert.norm_squared) ** 0.5) if cert.norm_squared else float("nan")
        print(row(vocab, window, corpus.n, cert.sizes.get("constraints"), cert.sizes.get("active"),
                  f"{solve:.2f}", f"{cert.seconds:.2f}", cert.status, f"{relative:.1e}", ", ".join(cert.failed)))


def general_form(configs) -> None:
    print("\nW^svm certificate, general d×d form (synthetic unit-norm embeddings, cyclic)")
    print(row("n", "T", "K", "d", "rows", "active", "certify s", "status", "||W-W*||"))
    for n, T, K, d in configs:
        corpus = synthetic(n=n, T=T, K=K, d=d, embeddings="unit-norm", graphs="any", seed=1)
        graphs = build_graphs(corpus)
        svm = solve_graph_svm(corpus.E, graphs)
        cert = certify_svm(corpus.E, graphs, svm.W, form="general", max_rows=10_000)
        print(row(n, T, K, d, cert.sizes.get("constraints"), cert.sizes.get("active"), f"{cert.seconds:.2f}",
                  cert.status, f"{cert.distance:.1e}"))


def finite(configs) -> None:
    print("\nW^fin radius (interval arithmetic, exact congruence + Gershgorin)")
    print(row("corpus", "dim S_fin", "solve s", "certify s", "status", "radius"))
    for label, corpus in configs:
        corpus = corpus.realizable()
        graphs = build_graphs(corpus)
        subspace = CyclicSubspace(corpus.E, graphs)
        t0 = time.perf_counter()
        fin = solve_finite(corpus, graphs, subspace)
        solve = time.perf_counter() - t0
        bound = certify_finite(corpus, graphs, fin.W, subspace)
        print(row(label, subspace.dim, f"{solve:.2f}", f"{bound.seconds:.2f}", bound.status, f"{bound.radius:.1e}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        scc_form([(60, 8), (200, 8)])
        general_form([(6, 4, 6, 8), (20, 5, 12, 12)])
        finite([("pydoc V=30 T=4", load_corpus(None, window=4, vocab=30)),
                ("synthetic unit-norm n=20 K=8", synthetic(n=20, T=5, K=8, d=8, embeddings="unit-norm", seed=1))])
        return
    scc_form([(60, 8), (200, 8), (500, 16), (2000, 32)])
    general_form([(6, 4, 6, 8), (10, 5, 8, 8), (20, 5, 12, 12), (30, 5, 14, 14), (40, 6, 16, 16)])
    finite([("pydoc V=30 T=4", load_corpus(None, window=4, vocab=30)),
            ("pydoc V=60 T=4", load_corpus(None, window=4, vocab=60)),
            ("pydoc V=100 T=3", load_corpus(None, window=3, vocab=100)),
            ("pydoc V=60 T=8", load_corpus(None, window=8, vocab=60)),
            ("pydoc V=200 T=8", load_corpus(None, window=8, vocab=200)),
            ("pydoc V=500 T=16", load_corpus(None, window=16, vocab=500)),
            ("synthetic unit-norm n=20 K=8", synthetic(n=20, T=5, K=8, d=8, embeddings="unit-norm", seed=1)),
            ("synthetic unit-norm n=60 K=12", synthetic(n=60, T=5, K=12, d=12, embeddings="unit-norm", seed=1)),
            ("synthetic unit-norm n=100 K=16", synthetic(n=100, T=6, K=16, d=16, embeddings="unit-norm", seed=1)),
            ("synthetic unit-norm n=200 K=20", synthetic(n=200, T=6, K=20, d=20, embeddings="unit-norm", seed=1))])


if __name__ == "__main__":
    main()
