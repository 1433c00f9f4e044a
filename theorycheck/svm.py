"""Graph-SVM (THEORY.md §3): the direction W^svm of hard retrieval.

    W^svm = argmin ||W||_F  s.t. for every k:
        (e_a - e_b)^T W e_k >= 1  for cross-SCC edges a -> b of G^(k),
        (e_a - e_b)^T W e_k  = 0  for a, b in one SCC of G^(k).

Three solvers (``solve_graph_svm`` dispatches):

* ``solve_orthonormal``: for orthonormal rows of E (one-hot included) the problem splits
  per query (§3.2): W^svm = E^T S E with S[a, k] = v_C, the value of the SCC C of a in
  G^(k), and v minimises sum_C |C| v_C^2 s.t. v_A - v_B >= 1 on condensation edges.
  Sinks with one parent set are merged (exact: v_x = min(0, min_p v_p - 1)), the
  per-query problems are stacked block-diagonally into Clarabel calls, and the result is
  polished on its active set to machine precision, with exact multipliers.
* ``solve_general``: cvxpy + Clarabel on the d×d variable with deduplicated constraints
  (one per cross-SCC edge, |C|-1 equalities per SCC); infeasibility comes with a
  Farkas certificate (y >= 0, z with A_ge^T y + A_eq^T z = 0, 1^T y = 1).
* ``solve_dual``: linearly independent, non-orthonormal E at scale: a primal-dual active-set
  method on M = E W E^T whose steps solve the dual system on a spanning forest of the active
  rows (dense with refinement for few components, block-preconditioned CG otherwise); an
  unconverged answer falls back to ``solve_general`` (d <= 48) or raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from theorycheck.corpus.types import embedding_scale, is_one_hot, is_orthonormal
from theorycheck.errors import DEPENDENT_EMBEDDINGS_FIX, AssumptionViolated, InputError
from theorycheck.graphs import TokenPriorityGraphs, scc_generators
from theorycheck.model import _worker_count, balanced_groups, in_threads

FEASIBILITY_TOL = 1e-7


class SolverFailure(RuntimeError):
    """cvxpy's solver gave no usable answer on a problem it was able to pose (the embeddings'
    scale is the usual cause; the caller names it)."""

# dense constraint nonzeros (rows × d^2) the cvxpy d×d formulation is given: at 5.1 M (n = 1,000,
# K = d = 48) it took 5 minutes and 4.4 GiB, at 16 M (n = 2,000, K = 64) no result in 10 minutes, 15 GiB
CVXPY_NONZERO_LIMIT = 6_000_000


@dataclass(frozen=True)
class SvmSolution:
    W: np.ndarray
    method: str
    status: str
    min_margin: float  # min over cross edges of (e_a - e_b)^T W e_k (should be 1)
    max_violation: float  # max constraint violation (inequality and equality)
    kkt_residual: float  # ||W - sum_j lambda_j A_j||_F / max(1, ||W||) with solver duals (for E / embedding_scale(E))
    min_dual: float  # most negative inequality multiplier (should be >= 0)
    solve_seconds: float
    details: dict = field(default_factory=dict)

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.W))

    @classmethod
    def no_cross_edge(cls, d: int, method: str, seconds: float) -> SvmSolution:
        """W = 0: no constraint asks for a margin (every edge lies inside one SCC)."""
        return cls(np.zeros((d, d)), method, "trivial (no cross-SCC edge)", np.inf, 0.0, 0.0, 0.0, seconds)

    def rescaled(self, scale: float, multiplier_power: int) -> SvmSolution:
        """This solution for E / scale mapped back to E (see :func:`embedding_scale`): W / scale^2,
        the objective values / scale^2, the multipliers / scale^multiplier_power (4 for
        ||W||_F^2 / 2, where W = sum_j lambda_j A_j; 2 for ||W||_*, where Z = sum_j lambda_j A_j
        is scale-free).  Margins, violations and gaps are scale-free; the KKT residual and the
        complementarity stay in the units of E / scale, where the solvers' tolerances apply.

        scale is a power of two, so every factor is an exact ldexp; a multiplier beyond float64's
        range (embeddings near 1e-84 make them ~1e334) becomes inf, a zero stays zero."""
        mantissa, power = math.frexp(scale)
        if mantissa != 0.5:
            raise ValueError(f"rescaled needs a power of two (embedding_scale), not {scale!r}")
        exponent = -multiplier_power * (power - 1)
        details = dict(self.details)
        with np.errstate(over="ignore"):
            for key in ("lambda", "nu", "mu"):
                if key in details:
                    details[key] = np.ldexp(np.asarray(details[key], dtype=np.float64), exponent)
            min_dual = float(np.ldexp(self.min_dual, exponent))
        for key in ("nuclear_norm", "dual_lower_bound"):
            if key in details:
                details[key] = details[key] / scale**2
        details["embedding_scale"] = scale
        return replace(self, W=self.W / scale**2, min_dual=min_dual, details=details)


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


@dataclass(frozen=True)
class _MergedSinks:
    """The ranking QP with every group of sinks that share one parent set as one variable."""

    node: np.ndarray  # variable -> merged variable
    size: np.ndarray  # merged weights sum |C|
    src: np.ndarray  # merged edges
    dst: np.ndarray
    edge: np.ndarray  # edge -> merged edge
    share: np.ndarray  # edge -> |C_dst| / (merged weight of dst): splits a merged multiplier


def _merge_sinks(size: np.ndarray, src: np.ndarray, dst: np.ndarray) -> _MergedSinks:
    """Merge the sinks of the condensation DAGs that have the same parents.

    A sink x (no out-edge) enters only v_p - v_x >= 1 for its parents p, so its optimal value
    is v_x = min(0, min_p v_p - 1): sinks with one parent set take one value, and the QP
    restricted to that subspace, sum_X (sum_{x in X} |C_x|) v_X^2 under the same rows, has the
    same (unique) minimiser.  Its multipliers split over the members by |C_x| / |X|, which
    keeps stationarity 2 |C_x| v_x = -sum_p lambda_{p x} and complementarity for each member.
    On text corpora almost every SCC is a sink (the tokens that are never a label), and most
    sinks have a single parent (90 % at vocabulary 2,000, window 32).

    Sinks with one parent are grouped by that parent (exact, no sorting).  The other parent
    sets are grouped by a random 64-bit hash (sum of per-parent keys), checked exactly: a
    group is kept only if every member has as many parents as the group has distinct
    (group, parent) pairs and each such pair occurs once per member.
    """
    nv = size.size
    is_sink = np.bincount(src, minlength=nv) == 0
    indegree = np.bincount(dst, minlength=nv)
    group_of = np.full(nv, -1)
    # one parent: the group is the parent, numbered densely in parent order
    into_single = (is_sink & (indegree == 1))[dst]
    single_parent = np.zeros(nv, dtype=bool)
    single_parent[src[into_single]] = True
    parent_group = np.cumsum(single_parent) - 1
    group_of[dst[into_single]] = parent_group[src[into_single]]
    n_single = int(single_parent.sum())
    # several parents (or none): hashed parent sets
    multi = np.flatnonzero(is_sink & (indegree != 1))
    into_multi = (is_sink & (indegree != 1))[dst]
    key = np.random.default_rng(20240817).integers(1, 2**63, size=nv, dtype=np.uint64)
    parent_hash = np.zeros(nv, dtype=np.uint64)
    np.add.at(parent_hash, dst[into_multi], key[src[into_multi]])  # wraps mod 2^64: still a hash
    _, group = np.unique(parent_hash[multi], return_inverse=True)
    n_multi = int(group.max(initial=-1)) + 1
    group_of[multi] = n_single + group
    members = np.bincount(group, minlength=n_multi)
    pair, pair_edge, pair_count = np.unique(group_of[dst[into_multi]].astype(np.int64) * nv + src[into_multi],
                                            return_inverse=True, return_counts=True)
    pair_group = pair // nv - n_single
    distinct_parents = np.bincount(pair_group, minlength=n_multi)
    exact = (np.all(pair_count == members[pair_group]) and np.all(indegree[multi] == distinct_parents[group]))
    if not exact:  # a hash collision (probability ~ n^2 / 2^64): these sinks stay unmerged
        group_of[multi] = n_single + np.arange(multi.size)
        n_multi = multi.size
        pair, pair_edge = np.unique(group_of[dst[into_multi]].astype(np.int64) * nv + src[into_multi],
                                    return_inverse=True)
    others = np.flatnonzero(~is_sink)
    n_merged = others.size + n_single + n_multi
    node = np.empty(nv, dtype=np.int64)
    node[others] = np.arange(others.size)
    node[is_sink] = others.size + group_of[is_sink]
    merged_size = np.bincount(node, weights=size, minlength=n_merged)
    # merged edges: between non-sinks (deduplicated), one per single-parent group (its parent),
    # one per (multi-parent group, parent) pair
    inner = np.flatnonzero(~is_sink[dst])
    inner_key, inner_edge = np.unique(node[src[inner]] * n_merged + node[dst[inner]], return_inverse=True)
    parents = np.flatnonzero(single_parent)
    m_src = np.concatenate([inner_key // n_merged, node[parents], node[pair % nv]])
    m_dst = np.concatenate([inner_key % n_merged, others.size + np.arange(n_single), others.size + pair // nv])
    edge = np.empty(src.size, dtype=np.int64)
    edge[inner] = inner_edge
    edge[into_single] = inner_key.size + parent_group[src[into_single]]
    edge[into_multi] = inner_key.size + n_single + pair_edge.ravel()
    return _MergedSinks(node=node, size=merged_size, src=m_src, dst=m_dst, edge=edge,
                        share=size[dst] / merged_size[node[dst]])


def solve_orthonormal(E: np.ndarray, graphs: TokenPriorityGraphs, workers: int | None = None) -> SvmSolution:
    """Fast exact path for orthonormal embeddings (one-hot included), THEORY.md §3.2.

    The problem splits per query; sinks with one parent set are merged first
    (:func:`_merge_sinks`, exact), then queries are dealt into ``workers`` groups (balanced
    by constraint count) whose block-diagonal QPs are solved in parallel threads.
    """
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    cs, cd = graphs.cond_src, graphs.cond_dst
    in_some_edge = np.zeros(graphs.n_sccs, dtype=bool)
    in_some_edge[cs] = in_some_edge[cd] = True
    used = np.flatnonzero(in_some_edge)
    local = np.full(graphs.n_sccs, -1)
    local[used] = np.arange(used.size)
    size = graphs.scc_size[used].astype(np.float64)
    nv, nc = used.size, cs.size
    value = np.zeros(nv)
    duals = np.zeros(nc)
    statuses = ["trivial (no cross-SCC edge)"]
    if nc:
        merged = _merge_sinks(size, local[cs], local[cd])
        m_value = np.zeros(merged.size.size)
        m_duals = np.zeros(merged.src.size)
        workers = workers or max(1, min(4, os.cpu_count() or 1))
        edge_query = np.empty(merged.src.size, dtype=np.int64)
        edge_query[merged.edge] = graphs.scc_query[cs]
        queries, per_query = np.unique(edge_query, return_counts=True)
        group_of_query = balanced_groups(per_query, workers)
        load = np.bincount(group_of_query, per_query, minlength=workers)
        edge_group = group_of_query[np.searchsorted(queries, edge_query)]
        var_group = np.zeros(merged.size.size, dtype=np.int64)
        var_group[merged.src] = edge_group
        var_group[merged.dst] = edge_group

        def run(group):
            edges = np.flatnonzero(edge_group == group)
            variables = np.flatnonzero(var_group == group)
            position = np.full(merged.size.size, -1)
            position[variables] = np.arange(variables.size)
            v, z, status = _ranking_qp(merged.size[variables], position[merged.src[edges]], position[merged.dst[edges]])
            return variables, edges, v, z, status

        groups = [gr for gr in range(workers) if load[gr] > 0]
        with ThreadPoolExecutor(len(groups)) as pool:
            results = list(pool.map(run, groups))
        statuses = []
        for variables, edges, v, z, status in results:
            m_value[variables], m_duals[edges] = v, z
            statuses.append(status)
        value = m_value[merged.node]
        duals = m_duals[merged.edge] * merged.share
    S = np.zeros((graphs.K, graphs.K))
    scc_value = np.zeros(graphs.n_sccs)
    scc_value[used] = value
    S[graphs.pair_token, graphs.pair_query] = scc_value[graphs.scc]
    one_hot = is_one_hot(E)
    W = S if one_hot else E.T @ S @ E
    # stationarity in SCC variables: 2 |C| v_C = (duals on edges leaving C) - (entering C)
    flow = np.bincount(local[cs], duals, minlength=nv) - np.bincount(local[cd], duals, minlength=nv)
    kkt = float(np.linalg.norm(2 * size * value - flow)) / max(1.0, float(np.linalg.norm(2 * size * value)))
    margin, violation = check_constraints(W, E, graphs, M=S)
    return SvmSolution(
        W=W, method="orthonormal (one ranking QP per query, sinks merged by parent set, Clarabel)",
        status="; ".join(sorted(set(statuses))), min_margin=margin, max_violation=violation, kkt_residual=kkt,
        min_dual=float(duals.min()) if duals.size else 0.0,
        solve_seconds=time.perf_counter() - t0,
        details={"variables": int(nv), "constraints": int(nc), "scc_value": scc_value,
                 "merged_variables": int(merged.size.size) if nc else 0,
                 "merged_constraints": int(merged.src.size) if nc else 0},
    )


POLISH_THRESHOLDS = (1e-6, 1e-5, 1e-4, 1e-3)  # slack below which a row is guessed active


def _polish(value, duals, size, src, dst, tol: float = 1e-7):
    """Exact solution of the equality QP on the active set of the Clarabel point.

    The active constraints v_s - v_t = 1 fix all differences inside each connected
    component of the active edges (undirected), so v = phi + c_comp with an integer
    potential phi on a spanning forest; minimising sum_C |C| v_C^2 over the free shift gives
    c_comp = -sum |C| phi / sum |C| over the component (v = 0 off the active edges).  Rows
    with zero multiplier and zero slack leave an interior point at slack ~ sqrt(gap), so the
    active set is guessed at increasing slack thresholds; the first consistent guess whose
    point satisfies every row, stays within 1e-4 of the solver's point and does not exceed its
    objective (up to 1e-9 relative) is kept.  Its multipliers are then the forest's exact flow,
    sum_j lambda_j (e_s - e_t) = 2 |C| v (subtree sums), used when all are >= 0 (a KKT
    certificate to rounding); otherwise the solver's multipliers on the active rows.
    """
    slack = value[src] - value[dst] - 1.0
    objective = float(size @ value**2)
    nv = value.size
    for threshold in POLISH_THRESHOLDS:
        active = np.flatnonzero(slack <= threshold)
        if active.size == 0:
            continue
        forest = _Forest(nv, src[active], dst[active])
        phi = forest.potentials(np.ones(forest.row.size))
        if np.abs(phi[src[active]] - phi[dst[active]] - 1.0).max() > 1e-9:
            continue  # inconsistent active-set guess
        shift = np.bincount(forest.comp, size * phi, forest.n_comp) / np.bincount(forest.comp, size, forest.n_comp)
        v = phi - shift[forest.comp]
        if np.max(1.0 - (v[src] - v[dst])) > tol or np.abs(v - value).max() > 1e-4:
            continue
        if float(size @ v**2) > objective + 1e-9 * max(1.0, objective):
            continue
        supply = 2.0 * size * v
        new_duals = np.zeros_like(duals)
        flow = forest.subtree_sums(supply)
        new_duals[active[forest.row]] = flow
        negative = flow < -1e-12 * max(1.0, float(np.abs(flow).max(initial=0.0)))
        if negative.any():  # the tree routes against an edge: find a nonnegative flow on all active rows
            rerouted = np.isin(forest.comp[src[active]], np.unique(forest.comp[forest.child[negative]]))
            rows = active[rerouted]
            lam = _nonnegative_flow(supply, src[rows], dst[rows])
            new_duals[rows] = duals[rows] if lam is None else lam
        return v, new_duals, True
    return value, duals, False


def _nonnegative_flow(supply: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """lambda >= 0 on the rows with sum_j lambda_j (e_src - e_dst) = supply on their nodes (HiGHS LP)."""
    from scipy.optimize import linprog

    nodes, position = np.unique(np.r_[src, dst], return_inverse=True)
    m = src.size
    incidence = sp.csr_matrix((np.r_[np.ones(m), -np.ones(m)], (position, np.r_[np.arange(m), np.arange(m)])),
                              shape=(nodes.size, m))
    result = linprog(np.ones(m), A_eq=incidence, b_eq=supply[nodes], bounds=(0, None), method="highs")
    return np.maximum(result.x, 0.0) if result.status == 0 else None


def solve_general(E: np.ndarray, graphs: TokenPriorityGraphs, solver: str = "CLARABEL",
                  tol: float = 1e-10) -> SvmSolution:
    """Generic path: cvxpy on the d×d variable; raises AssumptionViolated if infeasible.

    ``tol``: Clarabel's gap (absolute and relative) and feasibility tolerances.  The gap is
    relative to ||W||^2, so W itself is only accurate to about sqrt(tol) relative (3e-6 at
    the default on unit-norm data, n=500, K=32); 1e-12 gives 1e-8 at about the same cost.
    """
    import time

    import cvxpy as cp

    if (scale := embedding_scale(E)) != 1.0:
        return solve_general(E / scale, graphs, solver, tol).rescaled(scale, 4)
    t0 = time.perf_counter()
    d = E.shape[1]
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    rows = ga.size + ea.size
    nz = np.count_nonzero(E, axis=1)  # row j = (x_a - x_b) x_k^T: at most min(d, nz_a + nz_b) nz_k nonzeros
    a, b, k = np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek]
    nonzeros = int((np.minimum(d, nz[a] + nz[b]) * nz[k]).sum())
    if nonzeros > CVXPY_NONZERO_LIMIT:
        raise InputError(
            f"the Graph-SVM for these embeddings (rank below the vocabulary size) is a cvxpy problem on the "
            f"{d}×{d} matrix whose {rows:,} constraint rows hold {nonzeros:,} nonzeros, above the limit "
            f"{CVXPY_NONZERO_LIMIT:,} (5.1 M took 5 minutes and 4.4 GiB). {DEPENDENT_EMBEDDINGS_FIX}")
    A_ge = constraint_matrix(E, ga, gb, gk)
    A_eq = constraint_matrix(E, ea, eb, ek)
    if A_ge.shape[0] == 0:
        return SvmSolution.no_cross_edge(d, "general (cvxpy, transitively reduced constraints)",
                                         time.perf_counter() - t0)
    w = cp.Variable(d * d)
    constraints = [A_ge @ w >= 1]
    if A_eq.shape[0]:
        constraints.append(A_eq @ w == 0)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(w)), constraints)
    kwargs = {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol} if solver == "CLARABEL" else {}
    problem.solve(solver=solver, **kwargs)
    if problem.status in ("infeasible", "infeasible_inaccurate"):
        certificate = farkas_certificate(A_ge, A_eq)
        if certificate is None:
            raise SolverFailure(f"the solver called the Graph-SVM {problem.status.replace('_', ' ')} but no "
                                "Farkas certificate exists, so it is feasible: a numerical failure")
        raise AssumptionViolated(
            "Graph-SVM is infeasible: no W separates the priorities of the token-priority graphs "
            "with these embeddings (they are not linearly independent); certificate attached",
            certificate=describe_certificate(certificate, ga, gb, gk, ea, eb, ek),
        )
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise SolverFailure(f"the Graph-SVM solver ended with status {problem.status!r}")
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

    ``general``: the active-set dual solver (:func:`solve_dual`) when E has linearly
    independent rows (the problem is then always feasible, THEORY.md §3.3), otherwise cvxpy
    with its Farkas certificate of infeasibility (:func:`solve_general`).  ``dual`` and
    ``cvxpy`` force one of the two.  Should the active-set iteration not reach its KKT point
    (status other than optimal), ``general`` falls back to cvxpy for d <= 48 (where it
    finishes in minutes) and raises RuntimeError above.
    """
    orthonormal = is_orthonormal(E)
    if method == "auto":
        method = "orthonormal" if orthonormal else "general"
    if method == "orthonormal":
        if not orthonormal:
            raise ValueError("the orthonormal path needs E E^T = I")
        return solve_orthonormal(E, graphs)
    fallback = method == "general"
    if method == "general":
        method = "dual" if _full_row_rank(E) else "cvxpy"
    if method == "dual":
        sol = solve_dual(E, graphs)
        if not fallback or sol.status == "optimal" or sol.status.startswith("trivial"):
            return sol
        if E.shape[1] <= 48:
            return solve_general(E, graphs)
        raise RuntimeError(f"the active-set Graph-SVM solver stopped with status {sol.status!r} "
                           f"(max violation {sol.max_violation:.1e}) and d = {E.shape[1]} is too large for the cvxpy "
                           "reference (solve_graph_svm(..., method='cvxpy')); please report this input")
    if method == "cvxpy":
        return solve_general(E, graphs)
    raise ValueError(f"unknown Graph-SVM method {method!r}; use auto, orthonormal, general, dual or cvxpy")


def _full_row_rank(E: np.ndarray) -> bool:
    K, d = E.shape
    if K > d:
        return False
    s = np.linalg.svd(E, compute_uv=False)
    return bool(s.size and s[-1] > 1e-10 * s[0])  # relative: the same answer for E at every scale


class _Forest:
    """Spanning forest of the undirected graph whose edges are the rows j = (u_j, v_j).

    Nodes are score entries (node a*K + k: token a, column k).  One BFS from a virtual hub
    joined to the first node of every connected component.  With D the incidence of the
    tree rows (D phi = phi_u - phi_v), :meth:`potentials` applies a right inverse P of D
    (phi = 0 at each component's root, summed down the tree) and :meth:`subtree_sums` its
    transpose P^T: for the tree row above node x, +-(sum of the values below x), the unique
    mu with D^T mu = values whenever values sum to zero on every component.
    """

    def __init__(self, n_nodes: int, u: np.ndarray, v: np.ndarray):
        from scipy.sparse.csgraph import breadth_first_order

        graph = sp.csr_matrix((np.ones(u.size), (u, v)), shape=(n_nodes, n_nodes))
        n_comp, comp = connected_components(graph, directed=False)
        first = np.full(n_comp, -1)
        first[comp[::-1]] = np.arange(n_nodes)[::-1]
        hub = n_nodes
        rows = np.r_[u, v, np.full(n_comp, hub)]
        cols = np.r_[v, u, first]
        forest = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_nodes + 1, n_nodes + 1))
        order, pred = breadth_first_order(forest, hub, directed=True, return_predecessors=True)
        nodes = order[1:]
        parent = pred[nodes]
        inner = parent != hub
        child, par = nodes[inner], parent[inner]
        # the row joining (parent, child), found by its unordered key
        key = np.minimum(u, v).astype(np.int64) * n_nodes + np.maximum(u, v)
        by_key = np.argsort(key, kind="stable")
        want = np.minimum(par, child).astype(np.int64) * n_nodes + np.maximum(par, child)
        row = by_key[np.searchsorted(key[by_key], want)]
        self.n_nodes, self.comp, self.n_comp = n_nodes, comp, n_comp
        self.u, self.v = u, v
        self.child, self.parent, self.row = child, par, row
        self.sign = np.where(u[row] == child, 1.0, -1.0)  # phi_child = phi_parent + sign * gap
        # depth below the hub by pointer jumping (BFS puts parents before children)
        ancestor = np.full(n_nodes + 1, hub)
        ancestor[child] = par
        depth = np.zeros(n_nodes + 1, dtype=np.int64)
        depth[child] = 1
        while np.any(ancestor != hub):
            depth = depth + depth[ancestor]
            ancestor = ancestor[ancestor]
        self.node_depth = depth[:n_nodes]
        self.node_parent = np.full(n_nodes, -1)
        self.node_parent[child] = par
        self.node_tree_index = np.full(n_nodes, -1)
        self.node_tree_index[child] = np.arange(child.size)
        self.depth = depth[child]
        self.by_depth = np.argsort(self.depth, kind="stable")
        self.level_bounds = np.flatnonzero(np.r_[True, np.diff(self.depth[self.by_depth]) != 0, True])

    def potentials(self, gap: np.ndarray) -> np.ndarray:
        """phi with phi_u - phi_v = gap on every tree row (``gap`` aligned with ``row``), 0 at roots."""
        phi = np.zeros(self.n_nodes)
        step = self.sign * gap
        for lo, hi in zip(self.level_bounds[:-1], self.level_bounds[1:]):
            idx = self.by_depth[lo:hi]
            phi[self.child[idx]] = phi[self.parent[idx]] + step[idx]
        return phi

    def path(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Tree rows (indices into ``row``) on the path a -> b in one component, with signs
        sigma such that e_a - e_b = sum sigma_i (e_u - e_v) of those rows."""
        depth, parent, index = self.node_depth, self.node_parent, self.node_tree_index
        up_a, up_b = [], []
        while depth[a] > depth[b]:
            up_a.append(a)
            a = parent[a]
        while depth[b] > depth[a]:
            up_b.append(b)
            b = parent[b]
        while a != b:
            up_a.append(a)
            a = parent[a]
            up_b.append(b)
            b = parent[b]
        ia, ib = index[np.array(up_a, dtype=np.int64)], index[np.array(up_b, dtype=np.int64)]
        # climbing from a crosses child -> parent (sigma = sign); descending to b the reverse
        return np.r_[ia, ib], np.r_[self.sign[ia], -self.sign[ib]]

    def subtree_sums(self, values: np.ndarray) -> np.ndarray:
        """mu on the tree rows (aligned with ``row``) with D^T mu = values (zero-sum per component)."""
        acc = values.astype(np.float64, copy=True)
        for lo, hi in zip(self.level_bounds[-2::-1], self.level_bounds[:0:-1]):
            idx = self.by_depth[lo:hi]
            np.add.at(acc, self.parent[idx], acc[self.child[idx]])
        return self.sign * acc[self.child]


def _consistent_joins(forest: _Forest, phi: np.ndarray, u: np.ndarray, v: np.ndarray, gap: np.ndarray,
                      tol: float = 1e-9) -> np.ndarray:
    """Which rows (in priority order) can join ``forest`` as equalities phi_u - phi_v = gap.

    Weighted union-find over the forest's components: a row between two components merges
    them (shifting one's potentials); a row inside one is accepted only if its gap matches
    the potentials there.  Returns a boolean mask over the rows.
    """
    comp = forest.comp
    parent: dict[int, int] = {}
    offset: dict[int, float] = {}  # potential shift of a component relative to its parent

    def find(c: int) -> tuple[int, float]:
        path = []
        while c in parent:
            path.append(c)
            c = parent[c]
        total = 0.0
        for x in reversed(path):  # closest to the root first: compress the path
            total += offset[x]
            parent[x], offset[x] = c, total
        return c, (offset[path[0]] if path else 0.0)

    accept = np.zeros(u.size, dtype=bool)
    for j, (a, b, g) in enumerate(zip(u.tolist(), v.tolist(), gap.tolist())):
        ra, da = find(int(comp[a]))
        rb, db = find(int(comp[b]))
        pa, pb = phi[a] + da, phi[b] + db
        if ra == rb:
            accept[j] = abs(pa - pb - g) <= tol
        else:
            parent[rb], offset[rb] = ra, pa - g - pb
            accept[j] = True
    return accept


class _NullSpaceInverse:
    """Exact inverse of the dual Hessian on the tree rows, for few forest components.

    H = D S D^T with S = G ⊗ G (S vec(Lambda) = vec(G Lambda G)) and D the tree-row
    incidence.  With P a right inverse of D (forest potentials) and N the indicator of the
    components (the null space of D; isolated entries are components of their own),
        H^-1 = P^T [S^-1 - S^-1 N (N^T S^-1 N)^-1 N^T S^-1] P,
    i.e. the primal null-space method: M = phi - N s with the component shifts s solving
    (N^T S^-1 N) s = N^T S^-1 phi, Lambda = G^-1 M G^-1 and mu = P^T Lambda.  Entry (c, c')
    of N^T S^-1 N is G^-1[k_c, k_c'] * sum_{a in C, a' in C'} G^-1[a, a'].  One dense
    Cholesky of that n_comp × n_comp matrix, reused for the refinement steps.
    """

    def __init__(self, Ginv: np.ndarray, forest: _Forest):
        from scipy.linalg import cho_factor

        K = Ginv.shape[0]
        self.Ginv, self.forest, self.K = Ginv, forest, K
        node = np.arange(K * K)
        comp_col = np.zeros(forest.n_comp, dtype=np.int64)
        comp_col[forest.comp] = node % K
        member = sp.csr_matrix((np.ones(K * K), (node // K, forest.comp)), shape=(K, forest.n_comp))
        summed = np.asarray(member.T @ Ginv)  # (n_comp, K): sum over the component's tokens
        gram = np.asarray(member.T @ summed.T)  # N^T (G^-1 ⊗ .) N, token part
        gram *= Ginv[np.ix_(comp_col, comp_col)]
        self.factor = cho_factor(gram, lower=True, check_finite=False)

    def __call__(self, gap: np.ndarray) -> np.ndarray:
        from scipy.linalg import cho_solve

        K, Ginv, forest = self.K, self.Ginv, self.forest
        phi = forest.potentials(gap).reshape(K, K)
        weighted = (Ginv @ phi @ Ginv).ravel()
        shift = cho_solve(self.factor, np.bincount(forest.comp, weighted, minlength=forest.n_comp),
                          check_finite=False)
        Lam = Ginv @ (phi - shift[forest.comp].reshape(K, K)) @ Ginv
        return forest.subtree_sums(Lam.ravel())


class _ColumnBlockPreconditioner:
    """Block-Jacobi preconditioner of the dual Hessian on tree rows, one block per column.

    Row j of column k is e_a - e_b on the score entries (a, k), (b, k); the dual Hessian
    H[j, j'] = <A_j, A_j'> = G[k, k'] (e_a - e_b)^T G (e_a' - e_b') couples columns only
    through G[k, k'] (small against G[k, k] for near-orthogonal embeddings), so its diagonal
    blocks H_kk = G[k, k] D_k G D_k^T (D_k: the column's tree rows, independent) are inverted
    exactly (Cholesky).  Blocks of columns whose rows did not change are reused.
    """

    def __init__(self, G: np.ndarray):
        self.G = G
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.factorizations = 0

    def build(self, rows: np.ndarray, column: np.ndarray, token_u: np.ndarray, token_v: np.ndarray) -> None:
        """Blocks for tree rows with global ids ``rows`` (any order), their columns and tokens."""
        from scipy.linalg.lapack import dpotrf, dpotri

        order = np.lexsort((rows, column))
        columns, start, count = np.unique(column[order], return_index=True, return_counts=True)
        width = int(count.max()) if count.size else 0
        self.inverse = np.zeros((columns.size, width, width))
        self.slot_block = np.empty(rows.size, dtype=np.int64)
        self.slot_pos = np.empty(rows.size, dtype=np.int64)
        self.slot_block[order] = np.repeat(np.arange(columns.size), count)
        self.slot_pos[order] = np.arange(rows.size) - np.repeat(start, count)
        cache = {}
        for block, (k, lo, n) in enumerate(zip(columns.tolist(), start.tolist(), count.tolist())):
            pick = order[lo:lo + n]
            key = rows[pick]
            hit = self.cache.get(k)
            if hit is not None and np.array_equal(hit[0], key):
                inv = hit[1]
            else:
                a, b = token_u[pick], token_v[pick]
                X = self.G[:, a] - self.G[:, b]
                chol, info = dpotrf(self.G[k, k] * (X[a] - X[b]), lower=1, clean=0)
                if info != 0:
                    raise np.linalg.LinAlgError(f"column block {k} is not positive definite")
                inv, info = dpotri(chol, lower=1)
                inv = np.tril(inv) + np.tril(inv, -1).T
                self.factorizations += 1
            cache[k] = (key, inv)
            self.inverse[block, :n, :n] = inv
        self.cache = cache

    def __call__(self, r: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.inverse.shape[:2])
        padded[self.slot_block, self.slot_pos] = r
        out = np.matmul(self.inverse, padded[:, :, None])[:, :, 0]
        return out[self.slot_block, self.slot_pos]


def _pcg(matvec, precondition, b: np.ndarray, x: np.ndarray, tol: float, maxiter: int):
    """Preconditioned conjugate gradients for H x = b (H SPD) until max|b - H x| <= tol.

    On convergence of the recurrence the residual is recomputed from scratch (drift) and
    the iteration restarted from there if it is still above ``tol``.  Returns (x, max-norm of
    the true residual, iterations).
    """
    iterations = 0
    r = b - matvec(x)
    while iterations < maxiter and np.abs(r).max(initial=0.0) > tol:
        z = precondition(r)
        p = z.copy()
        rz = float(r @ z)
        while iterations < maxiter:
            Hp = matvec(p)
            alpha = rz / float(p @ Hp)
            x = x + alpha * p
            r = r - alpha * Hp
            iterations += 1
            if np.abs(r).max() <= tol:
                break
            z = precondition(r)
            rz_new = float(r @ z)
            p = z + (rz_new / rz) * p
            rz = rz_new
        r = b - matvec(x)
    return x, float(np.abs(r).max(initial=0.0)), iterations


DIRECT_ALWAYS_COMPONENTS = 1500  # dense n_comp × n_comp Cholesky (18 MB, ~1 GFlop) below this
DIRECT_MAX_COMPONENTS = 3000  # up to here (72 MB, ~9 GFlop) when CG misses its budget
CG_BUDGET = 400  # CG iterations tried before the dense inverse between the two thresholds
CG_TOL_LOOSE, CG_TOL_TIGHT = 1e-7, 1e-11  # max-norm of the residual of the tree rows' margins


def solve_dual(E: np.ndarray, graphs: TokenPriorityGraphs, tol: float = 1e-12, maxiter: int = 100) -> SvmSolution:
    """Graph-SVM for linearly independent (not necessarily orthonormal) embeddings.

    THEORY.md §3.1-§3.2.  Rows j: A_j = (x_a - x_b) x_k^T = E^T (e_a - e_b) e_k^T E, with
    <A_j, W> >= 1 on the transitively reduced cross edges and = 0 on the SCC generators.
    KKT: W = sum_j lambda_j A_j = E^T Lambda E with Lambda = sum_j lambda_j (e_a - e_b) e_k^T,
    so the scores are M = E W E^T = G Lambda G (G = E E^T): the data enter only through G.

    Primal-dual active set (Hintermüller, Ito & Kunisch 2003): for a guess A of the active
    inequalities, the rows of A and the SCC equalities are imposed as M_ak - M_bk = gap_j.
    On a spanning forest of their graph on score entries (non-tree rows are implied when
    the forest potentials satisfy them, else the guess is inconsistent and fewer rows
    join) the multipliers of the tree rows solve the dual system H mu = gap,
        H[j, j'] = <A_j, A_j'> = G[k, k'] (e_a - e_b)^T G (e_a' - e_b'),
    H never formed: one product is two K×K×K matrix products (G Lambda G).  With few forest
    components the null-space formula gives H^-1 exactly (:class:`_NullSpaceInverse`, plus
    refinement; up to 1500 components always, up to 3000 once CG has missed a 400-iteration
    budget); otherwise conjugate gradients with a per-column block-Jacobi preconditioner
    (:class:`_ColumnBlockPreconditioner`), first to a loose then to a tight residual.  Rows of
    A with a negative multiplier leave, violated rows join, until neither exists: the KKT
    system of §3.1.  The first guess is the active set of the orthonormal problem (G = I).
    W^svm = E^T Lambda E.  BLAS runs single-threaded (small products; spinning OpenBLAS
    threads are many times slower on a shared machine).

    Reported: ``max_violation`` (primal), ``min_dual`` (most negative inequality multiplier),
    ``kkt_residual`` = ||W - sum_j lambda_j (x_a - x_b) x_k^T||_F / max(1, ||W||) (stationarity,
    the sum taken row by row from the reported multipliers); details: complementarity
    max_j |lambda_j (margin_j - 1)|, the residual of the last dual solve, iterations.
    ``tol``: the dual-feasibility threshold is ``max(tol, 1e-9 * max|lambda|)``.
    """
    from theorycheck.runtime import single_threaded_blas

    if (scale := embedding_scale(E)) != 1.0:
        return solve_dual(E / scale, graphs, tol, maxiter).rescaled(scale, 4)
    with single_threaded_blas():
        return _solve_dual(E, graphs, tol, maxiter)


def _solve_dual(E: np.ndarray, graphs: TokenPriorityGraphs, tol: float, maxiter: int,
                rows: tuple[np.ndarray, ...] | None = None) -> SvmSolution:
    """``rows``: ``constraint_rows(graphs, reduced=True)`` when the caller has it already."""
    import time

    t0 = time.perf_counter()
    K, d = E.shape
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True) if rows is None else rows
    method = "general (primal-dual active set on M = E W E^T, dual solves, transitively reduced rows)"
    if ga.size == 0:
        return SvmSolution.no_cross_edge(d, method, time.perf_counter() - t0)
    G = E @ E.T
    G = 0.5 * (G + G.T)
    Ginv = None
    m, q = ga.size, ea.size
    # rows 0..m-1: inequalities (gap 1); m..m+q-1: SCC equalities (gap 0); nodes a*K + k
    row_u = np.r_[ga * K + gk, ea * K + ek]
    row_v = np.r_[gb * K + gk, eb * K + ek]
    row_gap = np.r_[np.ones(m), np.zeros(q)]
    row_col, row_tok_u, row_tok_v = np.r_[gk, ek], np.r_[ga, ea], np.r_[gb, eb]

    def margins_of(M: np.ndarray) -> np.ndarray:
        flat = M.ravel()
        return flat[row_u[:m]] - flat[row_v[:m]]

    start = solve_orthonormal(np.eye(K), graphs).W  # scores of the G = I problem
    active = margins_of(start) <= 1.0 + 1e-7
    precondition = _ColumnBlockPreconditioner(G)
    multiplier = np.zeros(m + q)  # by row; warm start of the next solve
    status = "max iterations"
    M = tree = None
    iterations = dual_iterations = direct_solves = 0
    residual = np.inf
    cg_tol = CG_TOL_LOOSE
    cg_failed = False
    skipped_total = exchanges = 0
    seen: set[int] = set()
    cap = last_changes = m + q
    for _ in range(maxiter):
        iterations += 1
        rows = np.r_[np.flatnonzero(active), m + np.arange(q)]
        forest = _Forest(K * K, row_u[rows], row_v[rows])
        phi = forest.potentials(row_gap[rows[forest.row]])
        if np.abs(phi[row_u[rows]] - phi[row_v[rows]] - row_gap[rows]).max() > 1e-9:
            if M is not None:  # joins are filtered below, so only a first guess can be inconsistent
                status = "inconsistent active set"
                break
            # keep the first guess's rows that agree with the SCC equalities and each other
            active[:] = False
            eq_forest = _Forest(K * K, row_u[m:], row_v[m:])
            candidates = np.flatnonzero(margins_of(start) <= 1.0 + 1e-7)
            active[candidates[_consistent_joins(eq_forest, eq_forest.potentials(row_gap[m:][eq_forest.row]),
                                                row_u[candidates], row_v[candidates], row_gap[candidates])]] = True
            continue
        tree_try = rows[forest.row]
        u_t, v_t, gap_t = row_u[tree_try], row_v[tree_try], row_gap[tree_try]

        def matvec(mu, u_t=u_t, v_t=v_t):
            Lam = np.bincount(u_t, mu, minlength=K * K) - np.bincount(v_t, mu, minlength=K * K)
            flat = (G @ Lam.reshape(K, K) @ G).ravel()
            return flat[u_t] - flat[v_t]

        use_direct = forest.n_comp <= DIRECT_ALWAYS_COMPONENTS or (
            forest.n_comp <= DIRECT_MAX_COMPONENTS and cg_failed)
        if not use_direct:
            # CG; between the two thresholds with a budget, after which (and from then on)
            # the dense null-space inverse takes over (CG is slow when columns are nearly
            # fully constrained: G's coupling between columns is what is left)
            budget = CG_BUDGET if forest.n_comp <= DIRECT_MAX_COMPONENTS else 20000
            precondition.build(tree_try, row_col[tree_try], row_tok_u[tree_try], row_tok_v[tree_try])
            mu, residual, used = _pcg(matvec, precondition, gap_t, multiplier[tree_try], tol=cg_tol, maxiter=budget)
            dual_iterations += used
            if residual > cg_tol and forest.n_comp <= DIRECT_MAX_COMPONENTS:
                cg_failed = use_direct = True
        if use_direct:
            if Ginv is None:
                Ginv = np.linalg.inv(G)
                Ginv = 0.5 * (Ginv + Ginv.T)
            inverse = _NullSpaceInverse(Ginv, forest)
            mu = inverse(gap_t)
            direct_solves += 1
            for _refine in range(6):  # iterative refinement with the same factorization
                r = gap_t - matvec(mu)
                residual = float(np.abs(r).max(initial=0.0))
                if residual <= CG_TOL_TIGHT:
                    break
                mu = mu + inverse(r)
                dual_iterations += 1
            cg_tol = CG_TOL_TIGHT
        tree = tree_try
        multiplier = np.zeros(m + q)
        multiplier[tree] = mu
        Lam = np.bincount(row_u[tree], mu, minlength=K * K) - np.bincount(row_v[tree], mu, minlength=K * K)
        M = G @ Lam.reshape(K, K) @ G
        margins = margins_of(M)
        lam_ge = multiplier[:m]
        leave_tol = max(tol, 1e-9 * max(1.0, float(np.abs(lam_ge).max())), 1e3 * cg_tol)
        leave = np.flatnonzero(active & (lam_ge < -leave_tol))
        violated = np.flatnonzero(~active & (margins < 1.0 - max(1e-10, 10 * cg_tol)))
        if leave.size == 0 and violated.size == 0:
            if cg_tol <= CG_TOL_TIGHT:
                status = "optimal"
                break
            cg_tol = CG_TOL_TIGHT  # the loose solves settled: confirm on tight ones
            continue
        # PDAS can cycle when H is not an M-matrix: on a repeated active set, change only the
        # worst rows (most negative multipliers, most violated margins), halving the cap
        # (also when the number of changes grows again: the usual prelude of a cycle); it
        # doubles back while the number of changes falls
        signature = hash(active.tobytes())
        n_changes = leave.size + violated.size
        if signature in seen or n_changes > last_changes:
            cap = max(1, min(cap, n_changes, last_changes) // 2)
        elif n_changes < last_changes:
            cap = min(m + q, 2 * cap)  # progress again: let the cap grow back
        seen.add(signature)
        last_changes = n_changes
        leave = leave[np.argsort(lam_ge[leave], kind="stable")][:cap]
        active[leave] = False
        violated = violated[np.argsort(margins[violated], kind="stable")][:cap]  # most violated first
        if violated.size:
            # join only rows consistent with the kept ones and each other: a violated row
            # inside a component of the kept rows whose potentials differ from its gap is a
            # combination e_a - e_b = sum sigma_i (e_u - e_v) of tree rows; raising its
            # multiplier lowers theirs where sigma_i = +1 (a dual step, W unchanged), so the
            # inequality row among those with the smallest multiplier leaves in exchange
            kept = np.r_[np.flatnonzero(active), m + np.arange(q)]
            base = _Forest(K * K, row_u[kept], row_v[kept])
            base_phi = base.potentials(row_gap[kept[base.row]])
            accept = _consistent_joins(base, base_phi, row_u[violated], row_v[violated], row_gap[violated])
            removed = set()
            for j in violated[~accept].tolist():
                on_path, sigma = base.path(int(row_u[j]), int(row_v[j]))
                rows_on_path = kept[base.row[on_path]]
                candidates = rows_on_path[(sigma > 0) & (rows_on_path < m)]
                candidates = [r for r in candidates.tolist() if r not in removed]
                if candidates:
                    removed.add(min(candidates, key=lambda r: multiplier[r]))
            if removed:
                exchanges += len(removed)
                active[np.fromiter(removed, dtype=np.int64)] = False
                kept = np.r_[np.flatnonzero(active), m + np.arange(q)]
                base = _Forest(K * K, row_u[kept], row_v[kept])
                accept = _consistent_joins(base, base.potentials(row_gap[kept[base.row]]),
                                           row_u[violated], row_v[violated], row_gap[violated])
            skipped_total += int(violated.size - accept.sum())
            if leave.size == 0 and not removed and not accept.any():
                status = "stalled (every violated row inconsistent with the active set)"
                break
            active[violated[accept]] = True
    if M is None:
        return solve_general(E, graphs)
    lam_ge, nu = multiplier[:m], multiplier[m:]
    Lam = (np.bincount(row_u, multiplier, minlength=K * K)
           - np.bincount(row_v, multiplier, minlength=K * K)).reshape(K, K)
    W = E.T @ Lam @ E
    # stationarity: sum_j lambda_j (x_a - x_b) x_k^T = sum_k c_k x_k^T, c_k summed row by row
    used = np.flatnonzero(multiplier)
    weights = sp.csr_matrix((multiplier[used], (row_col[used], np.arange(used.size))), shape=(K, used.size))
    combo = (weights @ (E[row_tok_u[used]] - E[row_tok_v[used]])).T @ E
    kkt = float(np.linalg.norm(W - combo)) / max(1.0, float(np.linalg.norm(W)))
    margins = margins_of(E @ W @ E.T)
    margin, violation = check_constraints(W, E, graphs)
    return SvmSolution(
        W=W, method=method, status=status, min_margin=margin, max_violation=violation, kkt_residual=kkt,
        min_dual=float(lam_ge.min()), solve_seconds=time.perf_counter() - t0,
        details={"variables": int(K * K), "constraints": int(m + q), "active_set_iterations": iterations,
                 "active": int(np.count_nonzero(active)), "tree_rows": int(tree.size),
                 "dual_iterations": dual_iterations, "direct_solves": direct_solves,
                 "dual_residual": residual, "joins_skipped": skipped_total,
                 "exchanges": exchanges, "block_factorizations": precondition.factorizations,
                 "complementarity": float(np.max(np.abs(lam_ge * (margins - 1.0)), initial=0.0)),
                 "lambda": lam_ge, "nu": nu},
    )


def solve_graph_svm_nuclear(E: np.ndarray, graphs: TokenPriorityGraphs, method: str = "auto",
                            tol: float = 1e-10, max_seconds: float = 600.0) -> SvmSolution:
    """Nuclear-norm Graph-SVM (THEORY.md §3.4): the implicit bias Tarzanagh et al. (2023) prove
    for the factorised W = K Q^T model,

        W^* = argmin ||W||_*  s.t.  <A_j, W> >= 1 (cross-SCC rows),  <A_l, W> = 0 (SCC rows),
        A_j = (x_a - x_b) x_k^T = E^T (e_a - e_b) e_k^T E,

    on the rows of ``constraint_rows(graphs, reduced=True)`` (same feasible set as all TPG
    edges, §3.1).  Dual: max sum_j lambda_j  s.t.  ||Z||_2 <= 1, lambda >= 0, with
    Z = sum_j lambda_j A_j + sum_l nu_l A_l = E^T Lambda E (Lambda: K×K, one scatter).

    ``method``:

    * ``"alm"``: augmented Lagrangian on that dual (equivalently the proximal point method
      W^{t+1} = argmin_{feasible W} ||W||_* + ||W - W^t||_F^2 / (2 sigma_t) on the primal), each
      step solved by semismooth Newton-CG on the multipliers y = (lambda, nu):
          psi(y) = -sum_j y_j + ||SVT_sigma(W^t + sigma A^*y)||_F^2 / (2 sigma)
                   + ||min(0, u^t + sigma y_ineq)||^2 / (2 sigma),
          grad psi = A(W^+) - g + [min(0, u^t + sigma y_ineq); 0],  W^+ = SVT_sigma(W^t + sigma A^*y),
      (SVT_sigma: singular values shrunk by sigma; u^t <= 0: minus the inequality slacks) and
      W^{t+1} = W^+, u^{t+1} = min(0, u^t + sigma y_ineq).  The generalized Hessian
      sigma (A J A^* + D) uses the derivative J of SVT at the current SVD (divided differences
      of the shrunk singular values on the symmetric / skew parts of U^T H V) and D the
      indicator of inactive inequalities; A and A^* are E products (never a d²-column matrix).
      CG is preconditioned block-Jacobi, one exact block of that matrix per query column
      (:class:`_NuclearQueryBlocks`, Cholesky), built once per outer step.
      sigma_t = ||W^0||_2 * min(2^t, 30): small steps first, so that most singular values
      survive the shrinkage while the rank settles, then fast outer convergence.  The outer
      iterates y_t converge linearly, so each inner Newton starts at the extrapolation
      y_t + rho (y_t - y_(t-1)), rho = ||y_t - y_(t-1)|| / ||y_(t-1) - y_(t-2)|| (at most 0.5):
      without it each multiplier update left an inner residual ~40x the last outer one
      (unit-norm, T = 8, n = 10,000: 12,459 -> 3,371 CG).
      Screening: inequality rows whose margin exceeds 1 + 0.3 are left out of the steps (y = 0
      there) and join as soon as an iterate brings them within 1 + 0.15; the stop and the
      certificate below use every row.
      Warm start: two active-set steps of the Frobenius dual (``solve_dual(maxiter=2)``), its W
      (not necessarily feasible) and lambda / ||W||_2.  Once the outer residual is below 1e-7
      the exact certificate is evaluated after each outer step and the ALM stops when its gap
      and KKT residual are <= 1e-10 (10x inside the 1e-9 of status "optimal").
      Finally the SCC equalities are made exact by a Frobenius projection onto their null
      space (:class:`_EqualityProjection`: A_eq A_eq^* factorised once per solve) and the
      inequalities by rescaling W by 1 / min margin.
    * ``"cvxpy"``: the reference SDP (Clarabel; small d only: 16-30 s at n=500, K=d=32).
    * ``"auto"`` (default): ``alm`` when E has full row rank (the problem is then always
      feasible, §3.3); when ``alm`` does not certify its answer, cvxpy for d <= 48, else
      RuntimeError.  For E without full row rank: cvxpy (which raises AssumptionViolated
      on infeasible input with its status) for d <= 48; above, ``alm`` and, should it not
      certify, a Farkas LP (AssumptionViolated with the certificate) or RuntimeError.

    Certificate (either method): Z = sum_j lambda_j A_j - sum_l mu_l A_l (mu = -nu, cvxpy's
    sign) must be a subgradient of ||.||_* at W: ||Z||_2 <= 1 and <Z, W> = ||W||_*;
    ``kkt_residual`` = max(max(0, ||Z||_2 - 1), |<Z, W> - ||W||_*| / max(1, ||W||_*)).  Weak
    duality: every feasible W' has ||W'||_* >= <Z+, W'> / ||Z+||_2 >= sum_j lambda+_j / ||Z+||_2
    (lambda+ = max(lambda, 0), Z+ built from it), a lower bound that does not trust the
    solver; details hold it and the relative gap to ||W||_*.  ``alm`` reports status
    "optimal" when that gap is <= 1e-9 and the violation (all TPG rows) <= 1e-9.
    ``tol``: the ALM's target for the gap, the dual infeasibility ||Z||_2 - 1 and the
    inner residual.

    The minimiser need not be unique (||.||_* is not strictly convex): two certified answers
    agree in ||W||_* (to the gaps), and in W only where the solution is unique.
    """
    if method not in ("auto", "alm", "cvxpy"):
        raise ValueError(f"unknown nuclear Graph-SVM method {method!r}; use auto, alm or cvxpy")
    if (scale := embedding_scale(E)) != 1.0:
        return solve_graph_svm_nuclear(E / scale, graphs, method, tol, max_seconds).rescaled(scale, 2)
    d = E.shape[1]
    if method == "cvxpy":
        return _solve_nuclear_cvxpy(E, graphs)
    full_rank = _full_row_rank(E)
    if method == "auto" and not full_rank and d <= NUCLEAR_CVXPY_MAX_D:
        return _solve_nuclear_cvxpy(E, graphs)
    sol = _solve_nuclear_alm(E, graphs, tol, max_seconds)
    if method == "alm" or sol.status == "optimal" or sol.status.startswith("trivial"):
        return sol
    if d <= NUCLEAR_CVXPY_MAX_D:
        return _solve_nuclear_cvxpy(E, graphs)
    if not full_rank:
        ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
        certificate = farkas_certificate(constraint_matrix(E, ga, gb, gk), constraint_matrix(E, ea, eb, ek))
        if certificate is not None:
            raise AssumptionViolated(
                "nuclear-norm Graph-SVM is infeasible with these embeddings (they are not linearly "
                "independent); certificate attached",
                certificate=describe_certificate(certificate, ga, gb, gk, ea, eb, ek))
    raise RuntimeError(f"the nuclear-norm Graph-SVM ALM stopped with status {sol.status!r} (relative gap "
                       f"{sol.details.get('relative_gap', float('nan')):.1e}, violation {sol.max_violation:.1e}) "
                       f"and d = {d} is too large for the cvxpy reference "
                       "(solve_graph_svm_nuclear(..., method='cvxpy')); please report this input")


NUCLEAR_CVXPY_MAX_D = 48  # the SDP's reach: about 30 s at d = 32


class _NuclearRows:
    """The constraint rows as maps on W: A(W)_j = M[a_j, k_j] - M[b_j, k_j] with M = E W E^T,
    A^*(y) = E^T Lambda(y) E, Lambda(y) = sum_j y_j (e_a - e_b) e_k^T (one sparse product)."""

    def __init__(self, E: np.ndarray, a: np.ndarray, b: np.ndarray, k: np.ndarray):
        self.E, self.K = E, E.shape[0]
        self.u, self.v = a * self.K + k, b * self.K + k
        self.col = k
        self._incidence: dict = {}  # (lo, hi) -> rows lo*K:hi*K of the incidence matrix

    def scores(self, M: np.ndarray) -> np.ndarray:
        flat = M.ravel()
        return flat[self.u] - flat[self.v]

    def forward(self, W: np.ndarray) -> np.ndarray:
        return self.scores(self.E @ W @ self.E.T)

    def incidence(self, lo: int = 0, hi: int | None = None) -> sp.csr_matrix:
        """Rows lo*K:hi*K (tokens lo..hi-1) of the sparse incidence matrix (K^2 × rows, entries
        +-1; Lambda(y) = incidence @ y: one product, faster than two bincounts), built once."""
        hi = self.K if hi is None else hi
        if (0, self.K) not in self._incidence:
            rows = np.arange(self.u.size)
            self._incidence[(0, self.K)] = sp.csr_matrix(
                (np.r_[np.ones(rows.size), -np.ones(rows.size)], (np.r_[self.u, self.v], np.r_[rows, rows])),
                shape=(self.K * self.K, rows.size))
        if (lo, hi) not in self._incidence:
            self._incidence[(lo, hi)] = self._incidence[(0, self.K)][lo * self.K:hi * self.K]
        return self._incidence[(lo, hi)]

    def scatter(self, y: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Lambda(y), or its rows lo:hi."""
        hi = self.K if hi is None else hi
        return (self.incidence(lo, hi) @ y).reshape(hi - lo, self.K)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return self.E.T @ self.scatter(y) @ self.E


def _svt_derivative_weights(s: np.ndarray, shrunk: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (on H~ and on H~^T, H~ = U^T H V) of the derivative of SVT_sigma at U diag(s) V^T.

    The symmetric part of H~ is scaled by the divided differences (f(s_i) - f(s_j)) / (s_i - s_j)
    (f(s) = max(s - sigma, 0); f'(s_i) on ties), the skew part by (f(s_i) + f(s_j)) / (s_i + s_j).
    """
    si, sj = s[:, None], s[None, :]
    fi, fj = shrunk[:, None], shrunk[None, :]
    diff = si - sj
    tie = np.abs(diff) <= 1e-13 * max(1.0, float(s[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        sym = np.where(tie, (si > sigma).astype(float) * np.ones_like(diff), (fi - fj) / np.where(tie, 1.0, diff))
        total = si + sj
        skew = np.where(total > 0, (fi + fj) / np.where(total > 0, total, 1.0), 0.0)
    return 0.5 * (sym + skew), 0.5 * (sym - skew)


class _TokenRange(NamedTuple):
    """One token range R = lo:hi of :class:`_NuclearNewtonMatrix`: EU[R] (and its transpose), and
    buffers for Lambda[R] EV, its share of H and the blocks of EU[R] X."""

    lo: int
    hi: int
    EU_T: np.ndarray
    EU: np.ndarray
    LEV: np.ndarray
    share: np.ndarray
    lower: np.ndarray
    left: np.ndarray
    left_low: np.ndarray


class _NuclearNewtonMatrix:
    """The Newton matrix of the ALM step as a product, x -> sigma (A J A^* x + extra * x):

        A J A^* x = scores(EU X EV^T),  X = keep_sym * H + keep_skew * H^T,  H = EU^T Lambda(x) EV,

    (EU = E U, EV = E V from the SVD of the ALM iterate; J: the SVT derivative of
    :func:`_svt_derivative_weights`).  Both weights vanish where both singular values are
    shrunk to zero (indices >= rank: (0 - 0) / (s_i - s_j) and 0 / (s_i + s_j)), so that block
    of H is never formed nor multiplied: 3.5 instead of 4 K×K×d products at rank d / 2.

    From K = NUCLEAR_SPLIT_MIN_K tokens on, the tokens are cut into two halves R_0, R_1, each
    a thread (numpy's products release the GIL):  H = sum_t EU[R_t]^T (Lambda[R_t] EV), and
    (EU X EV^T)[R_t] = (EU[R_t] X) EV^T; the same two halves on any number of cores, so the
    sums come out the same.  The d×d and K×d intermediates live in buffers kept across CG
    iterations: a fresh 0.5 MB array per product costs a pass of page faults (ks * H + kk * H.T:
    0.67 ms fresh, 0.20 ms in place, at d = 256)."""

    def __init__(self, rows: _NuclearRows, EU: np.ndarray, EV: np.ndarray, keep_sym: np.ndarray,
                 keep_skew: np.ndarray, extra: np.ndarray, sigma: float, rank: int, halves: bool | None = None):
        K, d = EU.shape
        self.rows, self.sigma, self.extra, self.rank = rows, sigma, extra, rank
        self.EU, self.EV, self.EV_T = EU, EV, np.ascontiguousarray(EV.T)
        self.keep_sym, self.keep_skew_T = keep_sym, np.ascontiguousarray(keep_skew.T)
        self.product = np.empty((K, K))
        self.H, self.X, self.HT = np.zeros((d, d)), np.empty((d, d)), np.empty((d, d))
        if halves is None:
            halves = K >= NUCLEAR_SPLIT_MIN_K
        bounds = [0, K // 2, K] if halves and K >= 2 else [0, K]
        self.parts = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            n = hi - lo
            share = self.H if len(bounds) == 2 else np.zeros((d, d))  # H[r:, r:] stays 0 (its weights are 0)
            self.parts.append(_TokenRange(lo, hi, np.ascontiguousarray(EU[lo:hi].T), EU[lo:hi], np.empty((n, d)),
                                          share, np.empty((d - rank, rank)), np.empty((n, d)), np.empty((n, rank))))
            rows.incidence(lo, hi)  # built here, not by the two threads at once

    def _share_of_H(self, part: _TokenRange, x: np.ndarray) -> None:
        r, share = self.rank, part.share
        np.matmul(self.rows.scatter(x, part.lo, part.hi), self.EV, out=part.LEV)
        np.matmul(part.EU_T[:r], part.LEV, out=share[:r])
        if r < share.shape[0]:
            np.matmul(part.EU_T[r:], part.LEV[:, :r], out=part.lower)
            share[r:, :r] = part.lower

    def _rows_of_product(self, part: _TokenRange) -> None:
        r, X, left = self.rank, self.X, part.left
        np.matmul(part.EU[:, :r], X[:r], out=left)  # EU[R] X, with X[r:, r:] = 0
        if r < X.shape[0]:
            np.matmul(part.EU[:, r:], X[r:, :r], out=part.left_low)
            left[:, :r] += part.left_low
        np.matmul(left, self.EV_T, out=self.product[part.lo:part.hi])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        H, X = self.H, self.X
        in_threads(self._share_of_H, self.parts, x)
        if len(self.parts) > 1:
            np.add(self.parts[0].share, self.parts[1].share, out=H)
        # X = keep_sym * H + keep_skew * H^T, as (keep_skew^T * H)^T, in the buffers
        np.multiply(self.keep_sym, H, out=X)
        np.multiply(self.keep_skew_T, H, out=self.HT)
        np.add(X, self.HT.T, out=X)
        in_threads(self._rows_of_product, self.parts)
        out = self.rows.scores(self.product)
        out += self.extra * x
        out *= self.sigma
        return out


NUCLEAR_SPLIT_MIN_K = 256  # from here the Newton product runs as two threads (measured: K = 256 3.2 -> 2.0-2.4 ms, K = 192 even, K = 128 0.43 -> 0.67)


class _NuclearQueryBlocks:
    """Block-Jacobi preconditioner of the Newton matrix sigma (A J A^* + D + ridge I): one exact
    block per query column k.  The rows of column k share x_k, so in the rotated basis
    (U^T A_j V = p_j q_k^T, p_j = U^T (x_a - x_b), q_k = V^T x_k) their block is
        P_k M_k P_k^T,  M_k = diag(keep_sym q_k^2) + diag(q_k) keep_skew diag(q_k)
    (M_k: d×d, once per column; O(rows d^2) in all).  Blocks are grouped by width (rounded up
    to a multiple of 8, so that little padding is multiplied) and formed as batched products per
    group, inverted by Cholesky, and applied as batched products; from NUCLEAR_SPLIT_MIN_BYTES of
    inverses on, two threads build and apply them, each half the groups (each block is computed
    alone, so the answer does not depend on the split)."""

    def __init__(self, rows: _NuclearRows):
        col = rows.col
        order = np.argsort(col, kind="stable")
        columns, start, count = np.unique(col[order], return_index=True, return_counts=True)
        self.rows, self.size = rows, col.size
        width = -(-count // 8) * 8
        self.groups = []  # (columns, slot): slot[i, p] = row at position p of block i (self.size: padding)
        for w in np.unique(width).tolist():
            blocks = np.flatnonzero(width == w)
            slot = np.full((blocks.size, w), self.size, dtype=np.int64)
            for i, block in enumerate(blocks.tolist()):
                slot[i, :count[block]] = order[start[block]:start[block] + count[block]]
            self.groups.append((columns[blocks], slot))
        # each block's tokens a_j, b_j (K: the padding, a zero row of the padded EU below)
        token_a, token_b = np.r_[rows.u // rows.K, rows.K], np.r_[rows.v // rows.K, rows.K]
        self.tokens = [(token_a[slot], token_b[slot]) for _, slot in self.groups]
        # the apply reads every inverse: groups split by the bytes of their inverses
        sizes = [8 * slot.size * slot.shape[1] for _, slot in self.groups]
        # stacked mat-vecs: np.matmul (into kept buffers) while the inverses stay in cache, einsum's
        # one streaming pass once they do not (OpenBLAS packs each matrix first: twice the reads)
        self.streaming = sum(sizes) >= NUCLEAR_STREAM_MIN_BYTES
        self.columns = [None if self.streaming else np.empty(slot.shape + (1,)) for _, slot in self.groups]
        self.halves = [list(range(len(sizes)))]
        if sum(sizes) >= NUCLEAR_SPLIT_MIN_BYTES and len(sizes) > 1 and _worker_count() > 1:
            half = balanced_groups(sizes, 2)
            self.halves = [np.flatnonzero(half == h).tolist() for h in (0, 1)]

    def build(self, EU: np.ndarray, EV: np.ndarray, keep_sym: np.ndarray, keep_skew: np.ndarray,
              extra: np.ndarray, sigma: float) -> None:
        padded_EU = np.vstack([EU, np.zeros((1, EU.shape[1]))])  # padding: p = 0, unit diagonal below
        diagonal = np.r_[sigma * extra, 1.0]
        self.inverse = [None] * len(self.groups)
        in_threads(self._build_groups, self.halves, padded_EU, EV, keep_sym, keep_skew, diagonal, sigma)

    def _build_groups(self, groups: list[int], padded_EU, EV, keep_sym, keep_skew, diagonal, sigma) -> None:
        for g in groups:
            columns, slot = self.groups[g]
            Q = EV[columns]
            M = keep_skew[None] * (Q[:, :, None] * Q[:, None, :])
            M[:, np.arange(Q.shape[1]), np.arange(Q.shape[1])] += (Q * Q) @ keep_sym.T
            token_a, token_b = self.tokens[g]
            Pg = padded_EU[token_a] - padded_EU[token_b]  # rows p_j = U^T (x_a - x_b) of block
            H = Pg @ (sigma * M) @ Pg.transpose(0, 2, 1)
            H = 0.5 * (H + H.transpose(0, 2, 1))
            H[:, np.arange(slot.shape[1]), np.arange(slot.shape[1])] += diagonal[slot]
            self.inverse[g] = _spd_inverses(H)

    def _apply(self, groups: list[int], padded: np.ndarray, out: np.ndarray) -> None:
        for g in groups:
            slot = self.groups[g][1]
            if self.streaming:
                out[slot] = np.einsum("bij,bj->bi", self.inverse[g], padded[slot])
            else:
                np.matmul(self.inverse[g], padded[slot][:, :, None], out=self.columns[g])
                out[slot] = self.columns[g][:, :, 0]

    def __call__(self, r: np.ndarray) -> np.ndarray:
        padded = np.append(r, 0.0)  # position self.size: the padding (reads 0, writes ignored)
        out = np.empty(self.size + 1)
        in_threads(self._apply, self.halves, padded, out)
        return out[:self.size]


# the apply's stacked mat-vecs (one thread, the block shapes of n = 10,000, scaled): np.matmul against
# einsum 0.51 / 0.66 ms at 13 MB of inverses, 0.93 / 0.79 at 16 MB, 2.48 / 1.34 at 24 MB, 3.1 / 1.6 at
# 33 MB; 0.20 / 0.42 ms at 9.6 MB (n = 2,000 solve: 1.06 -> 0.95 s; n = 10,000 with np.matmul: 27.4-28.1 -> 30.2-31.0 s)
NUCLEAR_STREAM_MIN_BYTES = 16 << 20
NUCLEAR_SPLIT_MIN_BYTES = 16 << 20  # from here two threads (apply, measured: n = 10,000, 34 MB: 1.75-2.08 -> 1.32 ms;
#                                     n = 5,000, 7.4 MB: 0.40-0.45 -> 0.48-0.72 ms, so not there)


def _spd_inverses(H: np.ndarray) -> np.ndarray:
    """Inverses of a stack of symmetric positive definite matrices (LAPACK potrf + potri); a
    matrix that is numerically only semidefinite (tiny ridge) gets the inverse of its diagonal."""
    from scipy.linalg.lapack import dpotrf, dpotri

    out = np.empty_like(H)
    for i, block in enumerate(H):
        chol, info = dpotrf(block, lower=1, clean=0)
        if info != 0:
            out[i] = np.diag(1.0 / np.maximum(np.diag(block), 1e-300))
            continue
        inv, _info = dpotri(chol, lower=1)
        out[i] = np.tril(inv) + np.tril(inv, -1).T
    return out


def _nuclear_pcg(matvec, precondition, b: np.ndarray, rtol: float, maxiter: int) -> tuple[np.ndarray, int]:
    """Preconditioned CG for H x = b from x = 0 until ||b - H x||_2 <= rtol ||b||_2 (or maxiter)."""
    x = np.zeros_like(b)
    r = b.copy()
    z = precondition(r)
    p = z.copy()
    rz = float(r @ z)
    bound = rtol * float(np.linalg.norm(b))
    iterations = 0
    while iterations < maxiter:
        Hp = matvec(p)
        alpha = rz / float(p @ Hp)
        x += alpha * p
        r -= alpha * Hp
        iterations += 1
        if np.linalg.norm(r) <= bound:
            break
        z = precondition(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, iterations


def _solve_nuclear_alm(E: np.ndarray, graphs: TokenPriorityGraphs, tol: float, max_seconds: float) -> SvmSolution:
    from theorycheck.runtime import single_threaded_blas

    with single_threaded_blas():
        return _nuclear_alm(E, graphs, tol, max_seconds)


def _nuclear_alm(E: np.ndarray, graphs: TokenPriorityGraphs, tol: float, max_seconds: float) -> SvmSolution:
    import time

    t0 = time.perf_counter()
    K, d = E.shape
    reduced_rows = constraint_rows(graphs, reduced=True)
    ga, gb, gk, ea, eb, ek = reduced_rows
    method = "nuclear (ALM on the dual, semismooth Newton-CG, transitively reduced rows)"
    if ga.size == 0:
        return SvmSolution.no_cross_edge(d, method, time.perf_counter() - t0)
    m, q = ga.size, ea.size
    all_a, all_b, all_k = np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek]
    rows = _NuclearRows(E, all_a, all_b, all_k)
    project = _EqualityProjection(E, ea, eb, ek)
    # warm start: a few active-set steps of the Frobenius dual (solve_dual); W = A^*(lambda) need
    # not be feasible, lambda / ||W||_2 is a dual guess.  Without independent rows: from 0.
    W, y, spectral = np.zeros((d, d)), np.zeros(m + q), 1.0
    if _full_row_rank(E):
        frobenius = _solve_dual(E, graphs, 1e-12, NUCLEAR_WARM_ITERATIONS, rows=reduced_rows)
        if "lambda" in frobenius.details and np.linalg.norm(frobenius.W, 2) > 0:
            W, spectral = frobenius.W, float(np.linalg.norm(frobenius.W, 2))
            y = np.r_[frobenius.details["lambda"], frobenius.details["nu"]] / spectral
    margins = rows.forward(W)[:m]
    u_all = np.minimum(0.0, 1.0 - margins)  # minus the slacks
    working = (margins <= 1.0 + NUCLEAR_SCREEN) | (y[:m] > 0)  # screened inequality rows
    sigma = NUCLEAR_SIGMA_START * spectral
    counts = {"outer": 0, "newton": 0, "cg": 0, "svd": 0, "block_builds": 0, "certify_checks": 0, "joins": 0,
              "extrapolated": 0}
    status = "max iterations"
    outer_residual = np.inf
    history = []
    certified = sub = None
    y_before = last_step = None  # the previous outer step's start and length, for the extrapolation
    for _outer in range(NUCLEAR_MAX_OUTER):
        counts["outer"] += 1
        if sub is None:  # the working rows: screened inequalities, then all SCC equalities
            idx = np.r_[np.flatnonzero(working), m + np.arange(q)]
            mw = int(working.sum())
            rw = _NuclearRows(E, all_a[idx], all_b[idx], all_k[idx])
            sub = (idx, mw, rw, np.r_[np.ones(mw), np.zeros(q)], _NuclearQueryBlocks(rw))
        idx, mw, rw, target, blocks = sub
        yw, u = y[idx], u_all[idx[:mw]]
        # the outer iterates converge linearly, y_(t+1) - y_t ~ rho (y_t - y_(t-1)): the inner
        # Newton starts at y_t + rho (y_t - y_(t-1)), rho the last ratio of outer steps
        step = float(np.linalg.norm(y - y_before)) if y_before is not None else None
        if step is not None and last_step:
            rho = min(NUCLEAR_EXTRAPOLATE_MAX, step / last_step)
            yw = yw + rho * (yw - y_before[idx])
            counts["extrapolated"] += 1
        y_before, last_step = y.copy(), step

        def evaluate(yw, W=W, u=u, sigma=sigma, rw=rw, mw=mw, target=target):
            U, s, Vt = np.linalg.svd(W + sigma * rw.adjoint(yw))
            shrunk = np.maximum(s - sigma, 0.0)
            W_next = (U * shrunk) @ Vt
            slack_part = np.minimum(0.0, u + sigma * yw[:mw])
            psi = -yw[:mw].sum() + (shrunk @ shrunk + slack_part @ slack_part) / (2 * sigma)
            grad = rw.forward(W_next) - target
            grad[:mw] += slack_part
            counts["svd"] += 1
            return psi, grad, W_next, (U, s, Vt.T, shrunk), slack_part

        psi, grad, W_next, svd, slack_part = evaluate(yw)
        inner_tol = max(tol, 1e-15 * sigma, NUCLEAR_INNER_ETA * min(outer_residual, 1.0))
        built = False
        for _inner in range(NUCLEAR_MAX_NEWTON):
            residual = float(np.abs(grad).max())
            if residual <= inner_tol or time.perf_counter() - t0 > max_seconds:
                break
            U, s, V, shrunk = svd
            keep_sym, keep_skew = _svt_derivative_weights(s, shrunk, sigma)
            EU, EV = E @ U, E @ V
            extra = np.full(idx.size, min(NUCLEAR_RIDGE_MAX, NUCLEAR_RIDGE_SCALE * residual))  # LM damping
            extra[:mw] += slack_part < 0  # D: the inactive inequalities
            if not built:  # one preconditioner per outer step (sigma fixed; structure settles fast)
                blocks.build(EU, EV, keep_sym, keep_skew, extra, sigma)
                counts["block_builds"] += 1
                built = True

            hessian = _NuclearNewtonMatrix(rw, EU, EV, keep_sym, keep_skew, extra, sigma, int(np.count_nonzero(shrunk)))
            step, used = _nuclear_pcg(hessian, blocks, -grad, NUCLEAR_CG_RTOL, NUCLEAR_CG_MAXITER)
            counts["cg"] += used
            counts["newton"] += 1
            slope = float(grad @ step)
            if not slope < 0:
                step, slope = -grad, -float(grad @ grad)
            # Armijo, or a smaller residual: near the solution psi's decrease (~ residual^2 / sigma)
            # sinks below its rounding error while the residual still resolves the step
            t = 1.0
            for _halving in range(NUCLEAR_MAX_HALVINGS):
                trial = evaluate(yw + t * step)
                if trial[0] <= psi + 1e-4 * t * slope or float(np.abs(trial[1]).max()) <= 0.5 * residual:
                    break
                t *= 0.5
            yw = yw + t * step
            psi, grad, W_next, svd, slack_part = trial
        change = float(np.linalg.norm(W_next - W)) / sigma  # = ||Z - Pi_ball(Z + W / sigma)||_F
        W = W_next
        y[idx] = yw
        u_all[idx[:mw]] = slack_part
        gmax = float(np.abs(grad).max())
        # screened rows that come near (or below) the margin join the working set
        margins = rows.forward(W)[:m]
        joining = ~working & (margins <= 1.0 + 0.5 * NUCLEAR_SCREEN)
        if joining.any():
            counts["joins"] += int(joining.sum())
            working |= joining
            u_all[joining] = np.minimum(0.0, 1.0 - margins[joining])
            y[np.flatnonzero(joining)] = 0.0
            sub = None
        outer_residual = max(change, gmax, float(np.max(1.0 - margins, initial=0.0)))
        history.append((sigma, outer_residual))
        if outer_residual <= NUCLEAR_CERTIFY_BELOW and not joining.any():
            counts["certify_checks"] += 1  # stop as soon as the exact certificate holds
            trial_solution = _nuclear_certified(E, graphs, rows, project, m, W, y, method, "converged", t0)
            if trial_solution.status == "optimal" and max(trial_solution.details["relative_gap"],
                                                          trial_solution.kkt_residual) <= NUCLEAR_EARLY_GAP:
                certified = trial_solution
                break
        if (change <= tol and gmax <= max(tol, 1e-15 * sigma) and not joining.any()) \
                or time.perf_counter() - t0 > max_seconds:
            status = "converged" if change <= tol else "time limit"
            break
        sigma = min(sigma * NUCLEAR_SIGMA_GROWTH, NUCLEAR_SIGMA_MAX * spectral)
    solution = certified or _nuclear_certified(E, graphs, rows, project, m, W, y, method, status, t0)
    solution.details.update({"alm_" + key: value for key, value in counts.items()})
    solution.details["alm_working_rows"] = int(working.sum()) + q
    solution.details["alm_sigma_residual"] = history
    return solution



NUCLEAR_SIGMA_START, NUCLEAR_SIGMA_GROWTH, NUCLEAR_SIGMA_MAX = 1.0, 2.0, 30.0  # sigma in units of ||W_0||_2
NUCLEAR_MAX_OUTER, NUCLEAR_MAX_NEWTON, NUCLEAR_MAX_HALVINGS = 60, 40, 12
# loose inexact Newton: more Newton steps, fewer CG iterations in all (unit-norm, T = 8, against
# 3e-2 and growth 3: n=500 5.8k -> 3.5k CG, n=2,000 5.6k -> 3.4k, n=5,000 7.4k -> 4.7k; n=10,000 the
# same 13.3k-13.6k CG and ~4 % slower); the certificate, not the CG, decides "optimal"
NUCLEAR_CG_RTOL, NUCLEAR_CG_MAXITER = 3e-1, 200
NUCLEAR_RIDGE_MAX, NUCLEAR_RIDGE_SCALE = 1e-2, 1e-2  # damping: definite system on dependent rows, bounded steps
NUCLEAR_INNER_ETA = 0.2  # inner residual target: this fraction of the last outer residual
# cap on the extrapolation ratio rho.  CG counts without -> with it (unit-norm, T = 8; only at the sigma
# cap in brackets): n = 500 3,195 -> 3,332 (3,250), 1,000 3,179 -> 3,476, 2,000 3,341 -> 3,452 (3,478),
# 5,000 seeds 0/1/2 3,916 / 7,685 / 6,080 -> 3,545 / 3,432 / 3,145 (3,313 / 4,435 / 4,454),
# 10,000 12,459 -> 3,371 (5,121)
NUCLEAR_EXTRAPOLATE_MAX = 0.5
NUCLEAR_WARM_ITERATIONS = 2  # active-set steps of solve_dual for the warm start
NUCLEAR_SCREEN = 0.3  # inequality rows with margin > 1 + this are left out until they come within half of it
NUCLEAR_CERTIFY_BELOW = 1e-7  # outer residual below which the exact certificate is tried each step
NUCLEAR_GAP_TOL = 1e-9  # relative duality gap (and violation) for status "optimal"
NUCLEAR_EARLY_GAP = 1e-10  # an early stop waits for gap and KKT residual 10x inside NUCLEAR_GAP_TOL


class _EqualityProjection:
    """W -> W - A_eq^* (A_eq A_eq^*)^-1 A_eq W, the nearest W (Frobenius) on the SCC equalities.

    The Gram (A_eq A_eq^*)[l, l'] = ((x_a - x_b)_l . (x_a - x_b)_l') (x_k_l . x_k_l') is formed
    and Cholesky-factorised once (on first use; every certificate check reuses it) up to
    NUCLEAR_DENSE_EQ_MAX rows; above that, or when it is singular (E without full row rank),
    CG on A_eq A_eq^* products.  Up to three refinement passes."""

    def __init__(self, E: np.ndarray, a: np.ndarray, b: np.ndarray, k: np.ndarray):
        self.E, self.a, self.b, self.k = E, a, b, k
        self.rows = _NuclearRows(E, a, b, k)
        self.factor = None

    def solve(self, residual: np.ndarray) -> np.ndarray:
        from scipy.linalg import cho_factor, cho_solve

        if self.factor is None and self.a.size <= NUCLEAR_DENSE_EQ_MAX:
            diff, query = self.E[self.a] - self.E[self.b], self.E[self.k]
            try:
                self.factor = cho_factor((diff @ diff.T) * (query @ query.T), lower=True)
            except np.linalg.LinAlgError:  # dependent rows (E without full row rank): CG below
                self.factor = False
        if self.factor:
            return cho_solve(self.factor, residual)
        from scipy.sparse.linalg import LinearOperator, cg

        q = self.a.size
        gram = LinearOperator((q, q), matvec=lambda z: self.rows.forward(self.rows.adjoint(z)))
        return cg(gram, residual, rtol=1e-13, maxiter=1000)[0]

    def __call__(self, W: np.ndarray) -> np.ndarray:
        if self.a.size == 0:
            return W
        for _refine in range(3):
            residual = self.rows.forward(W)
            if np.abs(residual).max() <= 1e-15 * max(1.0, float(np.abs(W).max())):
                break
            W = W - self.rows.adjoint(self.solve(residual))
        return W


NUCLEAR_DENSE_EQ_MAX = 4000  # dense Gram of the equality rows (128 MB, ~21 GFlop to factorise) up to here


def _nuclear_certified(E, graphs, rows: _NuclearRows, project: _EqualityProjection, m: int, W: np.ndarray,
                       y: np.ndarray, method: str, status: str, t0: float) -> SvmSolution:
    """Exact feasibility (equality projection, margin rescaling) and the duality certificate."""
    import time

    W = project(W)
    margins = rows.forward(W)[:m]
    if margins.min() > 0 and margins.min() < 1.0:
        W = W / margins.min()
    lam, nu = y[:m], y[m:]
    Z = rows.adjoint(y)
    sv = np.linalg.svd(W, compute_uv=False)
    nuclear = float(sv.sum())
    spectral = float(np.linalg.norm(Z, 2))
    kkt = max(max(0.0, spectral - 1.0), abs(float(np.sum(Z * W)) - nuclear) / max(1.0, nuclear))
    lam_plus = np.maximum(lam, 0.0)
    bound = float(lam_plus.sum()) / max(float(np.linalg.norm(rows.adjoint(np.r_[lam_plus, nu]), 2)), 1e-300)
    gap = (nuclear - bound) / max(nuclear, 1e-300)
    margin, violation = check_constraints(W, E, graphs)
    if gap <= NUCLEAR_GAP_TOL and violation <= 1e-9:
        status = "optimal"
    elif status == "converged":
        status = "converged (gap or violation above 1e-9)"
    return SvmSolution(W, method, status, margin, violation, kkt, float(lam.min()), time.perf_counter() - t0,
                       details={"nuclear_norm": nuclear, "dual_lower_bound": bound, "relative_gap": gap,
                                "dual_spectral_norm": spectral, "lambda": lam, "mu": -nu,
                                "rank": int(np.count_nonzero(sv > 1e-9 * max(sv[0], 1e-300))),
                                "constraints": int(y.size)})


def _solve_nuclear_cvxpy(E: np.ndarray, graphs: TokenPriorityGraphs) -> SvmSolution:
    """The reference path of :func:`solve_graph_svm_nuclear`: ||W||_* as a cvxpy SDP (Clarabel,
    tolerances 1e-10, Clarabel's defaults if it cannot meet them), multipliers from cvxpy."""
    import time

    import cvxpy as cp

    t0 = time.perf_counter()
    d = E.shape[1]
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs, reduced=True)
    if ga.size == 0:
        return SvmSolution.no_cross_edge(d, "nuclear (cvxpy)", time.perf_counter() - t0)
    A_ge = constraint_matrix(E, ga, gb, gk)
    A_eq = constraint_matrix(E, ea, eb, ek)
    W = cp.Variable((d, d))
    w = cp.vec(W, order="C")
    constraints = [A_ge @ w >= 1] + ([A_eq @ w == 0] if A_eq.shape[0] else [])
    problem = cp.Problem(cp.Minimize(cp.normNuc(W)), constraints)
    import warnings

    with warnings.catch_warnings():  # tight tolerances first; Clarabel's defaults if it cannot meet them
        warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
        problem.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if problem.status == "optimal_inaccurate":
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
    lam = np.asarray(constraints[0].dual_value).ravel()
    mu = np.asarray(constraints[1].dual_value).ravel() if A_eq.shape[0] else np.zeros(0)

    def subgradient(lam_ge):
        return (A_ge.T @ lam_ge - (A_eq.T @ mu if mu.size else 0.0)).reshape(d, d)

    Z = subgradient(lam)
    nuclear = float(np.linalg.norm(Wv, "nuc"))
    kkt = max(max(0.0, float(np.linalg.norm(Z, 2)) - 1.0),
              abs(float(np.sum(Z * Wv)) - nuclear) / max(1.0, nuclear))
    lam_plus = np.maximum(lam, 0.0)
    bound = float(lam_plus.sum()) / max(float(np.linalg.norm(subgradient(lam_plus), 2)), 1e-300)
    return SvmSolution(Wv, "nuclear (cvxpy CLARABEL SDP)", problem.status, margin, violation, kkt,
                       float(lam.min()), time.perf_counter() - t0,
                       details={"nuclear_norm": nuclear, "dual_lower_bound": bound,
                                "relative_gap": (nuclear - bound) / max(nuclear, 1e-300),
                                "lambda": lam, "mu": mu, "constraints": int(ga.size + ea.size)})
