"""The active-set Graph-SVM for general embeddings (issue 11 item 1; THEORY.md §3.1-§3.3).

References: the cvxpy formulation on the d×d matrix (``solve_general``) where it
finishes, and the KKT conditions of §3.1 checked from scratch: multipliers of the
equalities recovered by least squares from the dense constraint rows, stationarity
W = sum_j lambda_j (x_a - x_b) x_k^T + sum_l nu_l (x_a - x_r) x_k^T, lambda >= 0,
primal feasibility and complementary slackness.
"""

from __future__ import annotations

import numpy as np
import pytest

from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.graphs import build_graphs
from theorycheck.svm import (
    constraint_matrix,
    constraint_rows,
    solve_dual,
    solve_general,
    solve_graph_svm,
)


def rel(A, B) -> float:
    return float(np.linalg.norm(A - B) / max(np.linalg.norm(B), 1e-300))


def check_kkt(E, graphs, sol, tol=1e-8):
    """Independent KKT check of a Graph-SVM solution with its inequality multipliers."""
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    A_ge = constraint_matrix(E, ga, gb, gk).toarray()
    A_eq = constraint_matrix(E, ea, eb, ek).toarray()
    w = sol.W.ravel()
    lam = sol.details["lambda"]
    scale = max(1.0, float(np.linalg.norm(w)))
    margins = A_ge @ w
    assert margins.min() >= 1 - 1e-9  # primal feasibility (issue: violation <= 1e-9)
    assert A_eq.size == 0 or np.abs(A_eq @ w).max() <= 1e-9
    assert lam.min() >= -tol  # dual feasibility
    assert np.abs(lam * (margins - 1)).max() <= tol * scale  # complementary slackness
    residual = w - A_ge.T @ lam
    if A_eq.size:
        nu, *_ = np.linalg.lstsq(A_eq.T, residual, rcond=None)
        residual = residual - A_eq.T @ nu
    assert np.linalg.norm(residual) <= tol * scale  # stationarity
    assert margins.min() == pytest.approx(1.0, abs=1e-9)  # some constraint is active


CASES = [
    # (n, T, K, d, embeddings, graphs, seed)
    (30, 5, 8, 8, "unit-norm", "cyclic", 0),
    (40, 6, 10, 10, "unit-norm", "cyclic", 1),
    (12, 4, 10, 10, "unit-norm", "acyclic", 2),
    (50, 4, 9, 12, "unit-norm", "any", 3),  # K < d: rank K, not square
    (30, 5, 8, 10, "equi-correlated", "cyclic", 4),
    (120, 8, 16, 16, "unit-norm", "any", 5),
]


@pytest.mark.parametrize("n,T,K,d,embeddings,graphs,seed", CASES)
def test_dual_matches_cvxpy_and_kkt(n, T, K, d, embeddings, graphs, seed):
    corpus = synthetic(n=n, T=T, K=K, d=d, embeddings=embeddings, graphs=graphs, seed=seed)
    g = build_graphs(corpus)
    fast = solve_dual(corpus.E, g)
    reference = solve_general(corpus.E, g)
    assert fast.status == "optimal"
    assert rel(fast.W, reference.W) <= 1e-6
    assert fast.max_violation <= 1e-9
    assert fast.kkt_residual <= 1e-8
    check_kkt(corpus.E, g, fast)


def test_general_dispatch_uses_the_dual_for_independent_rows_and_cvxpy_otherwise():
    corpus = synthetic(n=20, T=4, K=6, d=6, embeddings="unit-norm", seed=7)
    assert "active set" in solve_graph_svm(corpus.E, build_graphs(corpus)).method
    wide = synthetic(n=20, T=4, K=6, d=4, embeddings="unit-norm", seed=7)  # K > d
    try:
        method = solve_graph_svm(wide.E, build_graphs(wide)).method
    except Exception as exc:  # infeasible: the cvxpy path's certificate
        assert getattr(exc, "certificate", None) is not None
    else:
        assert "cvxpy" in method


def test_dual_trivial_without_cross_edges(make_corpus):
    rng = np.random.default_rng(0)
    E = rng.standard_normal((3, 3))
    corpus = make_corpus([(["a", "b", "q"], "a"), (["b", "a", "q"], "b"), (["q", "a", "q"], "q"),
                          (["a", "q", "q"], "a")], "abq", E=E)
    g = build_graphs(corpus)
    sol = solve_dual(E, g)
    ref = solve_general(E, g)
    assert np.linalg.norm(ref.W) <= 1e-8 * max(1.0, np.linalg.norm(E) ** 2) or rel(sol.W, ref.W) <= 1e-6
    assert sol.max_violation <= 1e-9


def test_dual_degenerate_duplicate_windows_agree():
    """Duplicating windows changes no constraint (P17) and not the active-set answer."""
    rng = np.random.default_rng(11)
    K = 7
    windows = [rng.permutation(K)[:4] for _ in range(25)]
    labels = [int(w[rng.integers(0, 4)]) for w in windows]
    E = rng.standard_normal((K, K))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    one = corpus_from_windows(windows, labels, tuple("abcdefg"), E=E)
    two = corpus_from_windows(windows * 2, labels * 2, tuple("abcdefg"), E=E)
    a, b = solve_dual(E, build_graphs(one)), solve_dual(E, build_graphs(two))
    assert rel(a.W, b.W) <= 1e-9
    check_kkt(E, build_graphs(one), a)


@pytest.mark.slow
def test_dual_at_paper_size_satisfies_kkt():
    """n = 2000, T = 8, K = d = 64 unit-norm (the issue's size; cvxpy does not finish)."""
    corpus = synthetic(n=2000, T=8, K=64, d=64, embeddings="unit-norm", seed=0)
    g = build_graphs(corpus.realizable())
    sol = solve_dual(corpus.E, g)
    assert sol.status == "optimal" and sol.max_violation <= 1e-9
    check_kkt(corpus.E, g, sol, tol=1e-7)
