"""Obligation: with orthonormal embeddings the problems split per last token (THEORY.md §3.2)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "If E E^T = I and M = E W E^T, then (i) every score is an entry of M, e_a^T W e_k = M_ak, so a window "
    "with query k depends on W only through column k of M; (ii) ||W||_F^2 = ||M||_F^2 + ||W - E^T M E||_F^2, "
    "so the least-norm W with given scores is E^T M E and min ||W||^2 under score constraints is the sum over "
    "k of min ||M[:, k]||^2 (one problem per last token); (iii) with the SCC equalities M_ak = v_C for a in C, "
    "||M[:, k]||^2 = sum_C |C| v_C^2 (the objective of theorycheck.svm.solve_orthonormal)."
)
SCOPE = "symbolic W (3x3), a fixed rational orthonormal E (K=2, d=3); (iii) with a symbolic SCC of size 3"


def check(altered: bool = False) -> tuple[bool, str]:
    W = sp.Matrix(3, 3, sp.symbols("w0:9", real=True))
    # altered: drop the hypothesis E E^T = I (second row not orthogonal to the first)
    E = sp.Matrix([[1, 0, 0], [sp.Rational(1, 2), sp.Rational(1, 2), 0]]) if altered else \
        sp.Matrix([[1, 0, 0], [0, sp.Rational(3, 5), sp.Rational(4, 5)]])
    M = E * W * E.T
    for a in range(2):
        for k in range(2):
            if not vanishes((E[a, :] * W * E[k, :].T)[0, 0] - M[a, k]):
                return False, f"e_{a}^T W e_{k} != M[{a},{k}]"
    norm = lambda A: sum(x ** 2 for x in A)  # noqa: E731
    residual = W - E.T * M * E
    if not vanishes(norm(W) - norm(M) - norm(residual)):
        return False, "||W||^2 != ||M||^2 + ||W - E^T M E||^2 (Pythagoras fails)"
    v = sp.Symbol("v", real=True)
    column = sp.Matrix([v, v, v, sp.Symbol("x", real=True)])
    if not vanishes(norm(column[:3]) - 3 * v ** 2):
        return False, "sum over an SCC of size 3 of v^2 != 3 v^2"
    return True, "scores are entries of M; ||W||^2 = ||M||^2 + ||W - E^T M E||^2 for orthonormal E"


OBLIGATION = Obligation("orthonormal-split", STATEMENT, check, "§3.2", SCOPE)
