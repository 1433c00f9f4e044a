"""Why the nuclear ALM needs many CG iterations: condition numbers of one captured Newton system.

Runs the nuclear-norm Graph-SVM ALM (``solve_graph_svm_nuclear``, unit-norm embeddings, T = 8,
K = d, seed 0) until the first Newton system whose preconditioned CG takes at least --min-cg
iterations, stops there, forms that system N = sigma (A J A^* + D) densely in the rotated basis
(row j: p_j q_k^T, p_j = U^T (x_a - x_b), q_k = V^T x_k) and prints the generalised condition
number of N against candidate preconditioners:

* block-Jacobi of N per query column (what the solver uses);
* the same blocks of C = N - sigma B B^T plus sigma B B^T exact across columns, where
  B B^T = A Sym_RR A^* is the symmetric part of J on the block of unshrunk singular values
  (weight 1 there; the other weights of J are O(w / sigma));
* the diagonal of C plus sigma B B^T;
* block-Jacobi of N plus the cross-column part of only the top half / quarter of sigma B B^T's
  spectrum (would a low-rank correction, with a small capacitance, do?).

Dense: n = 2,000, K = 64 (about 3,500 rows) takes ~30 s and ~1 GB.

Usage::

    python benchmarks/nuclear_conditioning.py --n 2000 --K 64 --min-cg 60
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.linalg as sl


class _Captured(Exception):
    pass


def capture_system(n: int, K: int, min_cg: int):
    """(Newton matrix object, its first CG count) of the first system needing >= min_cg CG."""
    import theorycheck.svm as svm
    from theorycheck.corpus.synthetic import synthetic
    from theorycheck.graphs import build_graphs

    corpus = synthetic(n=n, T=8, K=K, d=K, embeddings="unit-norm", seed=0).realizable()
    graphs = build_graphs(corpus)
    solve, found = svm._nuclear_pcg, []

    def capturing(matvec, precondition, b, rtol, maxiter):
        x, used = solve(matvec, precondition, b, rtol, maxiter)
        if used >= min_cg:
            found.append((matvec, used))
            raise _Captured
        return x, used

    svm._nuclear_pcg = capturing
    try:
        svm.solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    except _Captured:
        pass
    finally:
        svm._nuclear_pcg = solve
    if not found:
        raise SystemExit(f"no Newton system needed {min_cg} CG iterations; lower --min-cg")
    return found[0]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--K", type=int, default=64)
    parser.add_argument("--min-cg", type=int, default=60)
    args = parser.parse_args(argv)
    newton, used = capture_system(args.n, args.K, args.min_cg)
    rows, d, rank, sigma = newton.rows, newton.EU.shape[1], newton.rank, newton.sigma
    a, b, k = rows.u // rows.K, rows.v // rows.K, rows.col
    m = a.size
    rotated = (newton.EU[a] - newton.EU[b])[:, :, None] * newton.EV[k][:, None, :]  # p_j q_k^T
    keep_skew = newton.keep_skew_T.T
    J_rows = newton.keep_sym * rotated + keep_skew * rotated.transpose(0, 2, 1)
    N = sigma * (rotated.reshape(m, -1) @ J_rows.reshape(m, -1).T + np.diag(newton.extra))
    probe = np.random.default_rng(0).normal(size=m)
    product_error = np.linalg.norm(N @ probe - newton(probe)) / np.linalg.norm(newton(probe))
    N = 0.5 * (N + N.T)
    unshrunk = np.zeros((d, d))
    unshrunk[:rank, :rank] = 1.0
    sym_rr = 0.5 * (rotated + rotated.transpose(0, 2, 1)) * unshrunk
    BBt = sigma * (rotated.reshape(m, -1) @ sym_rr.reshape(m, -1).T)
    BBt = 0.5 * (BBt + BBt.T)
    C = N - BBt

    def per_column(M):
        out = np.zeros_like(M)
        for column in np.unique(k):
            i = np.flatnonzero(k == column)
            out[np.ix_(i, i)] = M[np.ix_(i, i)]
        return out

    lam, vec = np.linalg.eigh(BBt)
    bbt_rank = int(np.sum(lam > 1e-8 * sigma))
    print(f"n = {args.n}, K = d = {args.K}: captured Newton system with {m} rows, rank {rank}, sigma {sigma:.3g}, "
          f"{used} CG; dense product against the solver's: relative difference {product_error:.1e}; "
          f"rank of B B^T {bbt_rank} (r(r+1)/2 = {rank * (rank + 1) // 2})")
    print("| preconditioner | condition | eigenvalues below 1 % of the largest |")
    print("|---|---|---|")
    def top_part(fraction):  # sigma B B^T on its largest fraction of nonzero eigenvalues
        keep = np.argsort(lam)[::-1][:max(1, int(fraction * bbt_rank))]
        return (vec[:, keep] * lam[keep]) @ vec[:, keep].T

    candidates = [("block-Jacobi of N (the solver's)", per_column(N)),
                  ("block-Jacobi of C + sigma B B^T", per_column(C) + BBt),
                  ("diagonal of C + sigma B B^T", np.diag(np.diag(C)) + BBt)]
    for fraction in (0.5, 0.25):
        low = top_part(fraction)
        candidates.append((f"block-Jacobi of N + top {fraction:g} of sigma B B^T across columns",
                           per_column(N) + low - per_column(low)))
    table = []
    for name, P in candidates:
        w = sl.eigh(N, P, eigvals_only=True)
        table.append({"preconditioner": name, "condition": float(w.max() / w.min()),
                      "small_fraction": float(np.mean(w < 1e-2 * w.max()))})
        print(f"| {name} | {w.max() / w.min():.2e} | {100 * np.mean(w < 1e-2 * w.max()):.1f} % |")
    return {"rows": m, "rank": rank, "cg": used, "bbt_rank": bbt_rank, "product_error": float(product_error), "table": table}


if __name__ == "__main__":
    main()
