"""Graph-SVM (THEORY.md §3): the direction W^svm of hard retrieval.

    W^svm = argmin ||W||_F  s.t. for every k:
        (e_a - e_b)^T W e_k >= 1  for cross-SCC edges a -> b of G^(k),
        (e_a - e_b)^T W e_k  = 0  for a, b in one SCC of G^(k).

Two solvers:

* ``solve_orthonormal``: for orthonormal rows of E (one-hot included) the problem splits
  per query (§3.2): W^svm = E^T S E with S[a, k] = v_C, the value of the SCC C of a in
  G^(k), and v minimises sum_C |C| v_C^2 s.t. v_A - v_B >= 1 on condensation edges.
  The per-query problems are stacked block-diagonally into one Clarabel call, and the
  result is polished on its active set to machine precision.
* ``solve_general``: cvxpy + Clarabel on the d×d variable with deduplicated constraints
  (one per cross-SCC edge, |C|-1 equalities per SCC); infeasibility comes with a
  Farkas certificate (y >= 0, z with A_ge^T y + A_eq^T z = 0, 1^T y = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from theorycheck.corpus.types import is_orthonormal
from theorycheck.errors import AssumptionViolated
from theorycheck.graphs import TokenPriorityGraphs, scc_generators

FEASIBILITY_TOL = 1e-7


@dataclass(frozen=True)
class SvmSolution:
    W: np.ndarray
    method: str
    status: str
    min_margin: float  # min over cross edges of (e_a - e_b)^T W e_k (should be 1)
    max_violation: float  # max constraint violation (inequality and equality)
    kkt_residual: float  # ||W - sum_j lambda_j A_j||_F / max(1, ||W||) with solver duals
    min_dual: float  # most negative inequality multiplier (should be >= 0)
    solve_seconds: float
    details: dict = field(default_factory=dict)

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.W))


def constraint_rows(graphs: TokenPriorityGraphs, reduced: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, k) of the inequality rows (cross edges) and of the equality rows.

    Equalities: for each cyclic SCC, member - smallest member (|C|-1 rows), which spans
    the same constraints as all intra-SCC edges (§3.1 [derived]).

    ``reduced``: one representative TPG edge per edge of the transitive reduction of
    each condensation DAG.  Same feasible set: with the equalities every member of an
    SCC has the same score, and an edge A -> C implied by a path A -> B -> C gets margin
    >= 2 from the path (§3.1's path-summation argument), so the dropped rows are implied.
    """
    cross = np.flatnonzero(~graphs.edge_same_scc)
    if reduced and cross.size:
        import networkx as nx

        n_scc = graphs.n_sccs
        key = graphs.scc[graphs.edge_src[cross]] * n_scc + graphs.scc[graphs.edge_dst[cross]]
        uniq, first = np.unique(key, return_index=True)
        dag = nx.DiGraph()
        dag.add_edges_from(zip((uniq // n_scc).tolist(), (uniq % n_scc).tolist()))
        kept = {u * n_scc + v for u, v in nx.transitive_reduction(dag).edges()}
        cross = cross[first[np.isin(uniq, np.fromiter(kept, dtype=np.int64, count=len(kept)))]]
    ga = graphs.pair_token[graphs.edge_src[cross]]
    gb = graphs.pair_token[graphs.edge_dst[cross]]
    gk = graphs.pair_query[graphs.edge_src[cross]]
    member, root = scc_generators(graphs)
    ea, eb, ek = graphs.pair_token[member], graphs.pair_token[root], graphs.pair_query[member]
    return ga, gb, gk, ea, eb, ek


def constraint_matrix(E: np.ndarray, a: np.ndarray, b: np.ndarray, k: np.ndarray) -> sp.csr_matrix:
    """Rows vec((e_a - e_b) e_k^T) (row-major vec of W): a row-wise Khatri-Rao product."""
    d = E.shape[1]
    left = sp.csr_matrix(E[a] - E[b])
    left.eliminate_zeros()
    right = sp.csr_matrix(E[k])
    m = a.size
    n_left = np.diff(left.indptr)
    n_right = np.diff(right.indptr)
    left_row = np.repeat(np.arange(m), n_left)
    reps = n_right[left_row]
    pick = np.repeat(np.arange(left.nnz), reps)
    offset = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    right_idx = right.indptr[left_row[pick]] + offset
    cols = left.indices[pick].astype(np.int64) * d + right.indices[right_idx]
    vals = left.data[pick] * right.data[right_idx]
    return sp.csr_matrix((vals, (left_row[pick], cols)), shape=(m, d * d))


def check_constraints(W: np.ndarray, E: np.ndarray, graphs: TokenPriorityGraphs,
                      M: np.ndarray | None = None) -> tuple[float, float]:
    """(min cross margin, max violation) of W against the Graph-SVM constraints.

    ``M`` = E W E^T may be passed when already known (orthonormal path: M = S).
    """
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs)
    if M is None:
        M = E @ W @ E.T
    margins = M[ga, gk] - M[gb, gk]
    equal = M[ea, ek] - M[eb, ek]
    min_margin = float(margins.min()) if margins.size else np.inf
    violation = max(
        float(np.max(1.0 - margins, initial=0.0)),
        float(np.max(np.abs(equal), initial=0.0)),
    )
    return min_margin, violation


def _ranking_qp(size: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """min sum_C size_C v_C^2 s.t. v_src - v_dst >= 1 (Clarabel, tolerance 1e-10, then polish)."""
    import clarabel

    nv, nc = size.size, src.size
    P = sp.diags(2.0 * size, format="csc")
    # Clarabel form: A v + s = b, s >= 0, i.e. v_dst - v_src + s = -1
    A = sp.csc_matrix((np.tile([1.0, -1.0], nc), (np.repeat(np.arange(nc), 2), np.stack([dst, src], 1).ravel())),
                      shape=(nc, nv))
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-10
    result = clarabel.DefaultSolver(P, np.zeros(nv), A, -np.ones(nc), [clarabel.NonnegativeConeT(nc)], settings).solve()
    value, duals, polished = _polish(np.asarray(result.x), np.asarray(result.z), size, src, dst)
    return value, duals, str(result.status) + (" + active-set polish" if polished else "")


def solve_orthonormal(E: np.ndarray, graphs: TokenPriorityGraphs, workers: int | None = None) -> SvmSolution:
    """Fast exact path for orthonormal embeddings (one-hot included), THEORY.md §3.2.

    The problem splits per query; queries are dealt into ``workers`` groups (balanced by
    constraint count) whose block-diagonal QPs are solved in parallel threads.
    """
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    cs, cd = graphs.cond_src, graphs.cond_dst
    used = np.unique(np.concatenate([cs, cd]))
    local = np.full(graphs.n_sccs, -1)
    local[used] = np.arange(used.size)
    size = graphs.scc_size[used].astype(np.float64)
    nv, nc = used.size, cs.size
    value = np.zeros(nv)
    duals = np.zeros(nc)
    statuses = ["trivial (no cross-SCC edge)"]
    if nc:
        workers = workers or max(1, min(4, os.cpu_count() or 1))
        edge_query = graphs.scc_query[cs]
        queries, per_query = np.unique(edge_query, return_counts=True)
        group_of_query = np.zeros(queries.size, dtype=np.int64)
        load = np.zeros(workers)
        for j in np.argsort(-per_query, kind="stable"):  # greedy balancing, largest first
            group_of_query[j] = int(np.argmin(load))
            load[group_of_query[j]] += per_query[j]
        edge_group = group_of_query[np.searchsorted(queries, edge_query)]
        var_group = np.zeros(nv, dtype=np.int64)
        var_group[local[cs]] = edge_group
        var_group[local[cd]] = edge_group

        def run(group):
            edges = np.flatnonzero(edge_group == group)
            variables = np.flatnonzero(var_group == group)
            position = np.full(nv, -1)
            position[variables] = np.arange(variables.size)
            v, z, status = _ranking_qp(size[variables], position[local[cs[edges]]], position[local[cd[edges]]])
            return variables, edges, v, z, status

        groups = [gr for gr in range(workers) if load[gr] > 0]
        with ThreadPoolExecutor(len(groups)) as pool:
            results = list(pool.map(run, groups))
        statuses = []
        for variables, edges, v, z, status in results:
            value[variables], duals[edges] = v, z
            statuses.append(status)
    S = np.zeros((graphs.K, graphs.K))
    scc_value = np.zeros(graphs.n_sccs)
    scc_value[used] = value
    S[graphs.pair_token, graphs.pair_query] = scc_value[graphs.scc]
    one_hot = E.shape[0] == E.shape[1] and np.array_equal(E, np.eye(E.shape[0]))
    W = S if one_hot else E.T @ S @ E
    # stationarity in SCC variables: 2 |C| v_C = (duals on edges leaving C) - (entering C)
    flow = np.bincount(local[cs], duals, minlength=nv) - np.bincount(local[cd], duals, minlength=nv)
    kkt = float(np.linalg.norm(2 * size * value - flow)) / max(1.0, float(np.linalg.norm(2 * size * value)))
    margin, violation = check_constraints(W, E, graphs, M=S)
    return SvmSolution(
        W=W, method="orthonormal (one ranking QP per query, Clarabel)",
        status="; ".join(sorted(set(statuses))), min_margin=margin, max_violation=violation, kkt_residual=kkt,
        min_dual=float(duals.min()) if duals.size else 0.0,
        solve_seconds=time.perf_counter() - t0,
        details={"variables": int(nv), "constraints": int(nc), "scc_value": scc_value},
    )


def _polish(value, duals, size, src, dst, tol: float = 1e-7):
    """Exact solution of the equality QP on the active set of the Clarabel point.

    The active constraints v_s - v_t = 1 fix all differences inside each connected
    component of the active edges (undirected), so v = phi + c_comp with an integer
    potential phi; minimising sum_C |C| v_C^2 over the free shift gives
    c_comp = -sum |C| phi / sum |C| over the component, and v = 0 for variables in no
    active constraint.  The polished point is kept only if the active set is
    consistent, every constraint holds and it stays within 1e-4 of the solver's point.
    """
    from scipy.sparse.csgraph import breadth_first_order

    slack = value[src] - value[dst] - 1.0
    active = np.flatnonzero(slack <= 1e-6)
    if active.size == 0:
        return value, duals, False
    nv = value.size
    a_src, a_dst = src[active], dst[active]
    graph = sp.csr_matrix((np.ones(active.size), (a_src, a_dst)), shape=(nv, nv))
    n_comp, comp = connected_components(graph, directed=False)
    touched = np.zeros(nv, dtype=bool)
    touched[a_src] = touched[a_dst] = True
    # one BFS from a virtual root joined to one variable of every component gives a
    # spanning forest; phi = sum of +-1 along the tree path (pointer jumping)
    first_of = np.full(n_comp, -1)
    members = np.flatnonzero(touched)
    first_of[comp[members[::-1]]] = members[::-1]
    comp_roots = first_of[first_of >= 0]
    hub = nv
    rows = np.r_[a_src, a_dst, np.full(comp_roots.size, hub)]
    cols = np.r_[a_dst, a_src, comp_roots]
    forest = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(nv + 1, nv + 1))
    order, pred = breadth_first_order(forest, hub, directed=True, return_predecessors=True)
    nodes = order[1:]
    parent = pred[nodes]
    edge_key = np.sort(a_src.astype(np.int64) * nv + a_dst)

    def is_edge(s_, t_):
        key = s_.astype(np.int64) * nv + t_
        pos = np.minimum(np.searchsorted(edge_key, key), edge_key.size - 1)
        return edge_key[pos] == key

    step = np.zeros(nv + 1)
    inner = parent != hub
    step[nodes[inner]] = np.where(is_edge(parent[inner], nodes[inner]), -1.0,
                                  np.where(is_edge(nodes[inner], parent[inner]), 1.0, np.nan))
    ancestor = np.full(nv + 1, hub)
    ancestor[nodes] = parent
    phi = step.copy()  # phi[hub] = 0 and ancestor[hub] = hub end every path
    while np.any(ancestor != hub):  # pointer jumping: remaining path lengths halve each round
        phi = phi + phi[ancestor]
        ancestor = ancestor[ancestor]
    phi = phi[:nv]
    if not np.all(np.isfinite(phi[touched])):
        return value, duals, False
    if np.any(phi[a_src] - phi[a_dst] != 1.0):
        return value, duals, False  # inconsistent active-set guess
    weight_sum = np.bincount(comp, weights=size * touched, minlength=n_comp)
    shift_num = np.bincount(comp, weights=size * phi * touched, minlength=n_comp)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(weight_sum > 0, -shift_num / weight_sum, 0.0)
    v = np.where(touched, phi + shift[comp], 0.0)
    if np.max(1.0 - (v[src] - v[dst])) > tol or np.abs(v - value).max() > 1e-4:
        return value, duals, False
    new_duals = np.zeros_like(duals)
    new_duals[active] = duals[active]
    return v, new_duals, True


def solve_general(E: np.ndarray, graphs: TokenPriorityGraphs, solver: str = "CLARABEL") -> SvmSolution:
    """Generic path: cvxpy on the d×d variable; raises AssumptionViolated if infeasible."""
    import time

    import cvxpy as cp

    t0 = time.perf_counter()
    d = E.shape[1]
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    A_ge = constraint_matrix(E, ga, gb, gk)
    A_eq = constraint_matrix(E, ea, eb, ek)
    if A_ge.shape[0] == 0:
        W = np.zeros((d, d))
        return SvmSolution(W, "general (cvxpy, transitively reduced constraints)", "trivial (no cross-SCC edge)", np.inf, 0.0, 0.0, 0.0,
                           time.perf_counter() - t0)
    w = cp.Variable(d * d)
    constraints = [A_ge @ w >= 1]
    if A_eq.shape[0]:
        constraints.append(A_eq @ w == 0)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(w)), constraints)
    kwargs = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10} if solver == "CLARABEL" else {}
    problem.solve(solver=solver, **kwargs)
    if problem.status in ("infeasible", "infeasible_inaccurate"):
        certificate = farkas_certificate(A_ge, A_eq)
        if certificate is None:
            raise RuntimeError(
                "the solver reported the Graph-SVM infeasible but no Farkas certificate exists; "
                "solver failure, retry with --svm-solver SCS"
            )
        raise AssumptionViolated(
            "Graph-SVM is infeasible: no W separates the priorities of the token-priority graphs "
            "with these embeddings (they are not linearly independent); certificate attached",
            certificate=describe_certificate(certificate, ga, gb, gk, ea, eb, ek),
        )
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"Graph-SVM solver ended with status {problem.status!r}")
    W = np.asarray(w.value).reshape(d, d)
    lam = np.asarray(constraints[0].dual_value).ravel()
    mu = np.asarray(constraints[1].dual_value).ravel() if A_eq.shape[0] else np.zeros(0)
    # cvxpy prices `A_eq w == 0` with the opposite sign to `A_ge w >= 1`: w = A_ge^T lam - A_eq^T mu
    combo = A_ge.T @ lam - (A_eq.T @ mu if mu.size else 0.0)
    kkt = float(np.linalg.norm(W.ravel() - combo)) / max(1.0, float(np.linalg.norm(W)))
    margin, violation = check_constraints(W, E, graphs)
    return SvmSolution(
        W=W, method=f"general (cvxpy {solver}, d×d variable, transitively reduced constraints)", status=problem.status,
        min_margin=margin, max_violation=violation, kkt_residual=kkt,
        min_dual=float(lam.min()), solve_seconds=time.perf_counter() - t0,
        details={"variables": d * d, "constraints": int(A_ge.shape[0] + A_eq.shape[0])},
    )


def farkas_certificate(A_ge: sp.csr_matrix, A_eq: sp.csr_matrix) -> dict | None:
    """Find y >= 0, z with A_ge^T y + A_eq^T z = 0 and 1^T y = 1 (LP, HiGHS).

    Its existence proves {A_ge w >= 1, A_eq w = 0} empty: 0 = (A_ge^T y + A_eq^T z).w
    >= 1^T y = 1 for any feasible w.
    """
    from scipy.optimize import linprog

    m_ge, m_eq = A_ge.shape[0], A_eq.shape[0]
    stack = sp.hstack([A_ge.T, A_eq.T, sp.csr_matrix((A_ge.shape[1], 0))]).tocsr() if m_eq else A_ge.T.tocsr()
    A_eq_lp = sp.vstack([stack, sp.csr_matrix(np.r_[np.ones(m_ge), np.zeros(m_eq)][None, :])]).tocsr()
    b_eq = np.r_[np.zeros(A_ge.shape[1]), 1.0]
    bounds = [(0, None)] * m_ge + [(None, None)] * m_eq
    # minimise sum(y) + |z| proxy: prefer sparse certificates via min 1^T y is fixed at 1; use 0
    result = linprog(np.zeros(m_ge + m_eq), A_eq=A_eq_lp, b_eq=b_eq, bounds=bounds, method="highs")
    if result.status != 0:
        return None
    y, z = result.x[:m_ge], result.x[m_ge:]
    residual = float(np.abs(A_ge.T @ y + (A_eq.T @ z if m_eq else 0.0)).max())
    if residual > 1e-8 or y.min() < -1e-12:
        return None
    return {"y": y, "z": z, "residual": residual}


def describe_certificate(cert: dict, ga, gb, gk, ea, eb, ek) -> dict:
    """Human-readable Farkas certificate: which constraints combine to 0 >= 1."""
    y, z = cert["y"], cert["z"]
    used_ge = np.flatnonzero(y > 1e-9)
    used_eq = np.flatnonzero(np.abs(z) > 1e-9)
    return {
        "kind": "farkas",
        "statement": "sum_j y_j (e_a - e_b)^T W e_k + sum_j z_j (e_a - e_b)^T W e_k = 0 for every W, "
        "yet the constraints force it >= sum_j y_j = 1",
        "inequalities": [
            {"a": int(ga[j]), "b": int(gb[j]), "k": int(gk[j]), "y": float(y[j])} for j in used_ge
        ],
        "equalities": [
            {"a": int(ea[j]), "b": int(eb[j]), "k": int(ek[j]), "z": float(z[j])} for j in used_eq
        ],
        "residual": cert["residual"],
    }


def solve_graph_svm(E: np.ndarray, graphs: TokenPriorityGraphs, method: str = "auto") -> SvmSolution:
    """Dispatch.  ``auto``: the per-query path when E has orthonormal rows, else ``general``.

    ``general``: the dual projected-Newton solver (:func:`solve_dual`) when E has
    linearly independent rows (the problem is then always feasible, THEORY.md §3.3),
    otherwise cvxpy with its Farkas certificate of infeasibility (:func:`solve_general`).
    ``dual`` and ``cvxpy`` force one of the two.
    """
    orthonormal = is_orthonormal(E)
    if method == "auto":
        method = "orthonormal" if orthonormal else "general"
    if method == "orthonormal":
        if not orthonormal:
            raise ValueError("the orthonormal path needs E E^T = I")
        return solve_orthonormal(E, graphs)
    if method == "general":
        method = "dual" if _full_row_rank(E) else "cvxpy"
    if method == "dual":
        return solve_dual(E, graphs)
    if method == "cvxpy":
        return solve_general(E, graphs)
    raise ValueError(f"unknown Graph-SVM method {method!r}; use auto, orthonormal, general, dual or cvxpy")


def _full_row_rank(E: np.ndarray) -> bool:
    K, d = E.shape
    if K > d:
        return False
    s = np.linalg.svd(E, compute_uv=False)
    return bool(s.size and s[-1] > 1e-10 * max(1.0, s[0]))


def _forest_potentials(n_nodes: int, u: np.ndarray, v: np.ndarray, gap: np.ndarray):
    """Potentials phi with phi_u - phi_v = gap on a spanning forest of the undirected
    graph of edges (u, v); returns (phi, component, parent, parent_edge, order, consistent).

    One BFS from a virtual hub joined to the first node of every component; phi is summed
    along tree paths by pointer jumping (as in :func:`_polish`).  ``consistent``: every
    edge (tree or not) satisfies phi_u - phi_v = gap to 1e-12.
    """
    from scipy.sparse.csgraph import breadth_first_order

    graph = sp.csr_matrix((np.ones(u.size), (u, v)), shape=(n_nodes, n_nodes))
    n_comp, comp = connected_components(graph, directed=False)
    first = np.full(n_comp, -1)
    first[comp[::-1]] = np.arange(n_nodes)[::-1]
    hub = n_nodes
    eid = np.arange(u.size)
    rows = np.r_[u, v, np.full(n_comp, hub)]
    cols = np.r_[v, u, first]
    # edge id + 1 as data so that the tree edge of each BFS step can be looked up
    data = np.r_[eid + 1, -(eid + 1), np.zeros(n_comp)].astype(np.float64)
    forest = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_nodes + 1, n_nodes + 1))
    order, pred = breadth_first_order(forest, hub, directed=True, return_predecessors=True)
    nodes = order[1:]
    parent = pred[nodes]
    lookup = sp.csr_matrix((data + np.where(data == 0, 0.5, 0.0), (rows, cols)), shape=(n_nodes + 1, n_nodes + 1))
    code = np.asarray(lookup[parent, nodes]).ravel()
    step = np.zeros(n_nodes + 1)
    parent_edge = np.full(n_nodes + 1, -1)
    inner = parent != hub
    c = code[inner]
    e = (np.abs(c) - 1).astype(np.int64)
    # code > 0: edge (parent -> node) stored as (u, v) = (parent, node): phi_node = phi_parent - gap
    step[nodes[inner]] = np.where(c > 0, -gap[e], gap[e])
    parent_edge[nodes[inner]] = e
    ancestor = np.full(n_nodes + 1, hub)
    ancestor[nodes] = parent
    phi = step.copy()
    while np.any(ancestor != hub):
        phi = phi + phi[ancestor]
        ancestor = ancestor[ancestor]
    phi = phi[:n_nodes]
    consistent = bool(np.all(np.abs(phi[u] - phi[v] - gap) <= 1e-9))
    par = np.full(n_nodes, -1)
    par[nodes[inner]] = parent[inner]
    return phi, comp, par, parent_edge[:n_nodes], order[1:], consistent


def _active_set_solve(Ginv: np.ndarray, u: np.ndarray, v: np.ndarray, gap: np.ndarray):
    """Exact minimiser of 1/2 tr(G^-1 M G^-1 M^T) s.t. M_u - M_v = gap on the given edges.

    Nodes are the entries of M (node a*K + k = row a, column k).  On a spanning forest of
    the edges M = phi + shift of its component (phi: forest potentials); the shifts solve
    the dense normal equations Z^T R Z s = -Z^T R phi with R = G^-1 ⊗ G^-1, whose entry for
    components c, c' (columns k, k', token sets S, S') is G^-1[k, k'] * sum_{S×S'} G^-1.
    Multipliers: r = vec(G^-1 M G^-1) = sum_j lambda_j (e_u - e_v) (stationarity), so the
    tree edge above a node carries the sum of r over the node's subtree; non-tree edges
    get 0.  Returns (M, lambda, consistent).
    """
    K = Ginv.shape[0]
    n = K * K
    phi, comp, parent, parent_edge, order, consistent = _forest_potentials(n, u, v, gap)
    if not consistent:
        return None, None, False
    n_comp = int(comp.max()) + 1
    col = np.arange(n) % K
    tok = np.arange(n) // K
    comp_col = np.zeros(n_comp, dtype=np.int64)
    comp_col[comp] = col
    C = sp.csr_matrix((np.ones(n), (tok, comp)), shape=(K, n_comp))
    GC = np.asarray(C.T @ Ginv)  # (n_comp, K): rows sum_{a in S} G^-1[a, :]
    H = np.asarray(C.T @ GC.T)  # C^T G^-1 C
    H *= Ginv[np.ix_(comp_col, comp_col)]
    Phi = phi.reshape(K, K)
    RPhi = (Ginv @ Phi @ Ginv).ravel()
    rhs = -np.bincount(comp, RPhi, minlength=n_comp)
    try:
        from scipy.linalg import cho_factor, cho_solve

        shift = cho_solve(cho_factor(H, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        shift = np.linalg.lstsq(H, rhs, rcond=None)[0]
    m = phi + shift[comp]
    M = m.reshape(K, K)
    r = (Ginv @ M @ Ginv).ravel()
    # subtree sums, deepest nodes first (reverse BFS order)
    acc = r.copy()
    depth = np.zeros(n, dtype=np.int64)
    for node in order:  # BFS order: parents before children
        p = parent[node]
        if p >= 0:
            depth[node] = depth[p] + 1
    lam = np.zeros(u.size)
    by_depth = np.argsort(-depth, kind="stable")
    levels = depth[by_depth]
    bounds = np.flatnonzero(np.r_[True, levels[1:] != levels[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        nodes = by_depth[lo:hi]
        nodes = nodes[parent[nodes] >= 0]
        if nodes.size == 0:
            continue
        np.add.at(acc, parent[nodes], acc[nodes])
        e = parent_edge[nodes]
        # r = sum lambda (e_u - e_v): the subtree of node receives +lambda if node = u
        lam[e] = np.where(u[e] == nodes, acc[nodes], -acc[nodes])
    return M, lam, True


def solve_dual(E: np.ndarray, graphs: TokenPriorityGraphs, tol: float = 1e-12, maxiter: int = 100) -> SvmSolution:
    """Graph-SVM for linearly independent (not necessarily orthonormal) embeddings.

    THEORY.md §3.2: with M = E W E^T the constraints read M_ak - M_bk >= 1 on cross edges
    and M_ak = M_bk inside SCCs, and the least-norm W for a given M has
    ||W||_F^2 = tr(G^-1 M G^-1 M^T), G = E E^T.  A primal-dual active-set method
    (Hintermüller, Ito & Kunisch 2003) on the transitively reduced rows: for a guess A of
    the active inequalities the equality-constrained QP (A as equalities M_u - M_v = 1,
    plus the SCC equalities) is solved exactly (:func:`_active_set_solve`); rows of A
    with a negative multiplier leave, violated rows join, until neither exists, which is
    the KKT system of §3.1.  The first guess is the active set of the orthonormal
    problem (G = I, the per-query ranking QPs).  W^svm = E^T (G^-1 M G^-1) E.

    Reported: ``max_violation`` (primal), ``min_dual`` (most negative inequality
    multiplier), ``kkt_residual`` = ||W - sum_j lambda_j (x_a - x_b) x_k^T||_F / max(1, ||W||)
    (stationarity with the recovered multipliers; complementarity holds by construction).
    """
    import time

    t0 = time.perf_counter()
    K, d = E.shape
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    method = "general (primal-dual active set on M = E W E^T, transitively reduced rows)"
    if ga.size == 0:
        return SvmSolution(np.zeros((d, d)), method, "trivial (no cross-SCC edge)", np.inf, 0.0, 0.0, 0.0,
                           time.perf_counter() - t0)
    G = E @ E.T
    Ginv = np.linalg.inv(G)
    Ginv = 0.5 * (Ginv + Ginv.T)
    u, v = ga * K + gk, gb * K + gk
    ue, ve = ea * K + ek, eb * K + ek
    start = solve_orthonormal(np.eye(K), graphs).W  # M of the G = I problem
    flat0 = start.ravel()
    active = flat0[u] - flat0[v] <= 1.0 + 1e-7
    status = "max iterations"
    M = lam = None
    iterations = 0
    changes = []
    for _ in range(maxiter):
        iterations += 1
        idx = np.flatnonzero(active)
        M_try, lam_try, ok = _active_set_solve(Ginv, np.r_[u[idx], ue], np.r_[v[idx], ve],
                                                np.r_[np.ones(idx.size), np.zeros(ue.size)])
        if not ok:  # the new rows close a cycle with inconsistent margins: add fewer
            if M is None or not changes:
                status = "inconsistent active set"
                break
            joined = changes[-1]
            if joined.size <= 1:
                status = "inconsistent active set"
                break
            active[joined[joined.size // 2:]] = False
            changes[-1] = joined[: joined.size // 2]
            continue
        M, lam, A_idx = M_try, lam_try, idx
        flat = M.ravel()
        margins = flat[u] - flat[v]
        lam_ge = lam[: idx.size]
        leave = idx[lam_ge < -tol]
        violated = np.flatnonzero(~active & (margins < 1.0 - tol))
        if leave.size == 0 and violated.size == 0:
            status = "optimal"
            break
        active[leave] = False
        # most violated first, so that halving on inconsistency keeps the worst rows
        violated = violated[np.argsort(margins[violated], kind="stable")]
        active[violated] = True
        changes.append(violated)
    if M is None:
        return solve_general(E, graphs)
    lam_ge = np.zeros(ga.size)
    lam_ge[A_idx] = lam[: A_idx.size]
    nu = lam[A_idx.size:]
    R = Ginv @ M @ Ginv
    W = E.T @ R @ E
    Lam = (np.bincount(u, lam_ge, minlength=K * K) - np.bincount(v, lam_ge, minlength=K * K)
           + np.bincount(ue, nu, minlength=K * K) - np.bincount(ve, nu, minlength=K * K)).reshape(K, K)
    kkt = float(np.linalg.norm(E.T @ Lam @ E - W)) / max(1.0, float(np.linalg.norm(W)))
    margin, violation = check_constraints(W, E, graphs)
    return SvmSolution(
        W=W, method=method, status=status, min_margin=margin, max_violation=violation, kkt_residual=kkt,
        min_dual=float(lam_ge.min()), solve_seconds=time.perf_counter() - t0,
        details={"variables": int(K * K), "constraints": int(ga.size + ea.size), "active_set_iterations": iterations,
                 "active": int(A_idx.size), "lambda": lam_ge},
    )


def solve_graph_svm_nuclear(E: np.ndarray, graphs: TokenPriorityGraphs) -> SvmSolution:
    """Nuclear-norm Graph-SVM: argmin ||W||_* under the same constraints (THEORY.md §3.4).

    The implicit bias Tarzanagh et al. (2023) prove for the factorised W = K Q^T model;
    solved as an SDP through cvxpy (small d only).
    """
    import time

    import cvxpy as cp

    t0 = time.perf_counter()
    d = E.shape[1]
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    if ga.size == 0:
        return SvmSolution(np.zeros((d, d)), "nuclear (cvxpy)", "trivial (no cross-SCC edge)", np.inf, 0.0, 0.0, 0.0,
                           time.perf_counter() - t0)
    A_ge = constraint_matrix(E, ga, gb, gk)
    A_eq = constraint_matrix(E, ea, eb, ek)
    W = cp.Variable((d, d))
    w = cp.vec(W, order="C")
    constraints = [A_ge @ w >= 1] + ([A_eq @ w == 0] if A_eq.shape[0] else [])
    problem = cp.Problem(cp.Minimize(cp.normNuc(W)), constraints)
    problem.solve(solver="CLARABEL")
    if problem.status in ("infeasible", "infeasible_inaccurate"):
        raise AssumptionViolated("nuclear-norm Graph-SVM is infeasible with these embeddings")
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"nuclear-norm Graph-SVM solver ended with status {problem.status!r}")
    Wv = np.asarray(W.value)
    margin, violation = check_constraints(Wv, E, graphs)
    return SvmSolution(Wv, "nuclear (cvxpy CLARABEL SDP)", problem.status, margin, violation, float("nan"),
                       float("nan"), time.perf_counter() - t0)
