"""Obligation: the Hessian of the log-loss is a weighted covariance, a Laplacian (THEORY.md §5.1)."""

import numpy as np
import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "The Hessian of l(m) = -log(c_y e^{m_y} / sum_a c_a e^{m_a}) in the scores is the covariance "
    "diag(pi) - pi pi^T of the attention masses, which equals the graph Laplacian "
    "sum_{s<t} pi_s pi_t (e_s - e_t)(e_s - e_t)^T; so v^T H v = sum_{s<t} pi_s pi_t (v_s - v_t)^2 >= 0 "
    "(L is convex, §5.1) and H is monotone in lower bounds of the weights pi_s pi_t (used by the W^fin "
    "radius). theorycheck.model.hessp multiplies by this matrix."
)
SCOPE = "symbolic scores and counts, 3 tokens; the code compared at one point (1e-12)"


def check(altered: bool = False) -> tuple[bool, str]:
    m = sp.symbols("m0:3", real=True)
    c = sp.symbols("c0:3", positive=True)
    v = sp.symbols("v0:3", real=True)
    Z = sum(c[a] * sp.exp(m[a]) for a in range(3))
    loss = -sp.log(c[0] * sp.exp(m[0]) / Z)
    pi = [c[a] * sp.exp(m[a]) / Z for a in range(3)]
    hessian = sp.hessian(loss, m)
    covariance = sp.diag(*pi) - sp.Matrix(pi) * sp.Matrix(pi).T
    # altered: a factor-2 slip in the Laplacian weights
    factor = sp.Rational(1, 2) if altered else 1
    laplacian = sp.zeros(3, 3)
    for s in range(3):
        for t in range(s + 1, 3):
            d = sp.zeros(3, 1)
            d[s], d[t] = 1, -1
            laplacian += factor * pi[s] * pi[t] * d * d.T
    for i in range(3):
        for j in range(3):
            if not vanishes(hessian[i, j] - covariance[i, j]):
                return False, f"Hessian[{i},{j}] != (diag(pi) - pi pi^T)[{i},{j}]"
            if not vanishes(covariance[i, j] - laplacian[i, j]):
                return False, f"diag(pi) - pi pi^T != sum pi_s pi_t (e_s - e_t)(e_s - e_t)^T at [{i},{j}]"
    quadratic = (sp.Matrix(v).T * hessian * sp.Matrix(v))[0, 0]
    squares = sum(pi[s] * pi[t] * (v[s] - v[t]) ** 2 for s in range(3) for t in range(s + 1, 3))
    if not vanishes(quadratic - squares):
        return False, "v^T H v is not the sum of squares"
    from theorycheck.corpus.types import corpus_from_windows
    from theorycheck.graphs import build_graphs
    from theorycheck.model import evaluate, hessp, window_stats

    corpus = corpus_from_windows([[0, 0, 1, 2]], [0], ("t0", "t1", "t2"))
    stats = window_stats(corpus, build_graphs(corpus))
    point, direction = np.array([0.3, -1.2, 0.7]), np.array([1.0, -2.0, 0.5])
    got = hessp(evaluate(point, stats).entry_prob, stats, direction)
    values = {**dict(zip(m, point.tolist(), strict=True)), c[0]: 2, c[1]: 1, c[2]: 1}
    H = np.array(hessian.subs(values).evalf(), dtype=float)
    if np.abs(got - H @ direction).max() > 1e-12:
        return False, f"theorycheck.model.hessp {got} != {H @ direction}"
    return True, "H = diag(pi) - pi pi^T = Laplacian with weights pi_s pi_t (PSD); code agrees"


OBLIGATION = Obligation("hessian-covariance", STATEMENT, check, "§5.1", SCOPE)
