"""Nuclear-norm Graph-SVM (THEORY.md §3.4): the ALM solver against the cvxpy SDP, hand-solved
cases, and its duality certificate checked here from the definition, not from the solver."""

from __future__ import annotations

import numpy as np
import pytest
from reference import definition_edges, scc_maps, windows_of

import theorycheck.svm as svm
from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.errors import AssumptionViolated
from theorycheck.graphs import build_graphs
from theorycheck.svm import constraint_rows, solve_graph_svm_nuclear


def rel(A, B) -> float:
    return float(np.linalg.norm(A - B) / max(np.linalg.norm(B), 1e-300))


def random_orthogonal(K: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((K, K)))
    return Q * np.sign(np.diag(R))


def subgradient(E, graphs, lam, mu) -> np.ndarray:
    """Z = sum_j lambda_j (x_a - x_b) x_k^T - sum_l mu_l (x_a - x_b) x_k^T, one outer product per row."""
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    Z = np.zeros((E.shape[1], E.shape[1]))
    for weight, a, b, k in zip(np.r_[lam, -mu], np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek]):
        Z += weight * np.outer(E[a] - E[b], E[k])
    return Z


def max_violation_on_definition(corpus, W) -> float:
    """Largest violation of the definition's constraints (every TPG edge, every SCC pair)."""
    windows, labels = windows_of(corpus)
    edges, _ = definition_edges(windows, labels)
    sccs = scc_maps(windows, labels)
    M = corpus.E @ W @ corpus.E.T
    worst = 0.0
    for k, pairs in edges.items():
        for a, b in pairs:
            if b in sccs[k][a]:
                worst = max(worst, abs(M[a, k] - M[b, k]))
            else:
                worst = max(worst, 1.0 - (M[a, k] - M[b, k]))
    return worst


def certificate_holds(corpus, graphs, W, lam, mu, tol=1e-8) -> bool:
    """W feasible, Z a subgradient of ||.||_* at W (||Z||_2 <= 1 + tol, <Z, W> = ||W||_*), and the
    weak-duality bound sum lambda+ / ||Z+||_2 within tol (relative) of ||W||_*."""
    Z = subgradient(corpus.E, graphs, lam, mu)
    nuclear = float(np.linalg.norm(W, "nuc"))
    lam_plus = np.maximum(lam, 0.0)
    bound = lam_plus.sum() / np.linalg.norm(subgradient(corpus.E, graphs, lam_plus, mu), 2)
    return bool(max_violation_on_definition(corpus, W) <= 1e-9
                and np.linalg.norm(Z, 2) <= 1 + tol
                and abs(np.sum(Z * W) - nuclear) <= tol * max(1.0, nuclear)
                and (nuclear - bound) <= tol * nuclear)


def sdp_reference(E, graphs) -> np.ndarray:
    """min tr(X) / 2 over X = [[P, W], [W^T, R]] >= 0 (= min ||W||_*), written here independently of
    svm.py, at Clarabel tolerances 1e-12 (svm.py's cvxpy path stops at 1e-10, where W is only
    accurate to ~1e-6)."""
    import warnings

    import cvxpy as cp

    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    d = E.shape[1]
    X = cp.Variable((2 * d, 2 * d), PSD=True)
    M = E @ X[:d, d:] @ E.T
    constraints = [M[ga, gk] - M[gb, gk] >= 1] + ([M[ea, ek] == M[eb, ek]] if ea.size else [])
    problem = cp.Problem(cp.Minimize(0.5 * cp.trace(X)), constraints)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Solution may be inaccurate")
        problem.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert problem.status.startswith("optimal")
    return np.asarray(X.value[:d, d:])


# (n, T, K, seed): reduced inequality + equality rows 53 + 34, 41 + 11, 104 + 26, 21 + 0
DATASETS = [(60, 6, 10, 2, True), (30, 5, 8, 3, True), (50, 8, 12, 4, True), (8, 4, 10, 2, False)]


@pytest.mark.parametrize("n,T,K,seed,cyclic", DATASETS)
def test_alm_agrees_with_the_cvxpy_sdp_and_certifies(n, T, K, seed, cyclic):
    corpus = synthetic(n=n, T=T, K=K, d=K, embeddings="unit-norm", seed=seed)
    graphs = build_graphs(corpus)
    assert (constraint_rows(graphs, reduced=True)[3].size > 0) == cyclic  # equalities iff cyclic SCCs
    fast = solve_graph_svm_nuclear(corpus.E, graphs)  # default: the ALM
    assert fast.method == solve_graph_svm_nuclear(corpus.E, graphs, method="alm").method
    assert fast.status == "optimal"
    assert rel(fast.W, sdp_reference(corpus.E, graphs)) <= 1e-6
    assert fast.max_violation <= 1e-9
    assert certificate_holds(corpus, graphs, fast.W, fast.details["lambda"], fast.details["mu"])
    assert fast.kkt_residual <= 1e-8 and fast.details["relative_gap"] <= 1e-8


def test_extrapolated_inner_starts_change_the_path_not_the_optimum(monkeypatch):
    """The inner Newton's extrapolated start (y_t + rho (y_t - y_(t-1))) is taken,
    and with it and without it (rho capped at 0) the ALM certifies the SDP's optimum."""
    corpus = synthetic(n=60, T=6, K=10, d=10, embeddings="unit-norm", seed=2)
    graphs = build_graphs(corpus)
    reference = sdp_reference(corpus.E, graphs)
    with_it = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    monkeypatch.setattr(svm, "NUCLEAR_EXTRAPOLATE_MAX", 0.0)
    without = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    assert with_it.details["alm_extrapolated"] > 0
    for sol in (with_it, without):
        assert sol.status == "optimal"
        assert rel(sol.W, reference) <= 1e-6
        assert certificate_holds(corpus, graphs, sol.W, sol.details["lambda"], sol.details["mu"])
    assert with_it.details["alm_newton"] != without.details["alm_newton"] or \
        with_it.details["alm_cg"] != without.details["alm_cg"]  # a different path was taken


def test_alm_in_two_threads_agrees_with_the_sdp(monkeypatch):
    """The ALM with its Newton products cut into two token halves and its preconditioner built
    and applied by two threads (forced here at K = 12; by default from K = 256 and 8 MB of
    blocks) certifies the same optimum as the independent SDP."""
    import theorycheck.model as model

    monkeypatch.setattr(model, "_worker_count", lambda: 2)
    monkeypatch.setattr(svm, "_worker_count", lambda: 2)
    monkeypatch.setattr(svm, "NUCLEAR_SPLIT_MIN_K", 2)
    monkeypatch.setattr(svm, "NUCLEAR_SPLIT_MIN_BYTES", 0)
    corpus = synthetic(n=50, T=8, K=12, d=12, embeddings="unit-norm", seed=4)
    graphs = build_graphs(corpus)
    sol = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    assert sol.status == "optimal" and sol.details["alm_cg"] > 0
    assert rel(sol.W, sdp_reference(corpus.E, graphs)) <= 1e-6
    assert certificate_holds(corpus, graphs, sol.W, sol.details["lambda"], sol.details["mu"])


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_nuclear_solvers_scale_with_the_embeddings(scale):
    # the rows are bilinear in E, so W(c E) = W(E) / c^2, while Z = sum_j lambda_j A_j (||Z||_2 = 1 at
    # the optimum) is scale-free: lambda(c E) = lambda(E) / c^2.  Before the solvers ran on E at unit
    # scale the ALM stopped at "max iterations" at both scales
    from dataclasses import replace

    corpus = synthetic(n=30, T=5, K=8, d=8, embeddings="unit-norm", seed=3)
    graphs = build_graphs(corpus)
    reference = sdp_reference(corpus.E, graphs)
    scaled = replace(corpus, E=corpus.E * scale)
    for method in ("alm", "cvxpy"):
        sol = solve_graph_svm_nuclear(scaled.E, graphs, method=method)
        assert sol.status == "optimal", method
        assert rel(sol.W * scale**2, reference) <= 1e-6, method
        assert certificate_holds(scaled, graphs, sol.W, sol.details["lambda"], sol.details["mu"], tol=1e-7), method
        assert sol.details["nuclear_norm"] == pytest.approx(np.linalg.norm(sol.W, "nuc"), rel=1e-9)


def test_screened_rows_are_checked_and_the_objective_matches_the_sdp():
    """The ALM leaves rows with a large margin out of its steps (screening) and lets them join
    when an iterate comes near them.  Here rows were screened out and some joined; the answer
    still satisfies every definition row and has the SDP's nuclear norm.  (||W||_* is the
    comparison that holds even where the minimiser is not unique.)"""
    corpus = synthetic(n=50, T=8, K=12, d=12, embeddings="unit-norm", seed=4)
    graphs = build_graphs(corpus)
    sol = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    ga, _, _, ea, _, _ = constraint_rows(graphs, reduced=True)
    assert sol.details["alm_working_rows"] < ga.size + ea.size and sol.details["alm_joins"] > 0
    assert sol.status == "optimal" and max_violation_on_definition(corpus, sol.W) <= 1e-9
    reference = np.linalg.norm(sdp_reference(corpus.E, graphs), "nuc")
    assert np.linalg.norm(sol.W, "nuc") == pytest.approx(reference, rel=1e-8)
    assert certificate_holds(corpus, graphs, sol.W, sol.details["lambda"], sol.details["mu"])


def test_cvxpy_reference_path_agrees_to_its_own_accuracy():
    corpus = synthetic(n=30, T=5, K=8, d=8, embeddings="unit-norm", seed=3)
    graphs = build_graphs(corpus)
    fast = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    reference = solve_graph_svm_nuclear(corpus.E, graphs, method="cvxpy")
    assert "cvxpy" in reference.method and rel(fast.W, reference.W) <= 1e-5
    # the ALM answer is feasible and no larger than the interior-point one (to its gap 1e-9)
    assert np.linalg.norm(fast.W, "nuc") <= np.linalg.norm(reference.W, "nuc") * (1 + 1e-9)


def test_one_query_closed_form_under_a_rotation():
    """Window "t2 t3 t1 t0 -> t3" (query t0) with orthogonal E: only column 0 of M = E W E^T is
    constrained, M[3,0] - M[b,0] >= 1 for b = 0, 1, 2.  Since ||W||_* = ||M||_* >= ||M e_0||_2, the
    optimum is rank one, M = w e_0^T with w the least-norm ranking (-1/4, -1/4, -1/4, 3/4):
    ||W||_* = sqrt(3)/2; dual lambda_b = 1/(2 sqrt 3) (Z = W / ||W||_2, sum lambda = sqrt(3)/2)."""
    E = random_orthogonal(4, seed=5)
    corpus = corpus_from_windows([[2, 3, 1, 0]], [3], ("t0", "t1", "t2", "t3"), E=E, embedding_kind="orthonormal")
    graphs = build_graphs(corpus)
    sol = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    w = np.array([-0.25, -0.25, -0.25, 0.75])
    expected = E.T @ np.outer(w, [1.0, 0.0, 0.0, 0.0]) @ E
    assert rel(sol.W, expected) <= 1e-9
    assert np.linalg.norm(sol.W, "nuc") == pytest.approx(np.sqrt(3) / 2, rel=1e-10)
    assert np.allclose(sol.details["lambda"], 1 / (2 * np.sqrt(3)), atol=1e-9)


def test_two_queries_closed_form_under_a_rotation():
    """Windows "t1 t2 -> t1" and "t1 t0 -> t1": M[1,2] - M[2,2] >= 1 and M[1,0] - M[0,0] >= 1.
    M = u v^T, u = (-1/3, 2/3, -1/3), v = e0 + e2 meets both with equality, ||M||_* = 2/sqrt(3);
    lambda = 1/sqrt(3) on both rows gives Z = lambda ((e1 - e2) e2^T + (e1 - e0) e0^T), whose
    singular values are lambda * (sqrt 3, 1), so ||Z||_2 = 1 and sum lambda = 2/sqrt(3): optimal."""
    E = random_orthogonal(3, seed=7)
    corpus = corpus_from_windows([[1, 2], [1, 0]], [1, 1], ("t0", "t1", "t2"), E=E, embedding_kind="orthonormal")
    graphs = build_graphs(corpus)
    sol = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    expected = E.T @ np.outer([-1 / 3, 2 / 3, -1 / 3], [1.0, 0.0, 1.0]) @ E
    assert rel(sol.W, expected) <= 1e-9
    assert np.linalg.norm(sol.W, "nuc") == pytest.approx(2 / np.sqrt(3), rel=1e-10)
    assert certificate_holds(corpus, graphs, sol.W, sol.details["lambda"], sol.details["mu"], tol=1e-10)


def test_a_slightly_wrong_answer_fails_the_certificate():
    corpus = synthetic(n=40, T=6, K=8, d=8, embeddings="unit-norm", seed=1)
    graphs = build_graphs(corpus)
    sol = solve_graph_svm_nuclear(corpus.E, graphs, method="alm")
    lam, mu = sol.details["lambda"], sol.details["mu"]
    assert certificate_holds(corpus, graphs, sol.W, lam, mu)
    # feasible but 1e-6 too large: the duality gap exposes it
    assert not certificate_holds(corpus, graphs, sol.W * (1 + 1e-6), lam, mu)
    # feasible, moved 1e-4 of the way towards the Frobenius Graph-SVM (a convex combination of
    # two feasible points, with a larger nuclear norm)
    moved = (1 - 1e-4) * sol.W + 1e-4 * svm.solve_dual(corpus.E, graphs).W
    assert max_violation_on_definition(corpus, moved) <= 1e-9
    assert not certificate_holds(corpus, graphs, moved, lam, mu)
    # multipliers 0.1% too large: Z leaves the spectral unit ball
    assert not certificate_holds(corpus, graphs, sol.W, lam * 1.001, mu * 1.001)


def test_without_cross_edges_the_answer_is_zero(make_corpus):
    corpus = make_corpus([(["a", "b"], "a"), (["a", "b"], "b")], "ab")  # one SCC {a, b}, no cross edge
    sol = solve_graph_svm_nuclear(corpus.E, build_graphs(corpus), method="alm")
    assert sol.status.startswith("trivial") and not sol.W.any()


def test_infeasible_input_raises(example, monkeypatch):
    """e_c = (e_a + e_b)/2 and c outranks a and b under q: the two rows sum to 0 >= 2 (E has
    dependent rows).  Both the cvxpy path (auto, d <= 48) and the ALM + Farkas LP path (what
    auto does above d = 48) raise."""
    corpus = example("infeasible")
    graphs = build_graphs(corpus)
    with pytest.raises(AssumptionViolated):
        solve_graph_svm_nuclear(corpus.E, graphs)
    assert solve_graph_svm_nuclear(corpus.E, graphs, method="alm", max_seconds=5).status != "optimal"
    monkeypatch.setattr(svm, "NUCLEAR_CVXPY_MAX_D", 0)
    with pytest.raises(AssumptionViolated) as info:
        solve_graph_svm_nuclear(corpus.E, graphs, max_seconds=5)
    assert info.value.certificate["kind"] == "farkas"


def test_auto_falls_back_to_cvxpy_then_raises_when_the_alm_does_not_certify(monkeypatch):
    corpus = synthetic(n=30, T=5, K=8, d=8, embeddings="unit-norm", seed=3)
    graphs = build_graphs(corpus)
    real = svm._solve_nuclear_alm

    def uncertified(*args):
        sol = real(*args)
        return svm.SvmSolution(sol.W, sol.method, "max iterations", sol.min_margin, sol.max_violation,
                               sol.kkt_residual, sol.min_dual, sol.solve_seconds, sol.details)

    monkeypatch.setattr(svm, "_solve_nuclear_alm", uncertified)
    assert "cvxpy" in solve_graph_svm_nuclear(corpus.E, graphs).method
    monkeypatch.setattr(svm, "NUCLEAR_CVXPY_MAX_D", 4)
    with pytest.raises(RuntimeError, match="max iterations"):
        solve_graph_svm_nuclear(corpus.E, graphs)


@pytest.mark.parametrize("halves", [False, True])
@pytest.mark.parametrize("kept", [12, 7, 1])
def test_newton_matrix_is_the_svt_derivative_between_the_row_maps(kept, halves, monkeypatch):
    """_NuclearNewtonMatrix (the weights' zero block skipped, products in buffers; whole, or as
    two token halves in two threads) equals sigma (A J A^* x + extra * x) with J, the derivative
    of SVT_sigma at M, taken here by central differences of the SVD (independent of
    _svt_derivative_weights), at full rank, half rank and rank 1; repeated products give the
    same answer (no state leaks between them)."""
    import theorycheck.model as model

    monkeypatch.setattr(model, "_worker_count", lambda: 2)  # the pool, even on one core
    corpus = synthetic(n=120, T=8, K=12, d=12, embeddings="unit-norm", seed=3)
    ga, gb, gk, ea, eb, ek = constraint_rows(build_graphs(corpus), reduced=True)
    rows = svm._NuclearRows(corpus.E, np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek])
    rng = np.random.default_rng(kept)
    U, _, Vt = np.linalg.svd(rng.standard_normal((12, 12)))
    s = np.linspace(3.0, 0.2, 12)  # sigma sits in a gap: the SVT is smooth around M
    sigma = 0.5 * (s[kept - 1] + s[kept]) if kept < 12 else 0.1
    M = (U * s) @ Vt

    def svt(A):
        u, sv, vt = np.linalg.svd(A)
        return (u * np.maximum(sv - sigma, 0.0)) @ vt

    shrunk = np.maximum(s - sigma, 0.0)
    keep_sym, keep_skew = svm._svt_derivative_weights(s, shrunk, sigma)
    extra = rng.random(rows.u.size)
    newton = svm._NuclearNewtonMatrix(rows, corpus.E @ U, corpus.E @ Vt.T, keep_sym, keep_skew, extra, sigma,
                                      int(np.count_nonzero(shrunk)), halves=halves)
    assert newton.rank == kept and len(newton.parts) == (2 if halves else 1)
    for _ in range(2):
        x = rng.standard_normal(rows.u.size)
        Z = rows.adjoint(x)
        h = 1e-5 / np.linalg.norm(Z)
        J_Z = (svt(M + h * Z) - svt(M - h * Z)) / (2 * h)
        expected = sigma * (rows.forward(J_Z) + extra * x)
        first = newton(x)
        assert rel(first, expected) <= 1e-7
        assert np.array_equal(newton(x), first)


def test_query_block_preconditioner_inverts_the_exact_diagonal_blocks(monkeypatch):
    """_NuclearQueryBlocks (blocks grouped by width, formed as batched products) applies the
    inverse of the per-query-column diagonal blocks of the Newton matrix sigma (A J A^* + D),
    here formed column by column from Hessian-vector products."""
    corpus = synthetic(n=50, T=8, K=12, d=12, embeddings="unit-norm", seed=4)
    ga, gb, gk, ea, eb, ek = constraint_rows(build_graphs(corpus), reduced=True)
    a, b, k = np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek]
    keep = (k < 6) | (np.arange(k.size) % 3 == 0)  # thin out half the columns: blocks of several widths
    a, b, k = a[keep], b[keep], k[keep]
    rng = np.random.default_rng(0)
    rows = svm._NuclearRows(corpus.E, a, b, k)
    W = rng.standard_normal((12, 12))
    U, s, Vt = np.linalg.svd(W)
    sigma = float(np.median(s))
    keep_sym, keep_skew = svm._svt_derivative_weights(s, np.maximum(s - sigma, 0.0), sigma)
    EU, EV = corpus.E @ U, corpus.E @ Vt.T
    extra = rng.random(a.size) * (rng.random(a.size) < 0.3) + 1e-3

    hessian = svm._NuclearNewtonMatrix(rows, EU, EV, keep_sym, keep_skew, extra, sigma,
                                       int(np.count_nonzero(s > sigma)))
    dense = np.column_stack([hessian(e) for e in np.eye(a.size)])
    assert np.allclose(dense, dense.T, atol=1e-10 * np.abs(dense).max())
    blocks = svm._NuclearQueryBlocks(rows)
    assert len(blocks.groups) > 1  # several widths: the grouping is exercised
    blocks.build(EU, EV, keep_sym, keep_skew, extra, sigma)
    r = rng.standard_normal(a.size)
    expected = np.empty(a.size)
    for column in np.unique(k):
        pick = np.flatnonzero(k == column)
        expected[pick] = np.linalg.solve(dense[np.ix_(pick, pick)], r[pick])
    assert rel(blocks(r), expected) <= 1e-10
    # built and applied by two threads, half the groups each: the same blocks, bit for bit
    import theorycheck.model as model

    monkeypatch.setattr(model, "_worker_count", lambda: 2)
    monkeypatch.setattr(svm, "_worker_count", lambda: 2)
    monkeypatch.setattr(svm, "NUCLEAR_SPLIT_MIN_BYTES", 0)
    split = svm._NuclearQueryBlocks(rows)
    assert len(split.halves) == 2 and sorted(split.halves[0] + split.halves[1]) == list(range(len(split.groups)))
    split.build(EU, EV, keep_sym, keep_skew, extra, sigma)
    assert np.array_equal(split(r), blocks(r))
    # the streaming apply (einsum, for inverses beyond the cache) inverts the same blocks
    assert not blocks.streaming
    monkeypatch.setattr(svm, "NUCLEAR_STREAM_MIN_BYTES", 0)
    streaming = svm._NuclearQueryBlocks(rows)
    assert streaming.streaming
    streaming.build(EU, EV, keep_sym, keep_skew, extra, sigma)
    assert rel(streaming(r), expected) <= 1e-10


def test_conditioning_benchmark_forms_the_solvers_newton_matrix():
    """benchmarks/nuclear_conditioning.py (the README's condition numbers) forms the captured Newton
    system densely from its rotated rows p_j q_k^T; that matrix must be the solver's product, and
    the Sym part of J on the unshrunk block it splits off has rank at most r (r + 1) / 2."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    try:
        import nuclear_conditioning
    finally:
        sys.path.pop(0)
    out = nuclear_conditioning.main(["--n", "300", "--K", "16", "--min-cg", "10"])
    assert out["product_error"] <= 1e-12
    assert 0 < out["bbt_rank"] <= out["rank"] * (out["rank"] + 1) // 2 < out["rows"]  # dim Sym(r): a real split
    assert [row["preconditioner"] for row in out["table"]][0].startswith("block-Jacobi of N")
    assert all(np.isfinite(row["condition"]) and row["condition"] >= 1.0 for row in out["table"])
    assert out["cg"] >= 10  # the captured system is one that needed --min-cg iterations


def test_equality_projection_dense_and_cg_paths_agree(monkeypatch):
    """The SCC-equality projection of the certificate: the dense Cholesky path and the CG path
    (above NUCLEAR_DENSE_EQ_MAX rows) give the same nearest W, exact on every equality row."""
    corpus = synthetic(n=60, T=6, K=10, d=10, embeddings="unit-norm", seed=2)
    *_, ea, eb, ek = constraint_rows(build_graphs(corpus), reduced=True)
    assert ea.size > 0
    W = np.random.default_rng(1).standard_normal((10, 10))
    dense = svm._EqualityProjection(corpus.E, ea, eb, ek)(W)
    monkeypatch.setattr(svm, "NUCLEAR_DENSE_EQ_MAX", 0)
    iterative = svm._EqualityProjection(corpus.E, ea, eb, ek)(W)
    rows = svm._NuclearRows(corpus.E, ea, eb, ek)
    assert np.abs(rows.forward(dense)).max() <= 1e-12 and np.abs(rows.forward(iterative)).max() <= 1e-12
    assert rel(dense, iterative) <= 1e-10
    # the nearest point: W - projection lies in the span of the equality rows (A_eq^* z)
    z = np.linalg.lstsq(np.column_stack([rows.adjoint(e).ravel() for e in np.eye(ea.size)]),
                        (W - dense).ravel(), rcond=None)[0]
    assert rel(rows.adjoint(z), W - dense) <= 1e-10
