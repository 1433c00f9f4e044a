"""Graph-SVM (THEORY.md §3; predictions P2-P5, P17 for W^svm).

Expected values come from hand-solved QPs (verified below in exact rational arithmetic
through their KKT conditions), from an all-reachable-pairs formulation solved here in
cvxpy, and from the agreement of the two library paths.
"""

from __future__ import annotations

from fractions import Fraction

import cvxpy as cp
import networkx as nx
import numpy as np
import pytest
from reference import (
    cyclic_basis,
    definition_edges,
    random_windows,
    scc_maps,
    unit_rows,
    windows_of,
)

from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.corpus.types import embedding_scale
from theorycheck.errors import AssumptionViolated
from theorycheck.graphs import build_graphs
from theorycheck.svm import _ranking_qp, solve_dual, solve_general, solve_graph_svm


def rel(A, B) -> float:
    return float(np.linalg.norm(A - B) / max(np.linalg.norm(B), 1e-300))


def column(corpus, W, query: str) -> list[float]:
    return W[:, corpus.vocab.index(query)].tolist()


# --------------------------------------------------------------------------- hand-solved toys
#
# One-hot embeddings: W^svm = sum_k sigma^(k) e_k^T where sigma^(k) solves
#   min ||sigma||^2  s.t.  sigma_a - sigma_b >= 1 on cross-SCC edges, = 0 inside SCCs   (§3.2).
# Chain, G^(q) = {a->b, a->q, b->c, b->q}, order (a, b, c, q):
#   guess active a-b, b-c, b-q (a-q slack):  sigma = (s+1, s, s-1, s-1);
#   stationarity 2 sigma = sum_j lambda_j (e_src - e_dst) forces 1^T sigma = 0 -> 4s - 1 = 0, s = 1/4,
#   sigma = (5/4, 1/4, -3/4, -3/4); lambda_ab = 2 sigma_a = 5/2, lambda_bc = -2 sigma_c = 3/2,
#   lambda_bq = -2 sigma_q = 3/2, and at b: 2 sigma_b = 1/2 = -5/2 + 3/2 + 3/2.  a-q: slack 2 - 1 > 0.

CHAIN_SIGMA = [Fraction(5, 4), Fraction(1, 4), Fraction(-3, 4), Fraction(-3, 4)]
CHAIN_EDGES = {("a", "b"): Fraction(5, 2), ("a", "q"): Fraction(0), ("b", "c"): Fraction(3, 2),
               ("b", "q"): Fraction(3, 2)}


def test_chain_hand_solution_satisfies_kkt_exactly():
    pos = {t: i for i, t in enumerate("abcq")}
    stationarity = [2 * s for s in CHAIN_SIGMA]
    for (a, b), lam in CHAIN_EDGES.items():
        margin = CHAIN_SIGMA[pos[a]] - CHAIN_SIGMA[pos[b]]
        assert margin >= 1 and lam >= 0 and lam * (margin - 1) == 0  # primal, dual, complementary
        stationarity[pos[a]] -= lam
        stationarity[pos[b]] += lam
    assert stationarity == [0, 0, 0, 0]


@pytest.mark.parametrize("method", ["orthonormal", "general"])
def test_chain_closed_form(example, method):
    corpus = example("chain")
    sol = solve_graph_svm(corpus.E, build_graphs(corpus), method=method)
    expected = np.zeros((4, 4))
    expected[:, 3] = [float(s) for s in CHAIN_SIGMA]
    np.testing.assert_allclose(sol.W, expected, atol=1e-8)
    assert sol.min_margin == pytest.approx(1.0, abs=1e-8)
    assert sol.max_violation <= 1e-8
    assert sol.kkt_residual <= 1e-7 and sol.min_dual >= -1e-9


def test_chain_solver_duals_match_hand_multipliers(example):
    # The per-query ranking QP minimises sum_C |C| v_C^2, whose multipliers are those derived above.
    corpus = example("chain")
    g = build_graphs(corpus)
    value, duals, _ = _ranking_qp(g.scc_size.astype(float), g.cond_src, g.cond_dst)
    token_of_scc = {int(g.scc[p]): corpus.vocab[g.pair_token[p]] for p in range(g.n_pairs)}
    got = {(token_of_scc[s], token_of_scc[t]): lam for s, t, lam in zip(g.cond_src, g.cond_dst, duals, strict=True)}
    assert set(got) == set(CHAIN_EDGES)
    for edge, lam in CHAIN_EDGES.items():
        assert got[edge] == pytest.approx(float(lam), abs=1e-6)
    assert {token_of_scc[s]: v for s, v in enumerate(value)} == pytest.approx(
        {t: float(s) for t, s in zip("abcq", CHAIN_SIGMA, strict=True)}, abs=1e-8)


def test_ranking_qp_polishes_degenerate_active_sets():
    # Two disjoint diamonds 0->1, 0->2, 1->3, 2->3 (unit weights).  By symmetry v1 = v2 = s; all four
    # edges tight: v0 = s+1, v3 = s-1, sum v = 0 -> s = 0: v = (1, 0, 0, -1), every multiplier 1.
    # The four tight rows of a diamond are linearly dependent (an undirected cycle), so the
    # active-set system is singular; the polish must still land on the optimum.
    src = np.array([0, 0, 1, 2, 4, 4, 5, 6])
    dst = np.array([1, 2, 3, 3, 5, 6, 7, 7])
    value, _, status = _ranking_qp(np.ones(8), src, dst)
    np.testing.assert_allclose(value, [1, 0, 0, -1] * 2, atol=1e-12)
    assert "polish" in status

# --------------------------------------------------------------------------- sink merging
#
# A sink x of a condensation DAG enters only v_p - v_x >= 1, so v_x = min(0, min_p v_p - 1): sinks
# with one parent set share one value, and the QP over the merged variables has the same minimiser.


def sink_heavy_dag(rng: np.random.Generator, n_core: int, n_sink: int, n_sets: int):
    """A DAG on a small core (edges i -> j, i < j) plus many sinks drawing their parents from a
    few parent sets, so that merging has groups of several members and singletons alike."""
    pairs = [(i, j) for i in range(n_core) for j in range(i + 1, n_core) if rng.random() < 0.3]
    parent_sets = [sorted(rng.choice(n_core, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(n_sets)]
    for x in range(n_core, n_core + n_sink):
        pairs += [(p, x) for p in parent_sets[rng.integers(n_sets)]]
    src, dst = np.array(pairs).T
    return rng.integers(1, 4, size=n_core + n_sink).astype(float), src, dst


@pytest.mark.parametrize("seed", range(4))
def test_merged_sinks_share_a_parent_set_and_keep_the_minimiser(seed):
    from theorycheck.svm import _merge_sinks

    rng = np.random.default_rng(seed)
    size, src, dst = sink_heavy_dag(rng, n_core=12, n_sink=60, n_sets=5)
    merged = _merge_sinks(size, src, dst)
    parents = {x: frozenset(src[dst == x].tolist()) for x in set(dst.tolist()) - set(src.tolist())}
    by_node = {}
    for x, p in parents.items():
        by_node.setdefault(int(merged.node[x]), set()).add(p)
    assert all(len(sets) == 1 for sets in by_node.values())  # a group never mixes parent sets
    assert len(by_node) == len(set(parents.values()))  # and one parent set is one group
    assert merged.size.sum() == pytest.approx(size.sum())
    # the merged QP's minimiser, expanded, equals cvxpy's on the unmerged QP (to the interior
    # point's accuracy at degenerate rows), and meets the unmerged QP's KKT conditions
    v = cp.Variable(size.size)
    cp.Problem(cp.Minimize(size @ cp.square(v)), [v[src] - v[dst] >= 1]).solve(
        solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    value, duals, status = _ranking_qp(merged.size, merged.src, merged.dst)
    np.testing.assert_allclose(value[merged.node], v.value, atol=1e-5)
    margin = value[merged.node][src] - value[merged.node][dst]
    assert margin.min() >= 1 - 1e-12
    # the split multipliers satisfy stationarity of the unmerged QP: 2 |C| v = out-flow - in-flow
    lam = duals[merged.edge] * merged.share
    flow = np.bincount(src, lam, minlength=size.size) - np.bincount(dst, lam, minlength=size.size)
    np.testing.assert_allclose(2 * size * value[merged.node], flow, atol=1e-6)
    assert lam.min() >= -1e-9 and np.abs(lam * (margin - 1)).max() <= 1e-9


def test_sink_merge_falls_back_when_the_parent_hash_collides(monkeypatch):
    # All parent keys equal: every sink with the same in-degree hashes alike, the exact check
    # must see that the parent sets differ and leave every hashed (several-parent) sink on its
    # own; single-parent sinks are grouped by their parent, which needs no hash.
    from theorycheck import svm

    class ConstantKeys:
        def __init__(self, seed):
            pass

        def integers(self, low, high, size, dtype):
            return np.full(size, 7, dtype=dtype)

    size, src, dst = sink_heavy_dag(np.random.default_rng(11), n_core=8, n_sink=30, n_sets=4)
    monkeypatch.setattr(svm.np.random, "default_rng", ConstantKeys)
    merged = svm._merge_sinks(size, src, dst)
    sinks = sorted(set(dst.tolist()) - set(src.tolist()))
    parents = {x: frozenset(src[dst == x].tolist()) for x in sinks}
    several = [x for x in sinks if len(parents[x]) > 1]
    single = [x for x in sinks if len(parents[x]) == 1]
    assert len(several) >= 5 and len(set(parents[x] for x in single)) < len(single)  # both kinds occur
    assert len(set(merged.node[several].tolist())) == len(several)
    assert not set(merged.node[several].tolist()) & set(merged.node[single].tolist())
    for x in single:  # grouped exactly by the parent
        assert {parents[y] for y in single if merged.node[y] == merged.node[x]} == {parents[x]}
    assert len(set(merged.node[single].tolist())) == len({parents[x] for x in single})


def test_orthonormal_path_reports_the_merge_on_text(make_corpus):
    # real English windows: most SCCs are sinks (never a label), so the merged QP is smaller,
    # and the answer still meets the KKT conditions of the unmerged one
    from pydoc_data.topics import topics

    from theorycheck.corpus.readers import corpus_from_documents

    corpus = corpus_from_documents([topics["if"] + topics["while"] + topics["for"]], window=8, vocab=120).realizable()
    sol = solve_graph_svm(corpus.E, build_graphs(corpus))
    assert sol.details["merged_variables"] < sol.details["variables"]
    # the polished multipliers certify optimality to rounding; cvxpy agrees to its own accuracy
    assert sol.max_violation <= 1e-12 and sol.kkt_residual <= 1e-10 and sol.min_dual >= -1e-12
    reference = solve_graph_svm(corpus.E, build_graphs(corpus), method="cvxpy")
    assert rel(sol.W, reference.W) <= 1e-5



@pytest.mark.parametrize("method", ["orthonormal", "general"])
def test_cycle_closed_form(example, method):
    # SCC {a,b} (value v, weight 2) above q (value w): min 2v^2 + w^2 s.t. v - w >= 1.
    # Stationarity 4v = lam, 2w = -lam -> v - w = 3 lam / 4 = 1, lam = 4/3: v = 1/3, w = -2/3; c isolated: 0.
    corpus = example("cycle")
    sol = solve_graph_svm(corpus.E, build_graphs(corpus), method=method)
    W = sol.W
    assert sol.kkt_residual <= 1e-7 and sol.min_dual >= -1e-9
    np.testing.assert_allclose(column(corpus, W, "q"), [1 / 3, 1 / 3, 0, -2 / 3], atol=1e-8)
    assert np.abs(np.delete(W, 3, axis=1)).max() <= 1e-9


@pytest.mark.parametrize("method", ["orthonormal", "general"])
def test_mix_closed_form(example, method):
    # G^(q): SCC X={a,b} (weight 2) -> c, X -> q, c -> d, c -> q.  min 2x^2 + c^2 + d^2 + q^2:
    # active X-c, c-d, c-q: c = x-1, d = q = x-2; 1^T(size*v) = 0: 2x + (x-1) + 2(x-2) = 0 -> x = 1,
    # so (a, b, c, d, q) = (1, 1, 0, -1, -1); multipliers 4x = 4, -2d = 2, -2q = 2 (all >= 0),
    # check at c: 2c = 0 = -4 + 2 + 2; X-q slack 2 - 1.  G^(r) = {d -> r}: min d^2 + r^2, d - r >= 1 -> (1/2, -1/2).
    corpus = example("mix")
    sol = solve_graph_svm(corpus.E, build_graphs(corpus), method=method)
    np.testing.assert_allclose(column(corpus, sol.W, "q"), [1, 1, 0, -1, -1, 0], atol=1e-8)
    np.testing.assert_allclose(column(corpus, sol.W, "r"), [0, 0, 0, 0.5, 0, -0.5], atol=1e-8)
    assert sol.norm == pytest.approx(np.sqrt(4.5), abs=1e-8)
    # stationarity with the solver's multipliers (the equality row a-b carries one)
    assert sol.kkt_residual <= 1e-7 and sol.min_dual >= -1e-9


# --------------------------------------------------------------------------- P2: edges vs all pairs


def all_pairs_svm(E, windows, labels) -> np.ndarray:
    """Graph-SVM with one constraint per *reachable* pair (THEORY §3.1), solved here in cvxpy/Clarabel."""
    edges, nodes = definition_edges(windows, labels)
    W = cp.Variable((E.shape[1], E.shape[1]))
    rows_ge, rows_eq = [], []
    for k in nodes:
        g = nx.DiGraph()
        g.add_nodes_from(nodes[k])
        g.add_edges_from(edges[k])
        for a in nodes[k]:
            for b in nx.descendants(g, a):
                both_ways = a in nx.descendants(g, b)
                (rows_eq if both_ways else rows_ge).append(np.outer(E[a] - E[b], E[k]).ravel())
    w = cp.vec(W, order="C")
    constraints = [np.array(rows_ge) @ w >= 1] if rows_ge else []
    if rows_eq:
        constraints.append(np.array(rows_eq) @ w == 0)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(W)), constraints)
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    assert problem.status == "optimal"
    return np.asarray(W.value)


@pytest.mark.parametrize("embeddings,d", [("one-hot", 6), ("orthonormal", 8), ("unit-norm", 8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_edges_only_equals_all_reachable_pairs(embeddings, d, seed):
    corpus = synthetic(n=14, T=4, K=6, d=d, embeddings=embeddings, graphs="cyclic", seed=seed)
    windows, labels = windows_of(corpus)
    W = solve_graph_svm(corpus.E, build_graphs(corpus)).W
    assert rel(W, all_pairs_svm(corpus.E, windows, labels)) <= 1e-6


@pytest.mark.parametrize("embeddings,d", [("one-hot", 7), ("orthonormal", 9)])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_orthonormal_path_equals_general_path(embeddings, d, seed):
    corpus = synthetic(n=20, T=5, K=7, d=d, embeddings=embeddings, seed=seed)
    graphs = build_graphs(corpus)
    fast = solve_graph_svm(corpus.E, graphs, method="orthonormal")
    slow = solve_graph_svm(corpus.E, graphs, method="general")
    assert rel(fast.W, slow.W) <= 1e-6


def test_orthonormal_path_refuses_other_embeddings():
    corpus = synthetic(n=5, T=3, K=4, d=6, embeddings="unit-norm", seed=0)
    with pytest.raises(ValueError, match="orthonormal"):
        solve_graph_svm(corpus.E, build_graphs(corpus), method="orthonormal")


# --------------------------------------------------------------------------- P3, P4, P5 on random data


def constraint_margins(W, E, windows, labels):
    """(cross-SCC edge margins, |intra-SCC edge differences|) straight from the definition."""
    edges, _ = definition_edges(windows, labels)
    sccs = scc_maps(windows, labels)
    cross, intra = [], []
    for k, es in edges.items():
        for a, b in es:
            value = (E[a] - E[b]) @ W @ E[k]
            (intra if b in sccs[k][a] else cross).append(value)
    return np.array(cross), np.abs(np.array(intra))


@pytest.mark.parametrize("seed", range(8))
def test_linearly_independent_embeddings_are_always_feasible(seed):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(3, 7))
    d = K + int(rng.integers(0, 3))
    windows, labels = random_windows(rng, n=int(rng.integers(3, 15)), T=int(rng.integers(2, 6)), K=K)
    E = unit_rows(rng, K, d)  # K <= d: linearly independent almost surely
    corpus = corpus_from_windows(windows, labels, tuple("abcdefgh"[:K]), E=E)
    sol = solve_graph_svm(E, build_graphs(corpus))  # raises AssumptionViolated if infeasible
    assert sol.kkt_residual <= 1e-6 and sol.min_dual >= -1e-8
    cross, intra = constraint_margins(sol.W, E, windows, labels)
    # P3: W^svm = 0 iff no cross-SCC edge
    assert (sol.norm == 0) == (cross.size == 0)
    # P5: every constraint holds, the smallest margin is exactly 1 (some constraint is active)
    if cross.size:
        assert cross.min() >= 1 - 1e-6 and cross.min() == pytest.approx(1.0, abs=1e-6)
    assert intra.size == 0 or intra.max() <= 1e-6
    # P4: W^svm is orthogonal to S_fin
    basis = cyclic_basis(E, scc_maps(windows, labels))
    assert np.linalg.norm(basis.T @ sol.W.ravel()) <= 1e-6 * max(sol.norm, 1.0)


def test_only_intra_scc_edges_give_zero_direction(make_corpus):
    # [a b] with query b labelled a and b: edges a->b, b->a only, one SCC, no cross edge -> W^svm = 0
    corpus = make_corpus([(["a", "b"], "a"), (["a", "b"], "b")], "ab")
    sol = solve_graph_svm(corpus.E, build_graphs(corpus))
    assert sol.norm == 0.0


# --------------------------------------------------------------------------- infeasible example


def test_infeasible_example_has_a_valid_farkas_certificate(example):
    # e_c = (e_a + e_b)/2 and c outranks a and b under query q:
    #   (e_c - e_a)^T W e_q >= 1 and (e_c - e_b)^T W e_q >= 1 add up to 0 = (2e_c - e_a - e_b)^T W e_q >= 2.
    # Since e_q is independent of e_a, e_b the only certificate with sum y = 1 is y = 1/2 on both.
    corpus = example("infeasible")
    with pytest.raises(AssumptionViolated) as info:
        solve_graph_svm(corpus.E, build_graphs(corpus))
    cert = info.value.certificate
    E = corpus.E
    windows, labels = windows_of(corpus)
    edges, _ = definition_edges(windows, labels)
    combo = np.zeros((E.shape[1], E.shape[1]))
    ys = {}
    for row in cert["inequalities"]:
        assert (row["a"], row["b"]) in edges[row["k"]]  # a real TPG edge
        assert row["y"] >= 0
        combo += row["y"] * np.outer(E[row["a"]] - E[row["b"]], E[row["k"]])
        ys[(corpus.vocab[row["a"]], corpus.vocab[row["b"]])] = row["y"]
    for row in cert["equalities"]:
        combo += row["z"] * np.outer(E[row["a"]] - E[row["b"]], E[row["k"]])
    assert np.abs(combo).max() <= 1e-9
    assert sum(ys.values()) == pytest.approx(1.0, abs=1e-9)
    assert ys == pytest.approx({("c", "a"): 0.5, ("c", "b"): 0.5}, abs=1e-9)


# --------------------------------------------------------------------------- scale of the embeddings


@pytest.mark.parametrize("scale", [1e-3, 3.0, 1e3, 1e5])
def test_general_solvers_scale_with_the_embeddings(scale):
    # every row (x_a - x_b)^T W x_k >= 1 is bilinear in E: W^svm(c E) = W^svm(E) / c^2, and
    # W = sum_j lambda_j A_j with A_j(c E) = c^2 A_j(E) gives lambda(c E) = lambda(E) / c^4.  At
    # 1e-3 the cvxpy path used to call the problem infeasible, at 1e3 both solvers returned a
    # wrong W as "optimal" (absolute tolerances on multipliers of size c^-4)
    corpus = synthetic(n=40, T=5, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=1)
    graphs = build_graphs(corpus)
    ref = solve_dual(corpus.E, graphs)
    assert ref.status == "optimal"
    for solve in (solve_dual, solve_general):
        sol = solve(corpus.E * scale, graphs)
        assert sol.status == "optimal", solve.__name__
        assert np.linalg.norm(sol.W * scale**2 - ref.W) <= 1e-8 * np.linalg.norm(ref.W), solve.__name__
        M = (corpus.E * scale) @ sol.W @ (corpus.E * scale).T  # the margins, from the definition
        windows, labels = windows_of(corpus)
        edges, _ = definition_edges(windows, labels)
        sccs = scc_maps(windows, labels)
        cross = [M[a, k] - M[b, k] for k, pairs in edges.items() for a, b in pairs if b not in sccs[k][a]]
        assert min(cross) == pytest.approx(1.0, abs=1e-9)
    dual = solve_dual(corpus.E * scale, graphs)
    assert np.allclose(dual.details["lambda"] * scale**4, ref.details["lambda"], rtol=1e-8, atol=1e-9)


def test_a_power_of_two_scale_is_exact():
    # E / 8 is exact in floating point, so the solve at 8 E is the solve at E, bit for bit
    corpus = synthetic(n=40, T=5, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=2)
    graphs = build_graphs(corpus)
    assert embedding_scale(corpus.E) == 1.0 and embedding_scale(8 * corpus.E) == 8.0
    assert embedding_scale(np.zeros((3, 3))) == 1.0
    assert embedding_scale(1e-200 * corpus.E) == 2.0 ** round(np.log2(1e-200))  # no underflow in the norms
    assert np.array_equal(solve_dual(8 * corpus.E, graphs).W * 64, solve_dual(corpus.E, graphs).W)


def test_an_infeasible_problem_at_a_small_scale_still_has_its_certificate(example):
    corpus = example("infeasible")
    with pytest.raises(AssumptionViolated) as info:
        solve_graph_svm(corpus.E * 1e-3, build_graphs(corpus))
    assert info.value.certificate["inequalities"]


# --------------------------------------------------------------------------- P17 invariances


@pytest.mark.parametrize("embeddings,d", [("one-hot", 6), ("unit-norm", 8)])
def test_svm_invariant_to_duplicates_order_and_repeats(embeddings, d):
    corpus = synthetic(n=12, T=4, K=6, d=d, embeddings=embeddings, graphs="cyclic", seed=7)
    windows, labels = windows_of(corpus)
    W = solve_graph_svm(corpus.E, build_graphs(corpus)).W
    rng = np.random.default_rng(0)
    new_windows, new_labels = [], []
    for w, y in zip(windows, labels, strict=True):
        body = list(w[:-1]) + [int(rng.choice(w))]  # repeat a token already present
        rng.shuffle(body)  # reorder positions
        for _ in range(int(rng.integers(1, 4))):  # duplicate the sample 1-3 times
            new_windows.append(body + [w[-1]])
            new_labels.append(y)
    other = corpus_from_windows(new_windows, new_labels, corpus.vocab, E=corpus.E)
    assert rel(solve_graph_svm(other.E, build_graphs(other)).W, W) <= 1e-6
