"""The active-set Graph-SVM for general embeddings (issue 11 item 1; THEORY.md §3.1-§3.3).

References: the cvxpy formulation on the d×d matrix (``solve_general``) where it
finishes, and the KKT conditions of §3.1 checked from scratch: multipliers of the
equalities recovered by least squares from the dense constraint rows, stationarity
W = sum_j lambda_j (x_a - x_b) x_k^T + sum_l nu_l (x_a - x_r) x_k^T, lambda >= 0,
primal feasibility and complementary slackness; feasibility also on every edge of the
TPGs as THEORY.md §2.1 defines them (tests/reference.py).  The solver's building blocks
(forest potentials, consistent joins, the null-space inverse, the block preconditioner)
are checked against dense linear algebra on the constraint rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import definition_edges, scc_maps, windows_of

import theorycheck.svm as svm
from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.errors import AssumptionViolated
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


def check_definition_feasible(corpus, W):
    """Margins >= 1 - 1e-9 on every cross-SCC edge of every G^(k) and ties inside SCCs,
    with the edges and SCCs taken from the definition (not the library's graphs)."""
    windows, labels = windows_of(corpus)
    edges, _ = definition_edges(windows, labels)
    sccs = scc_maps(windows, labels)
    M = corpus.E @ W @ corpus.E.T
    for k, pairs in edges.items():
        for a, b in pairs:
            gap = M[a, k] - M[b, k]
            if b in sccs[k][a]:
                assert abs(gap) <= 1e-9
            else:
                assert gap >= 1 - 1e-9


CASES = [
    # (n, T, K, d, embeddings, graphs, seed)
    (30, 5, 8, 8, "unit-norm", "cyclic", 0),
    (40, 6, 10, 10, "unit-norm", "cyclic", 1),
    (12, 4, 10, 10, "unit-norm", "acyclic", 2),
    (50, 4, 9, 12, "unit-norm", "any", 3),  # K < d: rank K, not square
    (30, 5, 8, 10, "equi-correlated", "cyclic", 4),
    (120, 8, 16, 16, "unit-norm", "any", 5),
    (400, 8, 24, 24, "unit-norm", "any", 5),  # some joins close inconsistent cycles (exchanges)
]


@pytest.fixture(params=["direct", "cg", "cg-then-direct"])
def dual_path(request, monkeypatch):
    """The inner solvers: the exact null-space inverse, CG with the block preconditioner,
    and CG that misses its budget and hands over to the null-space inverse."""
    if request.param == "cg":
        monkeypatch.setattr(svm, "DIRECT_MAX_COMPONENTS", 0)
        monkeypatch.setattr(svm, "DIRECT_ALWAYS_COMPONENTS", 0)
    elif request.param == "cg-then-direct":
        monkeypatch.setattr(svm, "DIRECT_ALWAYS_COMPONENTS", 0)
        monkeypatch.setattr(svm, "CG_BUDGET", 2)
    return request.param


@pytest.mark.parametrize("n,T,K,d,embeddings,graphs,seed", CASES)
def test_dual_matches_cvxpy_and_kkt(n, T, K, d, embeddings, graphs, seed, dual_path):
    corpus = synthetic(n=n, T=T, K=K, d=d, embeddings=embeddings, graphs=graphs, seed=seed)
    g = build_graphs(corpus)
    fast = solve_dual(corpus.E, g)
    reference = solve_general(corpus.E, g)
    assert fast.status == "optimal"
    if dual_path == "cg":
        assert fast.details["direct_solves"] == 0 and fast.details["block_factorizations"] > 0
    elif dual_path == "direct":
        assert fast.details["direct_solves"] > 0 and fast.details["block_factorizations"] == 0
    else:
        assert fast.details["direct_solves"] > 0 and fast.details["block_factorizations"] > 0
    assert rel(fast.W, reference.W) <= 1e-6
    assert fast.max_violation <= 1e-9
    assert fast.kkt_residual <= 1e-8
    check_kkt(corpus.E, g, fast)
    check_definition_feasible(corpus, fast.W)


def test_exchange_case_really_exchanges():
    """The last case above is there for the exchange step; make sure it still takes it."""
    corpus = synthetic(n=400, T=8, K=24, d=24, embeddings="unit-norm", seed=5)
    assert solve_dual(corpus.E, build_graphs(corpus)).details["exchanges"] > 0


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


def test_infeasible_wide_embeddings_certificate_verifies_independently():
    """K > d: Graph-SVM infeasible; the Farkas certificate sum_j y_j (x_a - x_b) x_k^T
    + sum_l z_l (x_a - x_r) x_k^T = 0, y >= 0, sum y = 1 is rebuilt here from the
    definition's edges and SCCs, so 0 = <that, W> >= 1 for any feasible W."""
    corpus = synthetic(n=60, T=5, K=12, d=3, embeddings="unit-norm", seed=2)
    with pytest.raises(AssumptionViolated) as info:
        solve_graph_svm(corpus.E, build_graphs(corpus))
    cert = info.value.certificate
    assert cert["kind"] == "farkas"
    E = corpus.E
    windows, labels = windows_of(corpus)
    edges, _ = definition_edges(windows, labels)
    sccs = scc_maps(windows, labels)
    combo = np.zeros((E.shape[1], E.shape[1]))
    total = 0.0
    for row in cert["inequalities"]:
        a, b, k = row["a"], row["b"], row["k"]
        assert b not in sccs[k][a]  # a cross-SCC pair ...
        reach = {a}  # ... with b reachable from a in G^(k) (so the constraint really holds)
        frontier = [a]
        while frontier:
            x = frontier.pop()
            for s, t in edges[k]:
                if s == x and t not in reach:
                    reach.add(t)
                    frontier.append(t)
        assert b in reach
        assert row["y"] >= 0
        total += row["y"]
        combo += row["y"] * np.outer(E[a] - E[b], E[k])
    for row in cert["equalities"]:
        assert row["b"] in sccs[row["k"]][row["a"]]
        combo += row["z"] * np.outer(E[row["a"]] - E[row["b"]], E[row["k"]])
    assert total == pytest.approx(1.0, abs=1e-9)
    assert np.abs(combo).max() <= 1e-8


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


# --------------------------------------------------------------------------- building blocks


def random_forest_rows(rng, n_nodes, n_rows):
    """Random rows (u, v) on n_nodes nodes, cycles allowed."""
    u = rng.integers(0, n_nodes, n_rows)
    v = rng.integers(0, n_nodes, n_rows)
    keep = u != v
    return u[keep], v[keep]


def test_forest_potentials_solve_the_tree_rows_and_subtree_sums_invert_the_transpose():
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(3)
    n = 40
    u, v = random_forest_rows(rng, n, 45)
    forest = svm._Forest(n, u, v)
    graph = np.zeros((n, n))
    graph[u, v] = 1
    assert forest.n_comp == connected_components(graph, directed=False)[0]
    assert forest.row.size == n - forest.n_comp  # a spanning forest
    tu, tv = u[forest.row], v[forest.row]
    gap = rng.standard_normal(forest.row.size)
    phi = forest.potentials(gap)
    assert np.allclose(phi[tu] - phi[tv], gap, atol=1e-12)  # D P = I
    mu = rng.standard_normal(forest.row.size)
    values = np.zeros(n)
    np.add.at(values, tu, mu)
    np.add.at(values, tv, -mu)  # D^T mu
    assert np.allclose(forest.subtree_sums(values), mu, atol=1e-12)
    # and every path's signed rows telescope: e_a - e_b = sum sigma (e_u - e_v)
    comp = forest.comp
    for a, b in [(i, j) for i in range(n) for j in range(n) if i < j and comp[i] == comp[j]][:30]:
        on_path, sigma = forest.path(a, b)
        combo = np.zeros(n)
        np.add.at(combo, tu[on_path], sigma)
        np.add.at(combo, tv[on_path], -sigma)
        target = np.zeros(n)
        target[a], target[b] = 1, -1
        assert np.array_equal(combo, target)


def test_consistent_joins_accepts_exactly_the_rows_that_fit_the_potentials():
    # base: 0 -> 1 -> 2 (gaps 1): phi_0 - phi_2 = 2
    forest = svm._Forest(6, np.array([0, 1]), np.array([1, 2]))
    phi = forest.potentials(np.ones(forest.row.size))
    u = np.array([0, 0, 2, 0, 3, 4, 5])
    v = np.array([2, 2, 3, 3, 0, 5, 4])
    gap = np.array([1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 1.0])
    accept = svm._consistent_joins(forest, phi, u, v, gap)
    # 0->2 gap 1 contradicts the path (2); gap 2 agrees; 2->3 merges; 0->3 = 3 then agrees;
    # 3->0 gap 1 contradicts; 4->5 merges two singletons; 5->4 gap 1 then contradicts
    assert accept.tolist() == [False, True, True, True, False, True, False]


def tree_rows(corpus):
    """Tree rows of (all reduced inequalities + equalities) of a corpus, as in the solver."""
    g = build_graphs(corpus)
    K = corpus.K
    ga, gb, gk, ea, eb, ek = constraint_rows(g, reduced=True)
    a, b, k = np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek]
    forest = svm._Forest(K * K, a * K + k, b * K + k)
    t = forest.row
    return forest, a[t], b[t], k[t]


def test_null_space_inverse_equals_the_dense_dual_inverse():
    corpus = synthetic(n=200, T=6, K=12, d=12, embeddings="unit-norm", seed=8)
    E = corpus.E
    forest, a, b, k = tree_rows(corpus)
    A = constraint_matrix(E, a, b, k).toarray()
    H = A @ A.T  # <A_j, A_j'>
    gap = np.random.default_rng(0).standard_normal(a.size)
    Ginv = np.linalg.inv(E @ E.T)
    mu = svm._NullSpaceInverse(0.5 * (Ginv + Ginv.T), forest)(gap)
    assert np.allclose(H @ mu, gap, atol=1e-7)
    assert rel(mu, np.linalg.solve(H, gap)) <= 1e-7


def test_block_preconditioner_inverts_the_per_column_blocks_of_the_dense_hessian():
    corpus = synthetic(n=200, T=6, K=12, d=12, embeddings="unit-norm", seed=9)
    E = corpus.E
    forest, a, b, k = tree_rows(corpus)
    A = constraint_matrix(E, a, b, k).toarray()
    H = A @ A.T
    blocks = np.where(k[:, None] == k[None, :], H, 0.0)
    rows = np.random.default_rng(1).permutation(a.size)  # any global ids, any order
    precondition = svm._ColumnBlockPreconditioner(E @ E.T)
    precondition.build(rows, k, a, b)
    r = np.random.default_rng(2).standard_normal(a.size)
    assert np.allclose(blocks @ precondition(r), r, atol=1e-8)


def test_pcg_solves_a_spd_system_to_its_tolerance():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 30))
    H = X @ X.T + 0.1 * np.eye(30)
    b = rng.standard_normal(30)
    x, residual, iterations = svm._pcg(lambda y: H @ y, lambda r: r / np.diag(H), b, np.zeros(30), 1e-11, 1000)
    assert np.abs(b - H @ x).max() <= 1e-11 and residual <= 1e-11 and iterations > 0


# --------------------------------------------------------------------------- paper size (slow)


def check_kkt_matrix_free(E, graphs, sol, tol=1e-7):
    """KKT at sizes where the dense rows do not fit: margins from E W E^T, stationarity
    summed row by row in chunks with the reported multipliers."""
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    M = E @ sol.W @ E.T
    margins = M[ga, gk] - M[gb, gk]
    lam = sol.details["lambda"]
    nu = sol.details["nu"]
    scale = max(1.0, float(np.linalg.norm(sol.W)))
    assert margins.min() >= 1 - 1e-9
    assert np.abs(M[ea, ek] - M[eb, ek]).max(initial=0.0) <= 1e-9
    assert lam.min() >= -tol
    assert np.abs(lam * (margins - 1)).max() <= tol * scale
    combo = np.zeros_like(sol.W)
    a, b, k, weight = np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek], np.r_[lam, nu]
    for lo in range(0, a.size, 4096):
        s = slice(lo, lo + 4096)
        combo += ((E[a[s]] - E[b[s]]) * weight[s][:, None]).T @ E[k[s]]
    assert np.linalg.norm(sol.W - combo) <= tol * scale


@pytest.mark.slow
def test_dual_at_paper_size_satisfies_kkt():
    """n = 2000, T = 8, K = d = 64 unit-norm (the issue's size; cvxpy does not finish)."""
    corpus = synthetic(n=2000, T=8, K=64, d=64, embeddings="unit-norm", seed=0)
    g = build_graphs(corpus.realizable())
    sol = solve_dual(corpus.E, g)
    assert sol.status == "optimal" and sol.max_violation <= 1e-9
    check_kkt(corpus.E, g, sol, tol=1e-7)


@pytest.mark.slow
def test_dual_at_the_large_size_satisfies_kkt():
    """n = 10000, T = 8, K = d = 256 unit-norm (the issue's second size; CG path)."""
    corpus = synthetic(n=10000, T=8, K=256, d=256, embeddings="unit-norm", seed=0)
    g = build_graphs(corpus.realizable())
    sol = solve_dual(corpus.E, g)
    assert sol.status == "optimal" and sol.max_violation <= 1e-9
    check_kkt_matrix_free(corpus.E, g, sol)


def test_dispatch_does_not_return_an_unconverged_active_set_answer(monkeypatch):
    """A non-optimal status from the active-set solver: cvxpy for small d, an error above."""
    import dataclasses

    real = svm.solve_dual

    def stalled(E, graphs, *args, **kwargs):
        return dataclasses.replace(real(E, graphs), status="max iterations")

    monkeypatch.setattr(svm, "solve_dual", stalled)
    corpus = synthetic(n=30, T=5, K=8, d=8, embeddings="unit-norm", seed=0)
    assert "cvxpy" in solve_graph_svm(corpus.E, build_graphs(corpus), method="general").method
    assert solve_graph_svm(corpus.E, build_graphs(corpus), method="dual").status == "max iterations"
    wide = synthetic(n=60, T=5, K=50, d=50, embeddings="unit-norm", seed=0)
    with pytest.raises(RuntimeError, match="status 'max iterations'"):
        solve_graph_svm(wide.E, build_graphs(wide), method="general")


# --------------------------------------------------------------------------- nuclear-norm variant


def nuclear_reference(corpus) -> float:
    """min ||W||_* as the SDP min tr(X) / 2, X = [[U, W], [W^T, V]] >= 0, written here
    independently: one row per edge of the transitive reduction of each condensation
    (networkx, from the definition's edges; Clarabel fails on the SDP with every redundant
    edge) and ties of each SCC member with the SCC's smallest token."""
    import cvxpy as cp
    import networkx as nx

    windows, labels = windows_of(corpus)
    edges, _ = definition_edges(windows, labels)
    sccs = scc_maps(windows, labels)
    E = corpus.E
    d = E.shape[1]
    X = cp.Variable((2 * d, 2 * d), PSD=True)
    W = X[:d, d:]
    cons = []
    for k, pairs in edges.items():
        graph = nx.DiGraph()
        graph.add_edges_from(pairs)
        cond = nx.condensation(graph)
        for A, B in nx.transitive_reduction(cond).edges():
            a, b = min(cond.nodes[A]["members"]), min(cond.nodes[B]["members"])
            cons.append((E[a] - E[b]) @ W @ E[k] >= 1)
        for a, members in sccs[k].items():
            if a != min(members):
                cons.append((E[a] - E[min(members)]) @ W @ E[k] == 0)
    problem = cp.Problem(cp.Minimize(0.5 * cp.trace(X)), cons)
    problem.solve(solver="CLARABEL")  # default tolerances (1e-8)
    assert problem.status.startswith("optimal")
    return float(problem.value)


@pytest.mark.parametrize("n,K,seed", [(40, 8, 1), (60, 10, 2)])
def test_nuclear_matches_an_independent_sdp_and_certifies_its_gap(n, K, seed):
    corpus = synthetic(n=n, T=6, K=K, d=K, embeddings="unit-norm", seed=seed)
    sol = svm.solve_graph_svm_nuclear(corpus.E, build_graphs(corpus))
    nuclear = float(np.linalg.norm(sol.W, "nuc"))
    assert nuclear == pytest.approx(nuclear_reference(corpus), rel=1e-6)
    assert sol.max_violation <= 1e-8
    check_definition_feasible_tol(corpus, sol.W, 1e-8)
    assert sol.kkt_residual <= 1e-6 and sol.min_dual >= -1e-8
    # the lower bound is a valid one (below the independent optimum) and close
    assert sol.details["dual_lower_bound"] <= nuclear_reference(corpus) * (1 + 1e-9)
    assert sol.details["relative_gap"] <= 1e-6


def check_definition_feasible_tol(corpus, W, tol):
    windows, labels = windows_of(corpus)
    edges, _ = definition_edges(windows, labels)
    sccs = scc_maps(windows, labels)
    M = corpus.E @ W @ corpus.E.T
    for k, pairs in edges.items():
        for a, b in pairs:
            gap = M[a, k] - M[b, k]
            assert abs(gap) <= tol if b in sccs[k][a] else gap >= 1 - tol
