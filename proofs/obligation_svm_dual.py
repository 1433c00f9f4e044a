"""Obligation: Lagrange dual of the Graph-SVM and weak duality (THEORY.md §3.1)."""

from fractions import Fraction

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "For min ||w||^2 s.t. A w >= 1, B w = 0 with Lagrangian ||w||^2 - lam^T (A w - 1) - mu^T B w: the "
    "Lagrangian is minimised at w = (A^T lam + B^T mu)/2, the dual function is q = 1^T lam - "
    "||A^T lam + B^T mu||^2 / 4, and ||w||^2 - q = ||w - (A^T lam + B^T mu)/2||^2 + lam^T (A w - 1) + "
    "mu^T B w, which is >= 0 for feasible w and lam >= 0 and = 0 exactly under stationarity and "
    "complementary slackness: an exact KKT point is optimal. On the chain toy the certified multipliers "
    "5/2, 3/2, 3/2 give q = ||W^svm||^2 = 11/4."
)
SCOPE = "symbolic A (2x3), B (1x3), w, lam, mu; the chain toy exactly"


def check(altered: bool = False) -> tuple[bool, str]:
    A = sp.Matrix(2, 3, sp.symbols("a0:6", real=True))
    B = sp.Matrix(1, 3, sp.symbols("b0:3", real=True))
    w = sp.Matrix(sp.symbols("w0:3", real=True))
    lam = sp.Matrix(sp.symbols("l0:2", real=True))
    mu = sp.Matrix(sp.symbols("u0:1", real=True))
    ones = sp.ones(2, 1)
    lagrangian = (w.T * w)[0, 0] - (lam.T * (A * w - ones))[0, 0] - (mu.T * B * w)[0, 0]
    combo = A.T * lam + B.T * mu
    w_star = combo / 2
    for i in range(3):
        if not vanishes(sp.diff(lagrangian, w[i]).subs(dict(zip(w, w_star, strict=True)))):
            return False, f"dL/dw_{i} != 0 at w = (A^T lam + B^T mu)/2"
    # altered: the dual of (1/2)||w||^2 used with the objective ||w||^2
    scale = sp.Rational(1, 2) if altered else sp.Rational(1, 4)
    dual = (ones.T * lam)[0, 0] - scale * (combo.T * combo)[0, 0]
    if not vanishes(lagrangian.subs(dict(zip(w, w_star, strict=True))) - dual):
        return False, "the Lagrangian at its minimiser is not the claimed dual function"
    gap = (w.T * w)[0, 0] - dual
    decomposition = ((w - w_star).T * (w - w_star))[0, 0] + (lam.T * (A * w - ones))[0, 0] + (mu.T * B * w)[0, 0]
    if not vanishes(gap - decomposition):
        return False, "||w||^2 - q is not the sum of the three non-negative terms"
    # chain toy: v = (5/4, 1/4, -3/4, -3/4), rows a-b, b-c, b-q with multipliers 5/2, 3/2, 3/2
    v = [Fraction(5, 4), Fraction(1, 4), Fraction(-3, 4), Fraction(-3, 4)]
    rows = [(0, 1, Fraction(5, 2)), (1, 2, Fraction(3, 2)), (1, 3, Fraction(3, 2))]
    At_lam = [Fraction(0)] * 4
    for a, b, weight in rows:
        At_lam[a] += weight
        At_lam[b] -= weight
    q = sum(weight for *_, weight in rows) - Fraction(scale.p, scale.q) * sum(x * x for x in At_lam)
    if q != sum(x * x for x in v):
        return False, f"chain toy: dual value {q} != primal value {sum(x * x for x in v)}"
    return True, "w* = (A^T lam + B^T mu)/2, q = 1^T lam - ||A^T lam + B^T mu||^2/4, weak duality identity; chain toy q = 11/4"


OBLIGATION = Obligation("svm-dual", STATEMENT, check, "§3.1", SCOPE)
