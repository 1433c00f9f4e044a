"""Obligation: the radius lemma behind the W^fin error bound (theorycheck/symbolic/finite_bound.py)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "Let f be convex with Hessian >= mu Gamma on the ball ||c - c*||_Gamma <= rho and ||grad f(c*)||_{Gamma^-1} "
    "<= g. (i) Cauchy-Schwarz in the Gamma metric: (v^T x)^2 <= (v^T Gamma^-1 v)(x^T Gamma x). (ii) On the "
    "sphere of radius r, f >= f(c*) - g r + mu r^2 / 2, which is > f(c*) for r > 2 g / mu: if 2 g / mu < rho "
    "the minimiser lies in the ball. (iii) There, strong monotonicity mu r^2 <= g r gives r <= g / mu."
)
SCOPE = "general in g, mu > 0; (i) for a symbolic positive definite 2x2 Gamma"


def check(altered: bool = False) -> tuple[bool, str]:
    p, r_, q = sp.symbols("p r q", real=True)
    Gamma = sp.Matrix([[p, q], [q, r_]])
    v = sp.Matrix(sp.symbols("v0:2", real=True))
    x = sp.Matrix(sp.symbols("x0:2", real=True))
    det = p * r_ - q ** 2
    gap = (v.T * Gamma.inv() * v)[0, 0] * (x.T * Gamma * x)[0, 0] - (v.T * x)[0, 0] ** 2
    # Lagrange-type identity: gap * det = (v0 (q x0 + r x1) - v1 (p x0 + q x1))^2 >= 0 when det > 0
    square = (v[0] * (q * x[0] + r_ * x[1]) - v[1] * (p * x[0] + q * x[1])) ** 2
    if not vanishes(gap * det - square):
        return False, "Cauchy-Schwarz gap * det(Gamma) is not a square"
    g, mu, r = sp.symbols("g mu r", positive=True)
    model = -g * r + mu * r ** 2 / 2
    # altered: the wrong threshold g / mu for (ii)
    threshold = g / mu if altered else 2 * g / mu
    t = sp.Symbol("t", positive=True)
    above = sp.factor(model.subs(r, threshold + t))
    if not above.is_positive:
        return False, f"-g r + mu r^2/2 is not positive for r beyond {threshold} (value {above})"
    solutions = sp.solve(sp.Eq(mu * r ** 2, g * r), r)
    if solutions != [g / mu]:
        return False, f"mu r^2 = g r has positive solutions {solutions}, not [g/mu]"
    return True, "(v.x)^2 <= |v|_{Gamma^-1}^2 |x|_Gamma^2; f > f(c*) beyond 2g/mu; r <= g/mu"


OBLIGATION = Obligation("strong-convexity-radius", STATEMENT, check, "§4.4 (bound)", SCOPE)
