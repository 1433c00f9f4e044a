"""Obligation: a Farkas certificate proves the Graph-SVM infeasible (THEORY.md §3.3)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "If y >= 0, sum_j y_j = 1 and sum_j y_j A_j + sum_j z_j B_j = 0 (A_j, B_j the constraint matrices "
    "(e_a - e_b) e_k^T), then for every W: sum_j y_j <W, A_j> + sum_j z_j <W, B_j> = <W, 0> = 0, while the "
    "constraints <W, A_j> >= 1 and <W, B_j> = 0 force it to be >= sum_j y_j = 1: no W is feasible. Instance: "
    "e_c = (e_a + e_b)/2 with c the label of windows holding a and b gives y = (1/2, 1/2)."
)
SCOPE = "symbolic W (2x2), two inequality rows and one equality row; the instance exactly"


def check(altered: bool = False) -> tuple[bool, str]:
    W = sp.Matrix(2, 2, sp.symbols("w0:4", real=True))
    rows = [sp.Matrix(2, 2, sp.symbols(f"{n}0:4", real=True)) for n in ("p", "q", "r")]
    y1, y2, z = sp.symbols("y1 y2 z", real=True)
    inner = lambda A, B: (A.T * B).trace()  # noqa: E731
    combination = y1 * rows[0] + y2 * rows[1] + z * rows[2]
    if not vanishes(y1 * inner(W, rows[0]) + y2 * inner(W, rows[1]) + z * inner(W, rows[2]) - inner(W, combination)):
        return False, "the weighted sum of constraint values is not <W, combination>"
    # with <W, A_j> = 1 + s_j (s_j >= 0) and <W, B> = 0: sum y_j <W, A_j> = 1 + sum y_j s_j >= 1
    s1, s2 = sp.symbols("s1 s2", nonnegative=True)
    Y1, Y2 = sp.Rational(1, 3), sp.Rational(2, 3)
    if not (Y1 * (1 + s1) + Y2 * (1 + s2) - 1).is_nonnegative:
        return False, "sum y_j <W, A_j> >= 1 does not follow"
    # the instance: rows (e_c - e_a) e_q^T and (e_c - e_b) e_q^T
    ea, eb, eq = sp.Matrix([1, 0, 0]), sp.Matrix([0, 1, 0]), sp.Matrix([0, 0, 1])
    ec = (ea + eb) / 2
    weights = (sp.Rational(1, 2), sp.Rational(1, 3)) if altered else (sp.Rational(1, 2), sp.Rational(1, 2))
    total = weights[0] * (ec - ea) * eq.T + weights[1] * (ec - eb) * eq.T
    if total != sp.zeros(3, 3) or sum(weights) != 1:
        return False, f"the instance's weights {weights} do not give a zero combination with sum 1"
    return True, "sum y_j <W, A_j> + sum z_j <W, B_j> = <W, 0> = 0 < 1; instance y = (1/2, 1/2) verified"


OBLIGATION = Obligation("farkas", STATEMENT, check, "§3.3", SCOPE)
