"""Obligation: block-centred scores are isometric coordinates of Pi_{S_fin} W (THEORY.md §4.1; finite.py)."""

import numpy as np
import sympy as sp

from theorycheck.symbolic.obligations import Obligation, vanishes

STATEMENT = (
    "For orthonormal E and one cyclic SCC C of G^(k): W = sum_{a in C} u_a e_a e_k^T has ||W||_F^2 = "
    "sum_a u_a^2, and Pi_{S_fin} W = sum_a (u_a - mean_C u) e_a e_k^T: it lies in S_fin (its coefficients sum "
    "to 0, so it is a combination of (e_a - e_b) e_k^T) and W - Pi W is orthogonal to every generator. So the "
    "block-centred scores used by theorycheck.finite.CyclicSubspace are isometric coordinates (Frobenius "
    "distances = Euclidean distances); CyclicSubspace.coords returns them."
)
SCOPE = "a rational orthonormal E (K = d = 3), C = {0, 1, 2}, query 0, symbolic scores; the code at one point"


def check(altered: bool = False) -> tuple[bool, str]:
    E = sp.Matrix([[1, 2, 2], [2, 1, -2], [2, -2, 1]]) / 3  # rows orthonormal
    u = sp.symbols("u0:3", real=True)
    k = E[0, :].T
    W = sum((u[a] * E[a, :].T * k.T for a in range(3)), sp.zeros(3, 3))
    if not vanishes(sum(x ** 2 for x in W) - sum(x ** 2 for x in u)):
        return False, "||W||_F^2 != sum u_a^2"
    mean = sum(u) / 3
    # altered: no centring (claims W itself lies in S_fin)
    coords = list(u) if altered else [x - mean for x in u]
    if not vanishes(sum(coords)):
        return False, "the coordinates do not sum to zero, so Pi W is not in S_fin"
    projection = sum((coords[a] * E[a, :].T * k.T for a in range(3)), sp.zeros(3, 3))
    for a in range(3):
        for b in range(a + 1, 3):
            generator = (E[a, :] - E[b, :]).T * k.T
            if not vanishes(((W - projection).T * generator).trace()):
                return False, f"W - Pi W is not orthogonal to the generator ({a}, {b})"
    from theorycheck.corpus.types import corpus_from_windows
    from theorycheck.finite import CyclicSubspace
    from theorycheck.graphs import build_graphs

    En = np.array(E.evalf(), dtype=float)
    corpus = corpus_from_windows([[0, 1, 2], [0, 1, 2], [0, 1, 2]], [0, 1, 2], ("t0", "t1", "t2"), E=En,
                                 embedding_kind="orthonormal")
    graphs = build_graphs(corpus)  # query t2: SCC {t0, t1, t2}
    subspace = CyclicSubspace(En, graphs)
    point = np.array([0.5, -1.0, 2.0])
    Wn = sum(point[a] * np.outer(En[a], En[2]) for a in range(3))
    if np.abs(subspace.coords(Wn) - (point - point.mean())).max() > 1e-12:
        return False, f"CyclicSubspace.coords {subspace.coords(Wn)} != centred scores {point - point.mean()}"
    return True, "||W|| = ||u||, Pi W has the centred scores, W - Pi W perp S_fin; code agrees"


OBLIGATION = Obligation("isometric-coordinates", STATEMENT, check, "§4.1", SCOPE)
