"""Exact Farkas certificates of Graph-SVM infeasibility (THEORY.md §3.3).

The constraints <W, A_j> >= 1 (cross-SCC edges) and <W, B_j> = 0 (same SCC), with
A_j = (e_a - e_b) e_k^T, have no solution iff (Farkas' lemma) there are y >= 0, z with

    sum_j y_j A_j + sum_j z_j B_j = 0   and   sum_j y_j = 1,

because then for any feasible W: 0 = <W, sum y A + sum z B> >= sum y = 1.
``theorycheck.svm.farkas_certificate`` finds a float (y, z) by LP; here its support is
re-solved in exact rational arithmetic (E converted with ``Fraction(float)``, which is
exact) and :func:`verify_farkas` checks the three conditions plus that every row used
is a genuine constraint of the token-priority graphs.  The statement proved is about
E as stored in float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from theorycheck.graphs import TokenPriorityGraphs
from theorycheck.svm import constraint_matrix, constraint_rows, farkas_certificate
from theorycheck.symbolic.exact import ZERO, exact_gram, fraction_str, nullspace, to_fractions
from theorycheck.symbolic.svm_certificate import CheckedConditions, Condition

SUPPORT_TOL = 1e-9
MAX_SUPPORT = 400
MAX_DIM = 64

COMBINATION = "combination vanishes"
NONNEGATIVE = "y >= 0"
NORMALISED = "sum y = 1"
GENUINE = "rows are constraints of the graphs"


@dataclass(frozen=True)
class FarkasCertificate(CheckedConditions):
    """Outcome of :func:`certify_infeasibility`: "certified", "rejected", "no certificate"
    (the LP finds the constraints feasible) or "too large"."""

    status: str
    conditions: tuple[Condition, ...] = ()
    inequalities: tuple = ()  # (a, b, k, y) with y > 0
    equalities: tuple = ()  # (a, b, k, z) with z != 0
    message: str = ""
    seconds: float = 0.0


    def to_json(self, vocab: tuple[str, ...] | None = None) -> dict:
        name = (lambda t: vocab[t]) if vocab else (lambda t: int(t))
        return {
            "status": self.status,
            "statement": "sum_j y_j (e_a - e_b) e_k^T + sum_j z_j (e_a - e_b) e_k^T = 0 exactly with y >= 0 and "
                         "sum y = 1, so no W meets the Graph-SVM constraints (0 >= 1)",
            "conditions": [c.as_dict() for c in self.conditions],
            "failed": self.failed,
            "inequalities": [{"a": name(a), "b": name(b), "k": name(k), "y": fraction_str(y)}
                             for a, b, k, y in self.inequalities],
            "equalities": [{"a": name(a), "b": name(b), "k": name(k), "z": fraction_str(z)}
                           for a, b, k, z in self.equalities],
            "message": self.message,
        }


def verify_farkas(E: np.ndarray, graphs: TokenPriorityGraphs, inequalities, equalities) -> list[Condition]:
    """Exact check of a Farkas certificate given as (a, b, k, weight) rows."""
    E_exact = to_fractions(E)
    d = E.shape[1]
    total = np.full((d, d), ZERO, dtype=object)
    for a, b, k, w in list(inequalities) + list(equalities):
        total = total + np.outer(E_exact[a] - E_exact[b], Fraction(w) * E_exact[k])
    nonzero = sum(1 for x in total.reshape(-1) if x != 0)
    y = [Fraction(w) for *_, w in inequalities]
    conditions = [
        Condition(COMBINATION, nonzero == 0, "sum y_j A_j + sum z_j B_j = 0 exactly" if nonzero == 0 else
                  f"the combination has {nonzero} non-zero entr(ies), largest |.| = "
                  f"{float(max(abs(x) for x in total.reshape(-1))):.2e}"),
        Condition(NONNEGATIVE, all(v >= 0 for v in y), "every y_j >= 0" if all(v >= 0 for v in y) else
                  f"{sum(v < 0 for v in y)} negative y_j"),
        Condition(NORMALISED, sum(y, ZERO) == 1, f"sum y = {fraction_str(sum(y, ZERO))}"),
    ]
    bad = []
    for a, b, k, _ in inequalities:
        pa, pb = graphs.pair_lookup(k, a), graphs.pair_lookup(k, b)
        edge = pa >= 0 and pb >= 0 and bool(np.any((graphs.edge_src == pa) & (graphs.edge_dst == pb)))
        if not (edge and graphs.scc[pa] != graphs.scc[pb]):
            bad.append(f"({a} -> {b} | {k}) is not a cross-SCC edge")
    for a, b, k, _ in equalities:
        pa, pb = graphs.pair_lookup(k, a), graphs.pair_lookup(k, b)
        if not (pa >= 0 and pb >= 0 and graphs.scc[pa] == graphs.scc[pb]):
            bad.append(f"({a}, {b} | {k}) do not share an SCC")
    conditions.append(Condition(GENUINE, not bad, "every row is a Graph-SVM constraint" if not bad else
                                "; ".join(bad[:3])))
    return conditions


def certify_infeasibility(E: np.ndarray, graphs: TokenPriorityGraphs, certificate: dict | None = None,
                          max_support: int = MAX_SUPPORT, max_dim: int = MAX_DIM) -> FarkasCertificate:
    """Exact Farkas certificate from a float one (``describe_certificate`` format, or found here)."""
    t0 = time.perf_counter()
    if certificate is None or not certificate.get("inequalities"):
        ga, gb, gk, ea, eb, ek = constraint_rows(graphs)
        found = farkas_certificate(constraint_matrix(E, ga, gb, gk), constraint_matrix(E, ea, eb, ek)) \
            if ga.size else None
        if found is None:
            return FarkasCertificate("no certificate", message="the LP finds no Farkas certificate: "
                                     "the constraints are feasible", seconds=time.perf_counter() - t0)
        y, z = found["y"], found["z"]
        rows = [(int(ga[j]), int(gb[j]), int(gk[j]), float(y[j]), True) for j in range(ga.size)
                if y[j] > SUPPORT_TOL * y.max()]
        rows += [(int(ea[j]), int(eb[j]), int(ek[j]), float(z[j]), False) for j in range(ea.size)
                 if abs(z[j]) > SUPPORT_TOL * y.max()]
    else:
        rows = [(r["a"], r["b"], r["k"], float(r["y"]), True) for r in certificate["inequalities"]]
        rows += [(r["a"], r["b"], r["k"], float(r["z"]), False) for r in certificate.get("equalities", [])]
    if len(rows) > max_support or E.shape[1] > max_dim:
        return FarkasCertificate("too large", message=f"too large to certify: {len(rows)} rows (limit {max_support}), d = {E.shape[1]} "
                                 f"(limit {max_dim})", seconds=time.perf_counter() - t0)
    weights = _exact_weights(E, rows)
    if weights is None:
        return FarkasCertificate("rejected", (Condition(COMBINATION, False, "the supporting rows have no exact "
                                 "non-negative combination that vanishes: the data are not exactly infeasible "
                                 "(float rounding), or the float certificate is wrong"),),
                                 seconds=time.perf_counter() - t0)
    ineq = tuple((a, b, k, w) for (a, b, k, _, is_ineq), w in zip(rows, weights, strict=True) if is_ineq and w != 0)
    eq = tuple((a, b, k, w) for (a, b, k, _, is_ineq), w in zip(rows, weights, strict=True) if not is_ineq and w != 0)
    conditions = verify_farkas(E, graphs, ineq, eq)
    status = "certified" if all(c.holds for c in conditions) else "rejected"
    return FarkasCertificate(status, tuple(conditions), ineq, eq, seconds=time.perf_counter() - t0)


def _exact_weights(E: np.ndarray, rows: list) -> list[Fraction] | None:
    """Exact weights on the given rows with sum w_j row_j = 0, inequality weights >= 0 summing to 1.

    The kernel of the rows' Gram matrix is the set of vanishing combinations.  A
    one-dimensional kernel fixes the certificate up to scale; otherwise the float
    weights are projected onto a kernel basis and the coefficients rationalised.
    """
    a = np.array([r[0] for r in rows])
    b = np.array([r[1] for r in rows])
    k = np.array([r[2] for r in rows])
    G = exact_gram(E)
    gram = (G[np.ix_(a, a)] - G[np.ix_(a, b)] - G[np.ix_(b, a)] + G[np.ix_(b, b)]) * G[np.ix_(k, k)]
    basis = nullspace(gram)
    if not basis:
        return None
    is_ineq = np.array([r[4] for r in rows])
    if len(basis) == 1:
        w = basis[0]
    else:
        N = np.array([[float(x) for x in v] for v in basis]).T
        coef, *_ = np.linalg.lstsq(N, np.array([r[3] for r in rows]), rcond=None)
        w = sum((Fraction(c).limit_denominator(10**12) * v for c, v in zip(coef, basis, strict=True)),
                np.full(len(rows), ZERO, dtype=object))
    total = sum((w[j] for j in range(len(rows)) if is_ineq[j]), ZERO)
    if total == 0:
        return None
    w = [x / total for x in w]
    if any(w[j] < 0 for j in range(len(rows)) if is_ineq[j]):
        return None
    return w
