"""Exact KKT certificates for the Graph-SVM (THEORY.md §3.1-§3.2).

The problem (objective ||W||_F^2, which has the same minimiser as ||W||_F):

    min ||W||_F^2  s.t.  <W, A_j> >= 1 (cross-SCC edges),  <W, B_j> = 0 (same SCC),
    A_j = (e_a - e_b) e_k^T.

It is a strictly convex QP, so the KKT conditions are necessary and sufficient:

    primal feasibility   <W, A_j> >= 1, <W, B_j> = 0
    dual feasibility     lambda_j >= 0
    stationarity         2 W = sum_j lambda_j A_j + sum_j mu_j B_j
    compl. slackness     lambda_j (<W, A_j> - 1) = 0

(multipliers for ||W||^2; those of (1/2)||W||^2 are half as large).  A certificate is
an exact rational point and exact multipliers for which all four hold; checking them
needs only rational arithmetic, which :func:`verify_scc_kkt` and
:func:`verify_general_kkt` do from the raw constraint data.

How the point is found: the active set is read off the numeric W^svm (slack <=
``ACTIVE_TOL``), the equality-constrained problem on that set is solved exactly, and
the multipliers are recovered exactly (on a spanning forest / a basis of independent
rows, guided by an LP where the active rows are dependent).  Finally the numeric W is
compared with the exact optimum: ||W - W*||_F is half the stationarity residual of W
with the exact multipliers, and must be <= ``AGREEMENT_TOL`` ||W*||_F (relative: W* scales as
1 / c^2 with the embeddings).

Two forms:

* ``scc``: orthonormal E (one-hot included).  The problem splits per query (§3.2):
  min sum_C |C| v_C^2 s.t. v_A - v_B >= 1 on condensation edges, W = E^T S E with
  S[a, k] = v_C(a, k).  On the active set the values are a potential (v_A - v_B = 1 on
  every active edge) plus one constant per connected component, fixed by the
  weighted mean; the multipliers are a non-negative flow with supply 2 |C| v_C.
  Everything is O(edges) in exact arithmetic, so this scales to large corpora.  For
  one-hot E the certificate is exact for W; for float orthonormal E it is exact for
  the score-space problem, which equals the W problem when E E^T = I (the defect is
  reported under ``assumes``).
* ``general``: any E, converted to rationals exactly.  Dense elimination on the
  Gram matrix of the active rows; limited to d <= ``GENERAL_MAX_DIM`` and
  ``GENERAL_MAX_ROWS`` constraint rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from theorycheck.corpus.types import is_one_hot, is_orthonormal
from theorycheck.graphs import TokenPriorityGraphs
from theorycheck.svm import constraint_rows
from theorycheck.symbolic.exact import (
    ZERO,
    exact_gram,
    fraction_str,
    independent_rows,
    matmul,
    solve,
    solve_consistent,
    to_fractions,
)

ACTIVE_TOL = 1e-6
AGREEMENT_TOL = 1e-6
SCC_MAX_EDGES = 300_000
GENERAL_MAX_DIM = 32
GENERAL_MAX_ROWS = 120  # ~10-30 s at the limit on a 2-core machine (benchmarks/certificates.py)
MAX_LISTED = 500
MAX_REFINEMENTS = 50

PRIMAL = "primal feasibility"
DUAL = "dual feasibility"
STATIONARITY = "stationarity"
SLACKNESS = "complementary slackness"
AGREEMENT = "agreement with the numeric W^svm"
ACTIVE_SET = "active set consistent"


@dataclass(frozen=True)
class Condition:
    name: str
    holds: bool
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "holds": self.holds, "detail": self.detail}


class CheckedConditions:
    """Shared by the certificates: a ``status`` and the exact ``conditions`` checked."""

    status: str
    conditions: tuple[Condition, ...]

    @property
    def certified(self) -> bool:
        return self.status == "certified"

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.conditions if not c.holds]


@dataclass(frozen=True)
class SvmCertificate(CheckedConditions):
    """Outcome of :func:`certify_svm`: status "certified", "rejected" or "too large"."""

    status: str
    form: str
    conditions: tuple[Condition, ...]
    W: np.ndarray | None = None  # exact W* (object array of Fractions) or None
    norm_squared: Fraction | None = None
    inequality_multipliers: tuple = ()  # (a, b, k, lambda) with lambda != 0
    equality_multipliers: tuple = ()  # (a, b, k, mu) with mu != 0
    scc_values: tuple = ()  # scc form: (k, tokens, v_C)
    distance: float = float("nan")  # ||W_numeric - W*||_F (float64)
    sizes: dict = field(default_factory=dict)
    assumes: tuple[str, ...] = ()
    message: str = ""
    seconds: float = 0.0


    def to_json(self, vocab: tuple[str, ...] | None = None, max_listed: int = MAX_LISTED) -> dict:
        name = (lambda t: vocab[t]) if vocab else (lambda t: int(t))
        out = {
            "status": self.status,
            "form": self.form,
            "objective": "||W||_F^2 (multipliers of (1/2)||W||^2 are half as large)",
            "conditions": [c.as_dict() for c in self.conditions],
            "failed": self.failed,
            "norm_squared": fraction_str(self.norm_squared) if self.norm_squared is not None else None,
            "distance_to_numeric": self.distance,
            "sizes": self.sizes,
            "assumes": list(self.assumes),
            "message": self.message,
        }
        lists = {
            "inequality_multipliers": [
                {"a": name(a), "b": name(b), "k": name(k), "lambda": fraction_str(v)}
                for a, b, k, v in self.inequality_multipliers],
            "equality_multipliers": [
                {"a": name(a), "b": name(b), "k": name(k), "mu": fraction_str(v)}
                for a, b, k, v in self.equality_multipliers],
            "scc_values": [
                {"k": name(k), "tokens": [name(t) for t in toks], "value": fraction_str(v)}
                for k, toks, v in self.scc_values],
        }
        for key, items in lists.items():
            out[key] = items[:max_listed]
            if len(items) > max_listed:
                out[key + "_omitted"] = len(items) - max_listed
        return out


def _status(conditions: list[Condition]) -> str:
    return "certified" if all(c.holds for c in conditions) else "rejected"


def _message(conditions: list[Condition], distance: float, norm_sq) -> str:
    failed = [c.name for c in conditions if not c.holds]
    if failed == [AGREEMENT]:
        norm = max(float(np.sqrt(float(norm_sq))), 1e-300)
        return (f"the exact optimum W* is certified (every KKT condition holds exactly), but the numeric "
                f"W^svm is {distance:.2e} from it ({distance / norm:.1e} relative)")
    if failed:
        return "not certified: " + ", ".join(failed) + " failed"
    return "W* is the exact optimum and the numeric W^svm agrees with it"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# -- orthonormal embeddings: per-query SCC values ---------------------------------


def verify_scc_kkt(graphs: TokenPriorityGraphs, value: dict[int, Fraction], lam: list[Fraction],
                   vocab: tuple[str, ...] | None = None) -> list[Condition]:
    """Exact KKT check of min sum_C |C| v_C^2 s.t. v_A - v_B >= 1 on condensation edges.

    ``value`` maps every SCC touching a condensation edge to v_C; ``lam`` holds one
    multiplier per condensation edge (``graphs.cond_src/cond_dst``).
    Stationarity: 2 |C| v_C = sum_{edges leaving C} lambda - sum_{edges entering C} lambda.
    """
    src, dst = graphs.cond_src.tolist(), graphs.cond_dst.tolist()

    def label(e: int) -> str:
        toks = lambda c: [vocab[t] if vocab else int(t) for t in graphs.pair_token[graphs.scc == c]]  # noqa: E731
        q = graphs.scc_query[src[e]]
        return f"{toks(src[e])} -> {toks(dst[e])} in G^({vocab[q] if vocab else int(q)})"

    margins = [value[a] - value[b] for a, b in zip(src, dst, strict=True)]
    bad = [e for e, m in enumerate(margins) if m < 1]
    primal = Condition(PRIMAL, not bad, f"min margin {fraction_str(min(margins))} (>= 1 needed)" if margins else "no constraint")
    if bad:
        primal = Condition(PRIMAL, False, f"{len(bad)} edge(s) below margin 1, first {label(bad[0])}: "
                           f"v_A - v_B = {fraction_str(margins[bad[0]])}")
    neg = [e for e, x in enumerate(lam) if x < 0]
    dual = Condition(DUAL, not neg, "all multipliers >= 0" if not neg else
                     f"{len(neg)} negative multiplier(s), first {label(neg[0])}: lambda = {fraction_str(lam[neg[0]])}")
    flow: dict[int, Fraction] = {c: ZERO for c in value}
    for e, (a, b) in enumerate(zip(src, dst, strict=True)):
        flow[a] += lam[e]
        flow[b] -= lam[e]
    size = graphs.scc_size
    residual = {c: 2 * int(size[c]) * v - flow[c] for c, v in value.items()}
    off = [c for c, r in residual.items() if r != 0]
    stat = Condition(STATIONARITY, not off, "2|C| v_C = outflow - inflow exactly for every SCC" if not off else
                     f"{len(off)} SCC(s) violate 2|C| v_C = outflow - inflow, first residual {fraction_str(residual[off[0]])}")
    slack = [e for e in range(len(src)) if lam[e] != 0 and margins[e] != 1]
    cs = Condition(SLACKNESS, not slack, "lambda_e (v_A - v_B - 1) = 0 on every edge" if not slack else
                   f"{len(slack)} edge(s) with lambda != 0 and slack != 0, first {label(slack[0])}")
    return [primal, dual, stat, cs]


def _tree_flow(nodes: list[int], forest_edges: list[int], src: list[int], dst: list[int],
               supply: dict[int, Fraction]) -> dict[int, Fraction]:
    """The unique flow on a forest with out - in = supply at every node (leaf elimination)."""
    incident: dict[int, set[int]] = {c: set() for c in nodes}
    for e in forest_edges:
        incident[src[e]].add(e)
        incident[dst[e]].add(e)
    remaining = {c: supply[c] for c in nodes}
    leaves = [c for c in nodes if len(incident[c]) == 1]
    lam: dict[int, Fraction] = {}
    while leaves:
        c = leaves.pop()
        if len(incident[c]) != 1:
            continue
        e = incident[c].pop()
        other = dst[e] if src[e] == c else src[e]
        if src[e] == c:  # c -> other carries lambda out of c
            lam[e] = remaining[c]
            remaining[other] += lam[e]
        else:  # other -> c carries lambda into c
            lam[e] = -remaining[c]
            remaining[other] -= lam[e]
        remaining[c] = ZERO
        incident[other].discard(e)
        if len(incident[other]) == 1:
            leaves.append(other)
    return lam


def _lp_flow_order(active: list[int], src, dst, supply: dict[int, Fraction]) -> list[int]:
    """Active edges ordered support-first from a vertex of {lambda >= 0, out - in = supply}."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    nodes = sorted(supply)
    index = {c: i for i, c in enumerate(nodes)}
    m = len(active)
    rows = [index[src[e]] for e in active] + [index[dst[e]] for e in active]
    cols = list(range(m)) * 2
    vals = [1.0] * m + [-1.0] * m
    A = sp.csr_matrix((vals, (rows, cols)), shape=(len(nodes), m))
    b = np.array([float(supply[c]) for c in nodes])
    result = linprog(np.zeros(m), A_eq=A, b_eq=b, bounds=[(0, None)] * m, method="highs-ds")
    if result.status != 0:
        return active
    x = np.asarray(result.x)
    order = np.argsort(-x, kind="stable")
    return [active[i] for i in order]


def _refine(active: set[int], lam: list[Fraction], margins: list[Fraction], clash: list[int]) -> str | None:
    """One primal active-set step: drop the most negative multiplier, else add the most
    violated constraint; None when neither applies (the verifier has the last word)."""
    if clash:
        active.discard(clash[-1])
        return f"dropped contradictory row {clash[-1]}"
    negative = [j for j in active if lam[j] < 0]
    if negative:
        j = min(negative, key=lambda e: lam[e])
        active.discard(j)
        return f"dropped row {j} (multiplier {float(lam[j]):.1e})"
    violated = [j for j, mg in enumerate(margins) if mg < 1 and j not in active]
    if violated:
        j = min(violated, key=lambda e: margins[e])
        active.add(j)
        return f"added row {j} (margin {float(margins[j]):.6g})"
    return None


def _active_detail(steps: list[str]) -> str:
    if not steps:
        return "the active set read off the numeric solution is consistent"
    return f"active set refined in {len(steps)} exact step(s): " + "; ".join(steps[:5]) + ("; ..." if len(steps) > 5 else "")


def _scc_solve(graphs: TokenPriorityGraphs, active: list[int]):
    """Exact solution of the SCC-value problem with the ``active`` edges held at margin 1.

    Returns (values per used SCC, multiplier per condensation edge, clashing edges).
    """
    src, dst = graphs.cond_src.tolist(), graphs.cond_dst.tolist()
    n_edges = len(src)
    used = sorted(set(src) | set(dst))
    size = graphs.scc_size
    # potentials on the active graph: h_A - h_B = 1 on every active edge
    neighbours: dict[int, list[tuple[int, int]]] = {c: [] for c in used}
    for e in active:
        neighbours[src[e]].append((dst[e], -1))
        neighbours[dst[e]].append((src[e], 1))
    h: dict[int, int] = {}
    members: list[list[int]] = []
    for root in used:
        if root in h:
            continue
        h[root] = 0
        members.append([root])
        stack = [root]
        while stack:
            c = stack.pop()
            for nb, step in neighbours[c]:
                if nb not in h:
                    h[nb] = h[c] + step
                    members[-1].append(nb)
                    stack.append(nb)
    clash = [e for e in active if h[src[e]] - h[dst[e]] != 1]
    value: dict[int, Fraction] = {}
    for comp in members:  # the constant of each component minimises sum |C| (h_C + t)^2
        weight = sum(int(size[c]) for c in comp)
        shift = Fraction(-sum(int(size[c]) * h[c] for c in comp), weight)
        for c in comp:
            value[c] = h[c] + shift
    supply = {c: 2 * int(size[c]) * value[c] for c in used}
    # multipliers: flow on a spanning forest of the active graph (LP-guided when it has cycles)
    order = list(active)
    if len(active) > len(used) - len(members):
        order = _lp_flow_order(order, src, dst, supply)
    parent = {c: c for c in used}

    def find(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    forest = []
    for e in order:
        ra, rb = find(src[e]), find(dst[e])
        if ra != rb:
            parent[ra] = rb
            forest.append(e)
    tree_lam = _tree_flow(used, forest, src, dst, supply)
    return value, [tree_lam.get(e, ZERO) for e in range(n_edges)], clash


def certify_scc(E: np.ndarray, graphs: TokenPriorityGraphs, W: np.ndarray,
                vocab: tuple[str, ...] | None = None, active_tol: float = ACTIVE_TOL,
                agreement_tol: float = AGREEMENT_TOL, max_edges: int = SCC_MAX_EDGES,
                max_refinements: int = MAX_REFINEMENTS) -> SvmCertificate:
    """Certificate in the per-query SCC-value form (orthonormal E, THEORY.md §3.2)."""
    t0 = time.perf_counter()
    form = "scc (per-query SCC values, orthonormal E, §3.2)"
    K, d = E.shape
    one_hot = is_one_hot(E)
    defect = 0.0 if one_hot else float(np.abs(E @ E.T - np.eye(K)).max())
    assumes = () if one_hot else (f"E E^T = I (max |E E^T - I| = {defect:.1e} in float64); "
                                  "the certificate is exact for the score-space problem",)
    n_edges = int(graphs.cond_src.size)
    sizes = {"variables": int(np.unique(np.r_[graphs.cond_src, graphs.cond_dst]).size), "constraints": n_edges}
    if n_edges > max_edges:
        return SvmCertificate("too large", form, (), sizes=sizes, assumes=assumes,
                              message=f"too large to certify: {n_edges} condensation edges (limit {max_edges})",
                              seconds=time.perf_counter() - t0)
    src, dst = graphs.cond_src.tolist(), graphs.cond_dst.tolist()
    size = graphs.scc_size
    # numeric SCC values: mean pair score over each SCC
    S_num = W if one_hot else E @ W @ E.T
    m = S_num[graphs.pair_token, graphs.pair_query]
    v_num = np.bincount(graphs.scc, m, minlength=graphs.n_sccs) / np.maximum(size, 1)
    slack = v_num[graphs.cond_src] - v_num[graphs.cond_dst] - 1.0
    active = set(np.flatnonzero(slack <= active_tol).tolist())
    sizes["active_numeric"] = len(active)
    steps: list[str] = []
    for _ in range(max_refinements + 1):
        value, lam, clash = _scc_solve(graphs, sorted(active))
        change = _refine(active, lam, [value[a] - value[b] for a, b in zip(src, dst, strict=True)], clash)
        if change is None:
            break
        steps.append(change)
    sizes["active"] = len(active)
    conditions = [Condition(ACTIVE_SET, not clash, _active_detail(steps) if not clash else
                            f"{len(clash)} active edge(s) contradict the others (a cycle of active edges "
                            "whose unit steps do not sum to zero)")]
    used = sorted(value)
    conditions += verify_scc_kkt(graphs, value, lam, vocab)

    S_star = np.zeros((K, K))
    scc_float = np.zeros(graphs.n_sccs)
    for c, v in value.items():
        scc_float[c] = float(v)
    S_star[graphs.pair_token, graphs.pair_query] = scc_float[graphs.scc]
    W_float = S_star if one_hot else E.T @ S_star @ E
    norm_sq = sum((int(size[c]) * v * v for c, v in value.items()), ZERO)
    distance = float(np.linalg.norm(W - W_float))
    conditions.append(_agreement(distance, norm_sq, agreement_tol))
    W_exact = None
    if one_hot:
        W_exact = np.full((K, K), ZERO, dtype=object)
        for p in range(graphs.n_pairs):
            c = int(graphs.scc[p])
            if c in value:
                W_exact[graphs.pair_token[p], graphs.pair_query[p]] = value[c]
    tokens_of = {}
    for p in range(graphs.n_pairs):
        tokens_of.setdefault(int(graphs.scc[p]), []).append(int(graphs.pair_token[p]))
    ineq = tuple((tokens_of[src[e]][0], tokens_of[dst[e]][0], int(graphs.scc_query[src[e]]), lam[e])
                 for e in range(n_edges) if lam[e] != 0)
    values = tuple((int(graphs.scc_query[c]), tuple(tokens_of[c]), value[c]) for c in used)
    return SvmCertificate(_status(conditions), form, tuple(conditions), W=W_exact, norm_squared=norm_sq,
                          inequality_multipliers=ineq, scc_values=values, distance=distance, sizes=sizes,
                          assumes=assumes, message=_message(conditions, distance, norm_sq),
                          seconds=time.perf_counter() - t0)


# -- general embeddings: the d×d problem in exact arithmetic ------------------------


def _row_gram(G: np.ndarray, a1, b1, k1, a2, b2, k2) -> np.ndarray:
    """<(e_a - e_b) e_k^T, (e_a' - e_b') e_k'^T>_F = (e_a - e_b).(e_a' - e_b') (e_k.e_k')."""
    left = G[np.ix_(a1, a2)] - G[np.ix_(a1, b2)] - G[np.ix_(b1, a2)] + G[np.ix_(b1, b2)]
    return left * G[np.ix_(k1, k2)]


def verify_general_kkt(E_exact: np.ndarray, W_exact: np.ndarray, ineq: tuple, lam: list[Fraction],
                       eq: tuple, mu: list[Fraction]) -> list[Condition]:
    """Exact KKT check of min ||W||_F^2 s.t. <W, A_j> >= 1, <W, B_j> = 0 (d×d, rational).

    ``ineq``/``eq`` = (a, b, k) index arrays of the rows; ``lam``/``mu`` their multipliers.
    """
    ga, gb, gk = (np.asarray(x, dtype=np.int64) for x in ineq)
    ea, eb, ek = (np.asarray(x, dtype=np.int64) for x in eq)
    M = matmul(matmul(E_exact, W_exact), E_exact.T)
    margins = M[ga, gk] - M[gb, gk] if ga.size else np.zeros(0, dtype=object)
    equal = M[ea, ek] - M[eb, ek] if ea.size else np.zeros(0, dtype=object)
    below = np.array([m < 1 for m in margins], dtype=bool)
    unequal = np.array([x != 0 for x in equal], dtype=bool)
    if below.any() or unequal.any():
        detail = (f"{int(below.sum())} inequality row(s) below 1 and {int(unequal.sum())} equality row(s) != 0"
                  + (f"; first margin {fraction_str(margins[_first(below)])}" if below.any() else ""))
    else:
        detail = (f"min margin {fraction_str(min(margins))}" if margins.size else "no inequality row") + \
            ", equalities exact"
    primal = Condition(PRIMAL, not (below.any() or unequal.any()), detail)
    negative = [j for j, x in enumerate(lam) if x < 0]
    dual = Condition(DUAL, not negative, "all inequality multipliers >= 0" if not negative else
                     f"{len(negative)} negative multiplier(s), first lambda = {fraction_str(lam[negative[0]])}")
    lam_arr = np.array(list(lam) + [ZERO], dtype=object)[:-1]
    mu_arr = np.array(list(mu) + [ZERO], dtype=object)[:-1]
    combo = np.full(W_exact.shape, ZERO, dtype=object)
    if ga.size:
        combo = combo + matmul((E_exact[ga] - E_exact[gb]).T, lam_arr[:, None] * E_exact[gk])
    if ea.size:
        combo = combo + matmul((E_exact[ea] - E_exact[eb]).T, mu_arr[:, None] * E_exact[ek])
    residual = 2 * W_exact - combo
    off = int(sum(1 for x in residual.reshape(-1) if x != 0))
    stat = Condition(STATIONARITY, off == 0, "2 W = sum lambda_j A_j + sum mu_j B_j exactly" if off == 0 else
                     f"2 W - sum lambda_j A_j - sum mu_j B_j has {off} non-zero entr(ies)")
    slack = [j for j in range(len(lam)) if lam[j] != 0 and margins[j] != 1]
    cs = Condition(SLACKNESS, not slack, "lambda_j (<W, A_j> - 1) = 0 on every row" if not slack else
                   f"{len(slack)} row(s) with lambda != 0 and slack != 0")
    return [primal, dual, stat, cs]


def _general_solve(gram: np.ndarray, active: list[int], n_ineq: int) -> tuple[np.ndarray, list[int]]:
    """Exact multipliers nu (one per row, zero off the active set) of the problem with the
    ``active`` inequality rows and all equality rows held with equality; 2 W* = sum nu_j row_j.

    Returns (nu, rows of the active set that the others contradict).
    """
    n = gram.shape[0]
    rows = list(active) + list(range(n_ineq, n))
    rhs = np.array([Fraction(1)] * len(active) + [ZERO] * (n - n_ineq), dtype=object)
    sub = gram[np.ix_(rows, rows)]
    n_act = len(active)
    local, basis = solve_consistent(sub, 2 * rhs) if rows else (np.zeros(0, dtype=object), [])
    clash: list[int] = []
    if local is None:  # name the rows that cannot hold together: those outside a basis that disagree
        basis = independent_rows(sub)
        local = np.full(len(rows), ZERO, dtype=object)
        local[basis] = solve(sub[np.ix_(basis, basis)], 2 * rhs[basis])
        inner = matmul(sub, local) / 2
        clash = [rows[i] for i in range(len(rows)) if inner[i] != rhs[i]]
    elif any(x < 0 for x in local[:n_act]) and len(basis) < len(rows):
        local = _nonnegative_representation(sub, local, n_act)
    nu = np.full(n, ZERO, dtype=object)
    if rows:
        nu[rows] = local
    return nu, clash


def certify_general(E: np.ndarray, graphs: TokenPriorityGraphs, W: np.ndarray,
                    active_tol: float = ACTIVE_TOL, agreement_tol: float = AGREEMENT_TOL,
                    max_dim: int = GENERAL_MAX_DIM, max_rows: int = GENERAL_MAX_ROWS,
                    max_refinements: int = MAX_REFINEMENTS) -> SvmCertificate:
    """Certificate of the d×d problem with E converted to rationals exactly (THEORY.md §3.1)."""
    t0 = time.perf_counter()
    form = "general (d×d, E as exact rationals, §3.1)"
    K, d = E.shape
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs)
    sizes = {"variables": d * d, "constraints": int(ga.size + ea.size)}
    if d > max_dim or ga.size + ea.size > max_rows:
        return SvmCertificate("too large", form, (), sizes=sizes,
                              message=f"too large to certify: d = {d} (limit {max_dim}), {ga.size + ea.size} constraint rows "
                                      f"(limit {max_rows})", seconds=time.perf_counter() - t0)
    M_num = E @ W @ E.T
    slack = M_num[ga, gk] - M_num[gb, gk] - 1.0
    active = set(np.flatnonzero(slack <= active_tol).tolist())
    sizes["active_numeric"] = len(active)
    E_exact = to_fractions(E)
    G = exact_gram(E)
    ra, rb, rk = np.r_[ga, ea], np.r_[gb, eb], np.r_[gk, ek]
    gram = _row_gram(G, ra, rb, rk, ra, rb, rk)  # all rows: inequalities first, then equalities
    n_ineq = int(ga.size)
    steps: list[str] = []
    for _ in range(max_refinements + 1):
        nu, clash = _general_solve(gram, sorted(active), n_ineq)
        margins = list(matmul(gram[:n_ineq], nu) / 2) if n_ineq else []
        if any(c >= n_ineq for c in clash):  # the equalities themselves contradict: nothing to drop
            break
        change = _refine(active, list(nu[:n_ineq]), margins, clash)
        if change is None:
            break
        steps.append(change)
    sizes["active"] = len(active)
    conditions = [Condition(ACTIVE_SET, not clash, _active_detail(steps) if not clash else
                            f"{len(clash)} active row(s) cannot hold with equality together with the others")]
    support = np.flatnonzero([x != 0 for x in nu]) if nu.size else np.zeros(0, dtype=np.int64)
    W_exact = np.full((d, d), ZERO, dtype=object)
    if support.size:
        W_exact = matmul((E_exact[ra[support]] - E_exact[rb[support]]).T,
                         (nu[support] / 2)[:, None] * E_exact[rk[support]])
    lam = list(nu[:n_ineq])
    mu = list(nu[n_ineq:])
    conditions += verify_general_kkt(E_exact, W_exact, (ga, gb, gk), lam, (ea, eb, ek), mu)
    W_float = np.array([[float(x) for x in row] for row in W_exact]) if d else np.zeros((0, 0))
    norm_sq = sum((x * x for x in W_exact.reshape(-1)), ZERO)
    distance = float(np.linalg.norm(W - W_float))
    conditions.append(_agreement(distance, norm_sq, agreement_tol))
    ineq = tuple((int(ga[j]), int(gb[j]), int(gk[j]), lam[j]) for j in range(ga.size) if lam[j] != 0)
    eqm = tuple((int(ea[j]), int(eb[j]), int(ek[j]), mu[j]) for j in range(ea.size) if mu[j] != 0)
    return SvmCertificate(_status(conditions), form, tuple(conditions), W=W_exact, norm_squared=norm_sq,
                          inequality_multipliers=ineq, equality_multipliers=eqm, distance=distance,
                          sizes=sizes, message=_message(conditions, distance, norm_sq),
                          seconds=time.perf_counter() - t0)


def _nonnegative_representation(gram: np.ndarray, nu: np.ndarray, n_ineq: int) -> np.ndarray:
    """Another exact nu' with gram nu' = gram nu and nu'[:n_ineq] >= 0, when one exists.

    The rows are dependent, so the multipliers are not unique: an LP (HiGHS, dual
    simplex) finds a vertex; its support, reduced to independent rows, is re-solved
    exactly.  Returns ``nu`` unchanged when this fails (the verifier then names it).
    """
    from scipy.optimize import linprog

    G = np.array([[float(x) for x in row] for row in gram])
    target = G @ np.array([float(x) for x in nu])
    n = G.shape[0]
    bounds = [(0, None)] * n_ineq + [(None, None)] * (n - n_ineq)
    result = linprog(np.zeros(n), A_eq=G, b_eq=target, bounds=bounds, method="highs-ds")
    if result.status != 0:
        return nu
    x = np.asarray(result.x)
    support = np.flatnonzero(np.abs(x) > 1e-12 * float(np.abs(x).max())).tolist()  # relative: x ~ 1 / c^4
    if not support:
        return nu
    exact_target = matmul(gram, nu)
    sub, _ = solve_consistent(gram[:, support], exact_target)
    if sub is None:
        return nu
    keep = support
    out = np.full(n, ZERO, dtype=object)
    out[keep] = sub
    if any(v < 0 for v in out[:n_ineq]):
        return nu
    return out


def _agreement(distance: float, norm_sq, agreement_tol: float) -> Condition:
    """||W - W*||_F <= agreement_tol ||W*||_F: relative, since W* scales as 1 / c^2 with the
    embeddings (an absolute floor would accept any W at large c); W* = 0 asks for W = 0."""
    bound = agreement_tol * float(np.sqrt(float(norm_sq)))
    return Condition(AGREEMENT, distance <= bound,
                     f"||W - W*||_F = {distance:.2e} (tolerance {agreement_tol:.0e} ||W*||_F = {bound:.2e})")


def certify_svm(E: np.ndarray, graphs: TokenPriorityGraphs, W: np.ndarray, form: str = "auto",
                vocab: tuple[str, ...] | None = None, **limits) -> SvmCertificate:
    """Exact certificate for a numeric W^svm; ``form`` = "auto", "scc" or "general".

    "auto" takes the SCC-value form for orthonormal E and the d×d form otherwise.
    """
    if form == "auto":
        form = "scc" if is_orthonormal(E) else "general"
    if form == "scc":
        if not is_orthonormal(E):
            raise ValueError("the SCC-value form needs orthonormal embeddings (E E^T = I)")
        return certify_scc(E, graphs, W, vocab=vocab, **limits)
    if form == "general":
        return certify_general(E, graphs, W, **limits)
    raise ValueError(f"unknown certificate form {form!r}; use auto, scc or general")
