"""Obligation: the reduced loss is shift invariant, so GD for W^fin stays in S_fin (THEORY.md §4.3)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "The reduced loss lbar(u) = -u_y - log c_y + log sum_{a in O} c_a e^{u_a} satisfies lbar(u + t 1) = lbar(u) "
    "(softmax shift invariance), hence sum_a dlbar/du_a = sum_a (pi_a - 1[a = y]) = 0 and the gradient in W, "
    "sum_a (pi_a - 1[a = y]) e_a e_k^T = sum_a (pi_a - 1[a = y]) (e_a - e_y) e_k^T, lies in S_fin: gradient "
    "descent from 0 stays in S_fin, and theorycheck.finite may iterate on block-centred coordinates."
)
SCOPE = "symbolic scores, counts, shift and 2-dimensional embeddings; |O| = 3"


def check(altered: bool = False) -> tuple[bool, str]:
    u = sp.symbols("u0:3", real=True)
    c = sp.symbols("c0:3", positive=True)
    t = sp.Symbol("t", real=True)
    y = 0

    def lbar(scores):
        total = sum(c[a] * sp.exp(scores[a]) for a in range(3))
        if altered:  # a key outside O with score 0: the full loss, which is not shift invariant
            total += 1
        return -scores[y] - sp.log(c[y]) + sp.log(total)

    shifted = lbar([x + t for x in u])
    if not vanishes(sp.expand_log(shifted - lbar(u), force=True)):
        return False, "lbar(u + t 1) != lbar(u)"
    coefficients = [sp.diff(lbar(u), u[a]) for a in range(3)]
    if not vanishes(sum(coefficients)):
        return False, "the score gradient does not sum to zero"
    emb = [sp.Matrix(sp.symbols(f"e{a}_0:2", real=True)) for a in range(3)]
    left = sum((coefficients[a] * emb[a] for a in range(3)), sp.zeros(2, 1))
    right = sum((coefficients[a] * (emb[a] - emb[y]) for a in range(3)), sp.zeros(2, 1))
    if not all(vanishes(x) for x in left - right):
        return False, "sum_a g_a e_a != sum_a g_a (e_a - e_y)"
    return True, "lbar(u + t1) = lbar(u); gradient rows sum to 0; the W-gradient is a combination of (e_a - e_y) e_k^T"


OBLIGATION = Obligation("shift-invariance", STATEMENT, check, "§4.3", SCOPE)
