"""Obligation: the gradient of the log-loss (THEORY.md §5.1; theorycheck/model.py)."""

import numpy as np
import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "For a window with query k, label y and token counts c_a, l(m) = -log(c_y e^{m_y} / sum_a c_a e^{m_a}) "
    "has dl/dm_a = pi_a - 1[a = y] with pi_a = c_a e^{m_a} / sum_b c_b e^{m_b} (the attention mass on "
    "token a); with m_a = e_a^T W e_k the chain rule gives dl/dW = sum_a (pi_a - 1[a = y]) e_a e_k^T. "
    "theorycheck.model.evaluate returns this gradient."
)
SCOPE = ("symbolic scores and counts, 3 tokens; chain rule with a symbolic 2x2 W and fixed rational embeddings; "
         "the code compared at one point (1e-12)")


def check(altered: bool = False) -> tuple[bool, str]:
    m = sp.symbols("m0:3", real=True)
    c = sp.symbols("c0:3", positive=True)
    y = 0
    loss = -sp.log(c[y] * sp.exp(m[y]) / sum(c[a] * sp.exp(m[a]) for a in range(3)))
    # altered: forget the multiplicities (a plausible bug with repeated tokens)
    weight = (1, 1, 1) if altered else c
    Z = sum(weight[a] * sp.exp(m[a]) for a in range(3))
    pi = [weight[a] * sp.exp(m[a]) / Z for a in range(3)]
    for a in range(3):
        if not vanishes(sp.diff(loss, m[a]) - (pi[a] - (1 if a == y else 0))):
            return False, f"dl/dm_{a} != pi_{a} - 1[{a} = y]"
    # chain rule: scores m_a = e_a^T W e_k with the query k = token 2
    w = sp.Matrix(2, 2, sp.symbols("w0:4", real=True))
    emb = [sp.Matrix([1, 2]), sp.Matrix([3, -1]), sp.Matrix([1, 1])]
    k = 2
    scores = [(emb[a].T * w * emb[k])[0, 0] for a in range(3)]
    loss_w = loss.subs(dict(zip(m, scores, strict=True)))
    claimed = sum(((pi[a] - (1 if a == y else 0)).subs(dict(zip(m, scores, strict=True))) * emb[a] * emb[k].T
                   for a in range(3)), sp.zeros(2, 2))
    for i in range(2):
        for j in range(2):
            if not vanishes(sp.diff(loss_w, w[i, j]) - claimed[i, j]):
                return False, f"dl/dW[{i},{j}] differs from sum_a (pi_a - 1[a=y]) e_a e_k^T"
    # the code: one window [t0, t0, t1, t2] with label t0 (counts 2, 1, 1), one-hot embeddings
    from theorycheck.corpus.types import corpus_from_windows
    from theorycheck.graphs import build_graphs
    from theorycheck.model import evaluate, window_stats

    corpus = corpus_from_windows([[0, 0, 1, 2]], [0], ("t0", "t1", "t2"))
    graphs = build_graphs(corpus)
    stats = window_stats(corpus, graphs)
    point = np.array([0.3, -1.2, 0.7])  # pair p <-> token p (query 2)
    got = evaluate(point, stats).grad
    values = {**dict(zip(m, point.tolist(), strict=True)), c[0]: 2, c[1]: 1, c[2]: 1}
    expected = np.array([float((pi[a] - (1 if a == y else 0)).subs(values)) for a in range(3)])
    if np.abs(got - expected).max() > 1e-12:
        return False, f"theorycheck.model.evaluate gradient {got} != {expected}"
    return True, "dl/dm_a = pi_a - 1[a=y] and dl/dW = sum_a (pi_a - 1[a=y]) e_a e_k^T; code agrees"


OBLIGATION = Obligation("loss-gradient", STATEMENT, check, "§5.1", SCOPE)
