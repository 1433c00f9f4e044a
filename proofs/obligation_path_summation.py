"""Obligation: edge constraints imply all reachable-pair constraints (THEORY.md §3.1, P2)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "Along a path a = v_0 -> v_1 -> ... -> v_m = b of G^(k), (e_a - e_b)^T W e_k = sum_i (e_{v_{i-1}} - "
    "e_{v_i})^T W e_k (telescoping). Each edge term is >= 0 (= 0 inside an SCC, >= 1 across), so a path with a "
    "cross-SCC edge gives (e_a - e_b)^T W e_k >= 1, and equality on intra-SCC edges gives equality for every "
    "pair of an SCC: the edges-only Graph-SVM (theorycheck.svm) has the feasible set of the all-pairs one."
)
SCOPE = "a path of 3 edges with symbolic 2-dimensional embeddings, W and edge slacks; then the chain toy's exact W^svm"


def check(altered: bool = False) -> tuple[bool, str]:
    W = sp.Matrix(2, 2, sp.symbols("w0:4", real=True))
    e = [sp.Matrix(sp.symbols(f"e{i}_0:2", real=True)) for i in range(5)]
    k = e[4]
    score = lambda x, y: ((x - y).T * W * k)[0, 0]  # noqa: E731
    path = [0, 1, 2, 3]
    # altered: a "path" that skips a node (its edges do not chain)
    edges = [(0, 1), (2, 3), (2, 3)] if altered else list(zip(path[:-1], path[1:], strict=True))
    if not vanishes(score(e[0], e[3]) - sum(score(e[a], e[b]) for a, b in edges)):
        return False, "the pair difference is not the sum of the edge differences"
    # edge values: cross edge 1 + s_1, intra edges s_2 = s_3 = 0 (equalities), with s_1 >= 0
    s1 = sp.Symbol("s1", nonnegative=True)
    if not (1 + s1 + 0 + 0 - 1).is_nonnegative:
        return False, "the summed constraint is not >= 1"
    # the chain toy's certified W^svm column q: a -> b -> c and a -> b -> q give margins >= 1 on every reachable pair
    v = {"a": sp.Rational(5, 4), "b": sp.Rational(1, 4), "c": sp.Rational(-3, 4), "q": sp.Rational(-3, 4)}
    reachable = [("a", "b"), ("a", "c"), ("a", "q"), ("b", "c"), ("b", "q")]
    low = [(x, y) for x, y in reachable if v[x] - v[y] < 1]
    if low:
        return False, f"chain toy: reachable pair(s) {low} below margin 1"
    return True, "(e_a - e_b)^T W e_k telescopes along paths; chain toy satisfies every reachable-pair constraint"


OBLIGATION = Obligation("path-summation", STATEMENT, check, "§3.1", SCOPE)
