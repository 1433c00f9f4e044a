"""Obligation: the stable loss form of theorycheck/model.py is -log(attention mass on the label)."""

import numpy as np
import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "theorycheck.model computes l = softplus(LSE_{a != y}(log c_a + m_a - log c_y - m_y)); this equals "
    "-log(c_y e^{m_y} / sum_a c_a e^{m_a}), minus the log attention mass on the label's positions, and the "
    "label's gradient coefficient -sum_{a != y} pi_a equals pi_y - 1. The code matches a 50-digit mpmath "
    "evaluation even at score gaps of 800, where the naive formula overflows."
)
SCOPE = "symbolic scores and counts, 3 tokens; the code compared at two points (relative 1e-12)"


def check(altered: bool = False) -> tuple[bool, str]:
    m = sp.symbols("m0:3", real=True)
    c = sp.symbols("c0:3", positive=True)
    y = 0
    Z = sum(c[a] * sp.exp(m[a]) for a in range(3))
    target = -sp.log(c[y] * sp.exp(m[y]) / Z)
    # altered: forget the log-count terms
    shift = (lambda a: 0) if altered else (lambda a: sp.log(c[a]) - sp.log(c[y]))
    lse = sp.log(sum(sp.exp(shift(a) + m[a] - m[y]) for a in range(3) if a != y))
    stable = sp.log(1 + sp.exp(lse))  # softplus
    if not vanishes(sp.expand_log(sp.expand(stable - target), force=True)):
        return False, "softplus(LSE_{a != y}(...)) != -log(mass on the label)"
    pi = [c[a] * sp.exp(m[a]) / Z for a in range(3)]
    if not vanishes(-sum(pi[a] for a in range(3) if a != y) - (pi[y] - 1)):
        return False, "-sum_{a != y} pi_a != pi_y - 1"
    import mpmath

    from theorycheck.corpus.types import corpus_from_windows
    from theorycheck.graphs import build_graphs
    from theorycheck.model import evaluate, window_stats

    corpus = corpus_from_windows([[0, 0, 1, 2]], [0], ("t0", "t1", "t2"))
    stats = window_stats(corpus, build_graphs(corpus))
    for point in ([0.3, -1.2, 0.7], [-400.0, 400.0, -50.0]):
        got = evaluate(np.array(point), stats).loss
        with mpmath.workdps(50):
            exact = -mpmath.log(2 * mpmath.exp(point[0]) / (2 * mpmath.exp(point[0]) + mpmath.exp(point[1])
                                                           + mpmath.exp(point[2])))
            if abs(got - float(exact)) > 1e-12 * max(1.0, abs(float(exact))):
                return False, f"theorycheck.model.evaluate loss {got} != {float(exact)} at {point}"
    return True, "softplus(LSE) form = -log(mass on label); label coefficient = pi_y - 1; code agrees at gap 800"


OBLIGATION = Obligation("stable-loss", STATEMENT, check, "§1.5, §5.1", SCOPE)
