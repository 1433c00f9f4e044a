"""Obligation: L(W) >= Lbar(W), so Lbar(W^fin) is the infimum of L (THEORY.md §4.3, §5.3)."""

import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "For a window whose label y shares its SCC with token b and not with token c, the full loss "
    "l = -log(e^{s_y} / (e^{s_y} + e^{s_b} + e^{s_c})) and the reduced loss lbar = -log(e^{s_y} / (e^{s_y} + "
    "e^{s_b})) satisfy l - lbar = log(1 + e^{s_c} / (e^{s_y} + e^{s_b})) > 0, and the gap tends to 0 as the "
    "cross-SCC score s_c -> -infinity (what W^svm achieves along W^fin + R W^svm). Hence L(W) >= Lbar(W) "
    ">= Lbar(W^fin) and inf L = Lbar(W^fin), the value reported as the loss infimum."
)
SCOPE = "one window with 3 positions, symbolic scores (the general case adds more terms of the same sign)"


def check(altered: bool = False) -> tuple[bool, str]:
    sy, sb, sc = sp.symbols("s_y s_b s_c", real=True)
    full = -sp.log(sp.exp(sy) / (sp.exp(sy) + sp.exp(sb) + sp.exp(sc)))
    reduced = -sp.log(sp.exp(sy) / (sp.exp(sy) + sp.exp(sb)))
    ratio = sp.exp(sc) / (sp.exp(sy) + sp.exp(sb))
    gap = sp.log(1 + ratio)
    if not vanishes(sp.expand_log(full - reduced - gap, force=True)):
        return False, "l - lbar != log(1 + e^{s_c} / (e^{s_y} + e^{s_b}))"
    if not ratio.is_positive:
        return False, "sympy cannot show e^{s_c} / (e^{s_y} + e^{s_b}) > 0"
    # altered: the wrong direction (the lower token's score growing)
    direction = sp.oo if altered else -sp.oo
    limit = sp.limit(gap, sc, direction)
    if limit != 0:
        return False, f"the gap tends to {limit}, not 0, as s_c -> {direction}"
    return True, "l - lbar = log(1 + positive) > 0 and -> 0 as the cross-SCC gap grows"


OBLIGATION = Obligation("finite-lower-bound", STATEMENT, check, "§4.3, §5.3", SCOPE)
