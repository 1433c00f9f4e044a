"""Obligation: the closed-form fit of R (THEORY.md §7.9, §5.4)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "R_hat = <W - W^fin, W^svm> / ||W^svm||_F^2 minimises ||W - W^fin - R W^svm||_F^2 over R (the derivative "
    "vanishes there and the second derivative is 2 ||W^svm||^2 > 0), replacing the official code's 1-D cvxpy "
    "least squares (R_solver)."
)
SCOPE = "symbolic 2x2 matrices W, W^fin, W^svm"


def check(altered: bool = False) -> tuple[bool, str]:
    W, F, S = (sp.Matrix(2, 2, sp.symbols(f"{n}0:4", real=True)) for n in ("w", "f", "s"))
    R = sp.Symbol("R", real=True)
    inner = lambda A, B: sum(a * b for a, b in zip(A, B, strict=True))  # noqa: E731
    objective = inner(W - F - R * S, W - F - R * S)
    # altered: divide by ||W^svm|| instead of its square
    denominator = sp.sqrt(inner(S, S)) if altered else inner(S, S)
    R_hat = inner(W - F, S) / denominator
    if not vanishes(sp.diff(objective, R).subs(R, R_hat)):
        return False, "d/dR ||W - W^fin - R W^svm||^2 != 0 at R_hat"
    if not vanishes(sp.diff(objective, R, 2) - 2 * inner(S, S)):
        return False, "second derivative != 2 ||W^svm||^2"
    return True, "derivative zero at R_hat, curvature 2||W^svm||^2 > 0"


OBLIGATION = Obligation("r-fit", STATEMENT, check, "§7.9", SCOPE)
