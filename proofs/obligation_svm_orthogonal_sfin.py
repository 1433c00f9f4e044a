"""Obligation: the Graph-SVM equalities say W is orthogonal to S_fin (THEORY.md §3.1, P4)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "<W, (e_a - e_b) e_k^T>_F = (e_a - e_b)^T W e_k (key on the left, query on the right: the score convention "
    "s_t = x_t^T W x_last), so the equality constraints of the Graph-SVM, over the generators of S_fin, say "
    "exactly W perp S_fin; hence Pi_{S_fin} W^svm = 0 (the svm_projection_norm reported by analyze)."
)
SCOPE = "symbolic W (3x3) and symbolic vectors e_a, e_b, e_k in R^3"


def check(altered: bool = False) -> tuple[bool, str]:
    W = sp.Matrix(3, 3, sp.symbols("w0:9", real=True))
    ea, eb, ek = (sp.Matrix(sp.symbols(f"{n}0:3", real=True)) for n in ("a", "b", "k"))
    generator = (ea - eb) * ek.T
    inner = (W.T * generator).trace()
    # altered: the transposed convention (query on the left)
    constraint = (ek.T * W * (ea - eb))[0, 0] if altered else ((ea - eb).T * W * ek)[0, 0]
    if not vanishes(inner - constraint):
        return False, "<W, (e_a - e_b) e_k^T> != the constraint value"
    return True, "<W, (e_a - e_b) e_k^T>_F = (e_a - e_b)^T W e_k: equalities <=> W perp S_fin"


OBLIGATION = Obligation("svm-orthogonal-sfin", STATEMENT, check, "§3.1", SCOPE)
