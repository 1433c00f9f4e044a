"""Regularization path W_R = argmin_{||W||_F <= R} L(W) (THEORY.md §5.2).

The constrained minimiser equals the minimiser of L(W) + (mu/2)||W||_F^2 for the mu
at which ||W_mu||_F = R (convexity; the constraint is active whenever W^svm != 0).
Each penalised problem is solved by Newton-CG; mu is found by a safeguarded secant
search on log ||W_mu|| - log R (relative tolerance 1e-9).

For orthonormal E the variables are the pair scores m (||W||_F = ||m|| for the
minimiser, whose W lies in span{e_a e_k^T}); otherwise W itself (d×d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theorycheck.finite import CyclicSubspace
from theorycheck.model import ScoreMap, WindowStats, evaluate, hessp
from theorycheck.optim import newton_cg

DEFAULT_RADII = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


@dataclass(frozen=True)
class PathPoint:
    R: float
    mu: float
    loss: float
    cos_svm: float  # cos(W_R, W^svm), Frobenius
    fin_distance: float  # ||Pi_fin W_R - W^fin||_F
    norm: float  # ||W_R||_F (= R up to tolerance)

    @property
    def resolved(self) -> bool:
        """False when the loss is flat to float64 precision and ||W_R|| never reaches R."""
        return abs(self.norm - self.R) <= 1e-6 * self.R

    def as_dict(self) -> dict:
        return {**{k: float(v) for k, v in self.__dict__.items()}, "resolved": self.resolved}


def frobenius_cos(A: np.ndarray, B: np.ndarray) -> float:
    na, nb = np.linalg.norm(A), np.linalg.norm(B)
    return float(np.sum(A * B) / (na * nb)) if na > 0 and nb > 0 else 0.0


class PenalisedLoss:
    """x -> L(A x) + (mu/2)||x||^2 with A = identity (orthonormal) or the score map."""

    def __init__(self, stats: WindowStats, score_map: ScoreMap, in_pair_space: bool):
        self.stats = stats
        self.score_map = score_map
        self.in_pair_space = in_pair_space
        self._key = None

    def scores(self, x):
        return x if self.in_pair_space else self.score_map.scores(x.reshape(self.shape))

    def adjoint(self, g):
        return g if self.in_pair_space else self.score_map.adjoint(g).ravel()

    @property
    def shape(self):
        d = self.score_map.E.shape[1]
        return (d, d)

    def size(self) -> int:
        return self.stats.n_pairs if self.in_pair_space else int(np.prod(self.shape))

    def to_matrix(self, x):
        return self.score_map.adjoint(x) if self.in_pair_space else x.reshape(self.shape)

    def value_grad(self, x, mu):
        ev = evaluate(self.scores(x), self.stats)
        self._key, self._prob, self._loss = x.tobytes(), ev.entry_prob, ev.loss
        return ev.loss + 0.5 * mu * float(x @ x), self.adjoint(ev.grad) + mu * x

    def hvp(self, x, v, mu):
        if self._key != x.tobytes():
            self.value_grad(x, mu)
        return self.adjoint(hessp(self._prob, self.stats, self.scores(v))) + mu * v


def solve_radius(problem: PenalisedLoss, R: float, x0: np.ndarray, mu0: float) -> tuple[np.ndarray, float, float]:
    """Find mu with ||x_mu|| = R; returns (x, mu, loss)."""

    def solve(mu, start):
        res = newton_cg(lambda x: problem.value_grad(x, mu), lambda x, v: problem.hvp(x, v, mu), start,
                        gtol=1e-11, maxiter=300, divergence_norm=1e12)
        return res.x

    log_mu = np.log(mu0)
    x = solve(np.exp(log_mu), x0)
    history: list[tuple[float, float]] = []
    lo = hi = None  # log mu with norm > R (lo) and < R (hi)
    for _ in range(80):
        if np.exp(log_mu) < 1e-30:  # loss flat at float64 precision: R is out of reach
            break
        gap = np.log(max(np.linalg.norm(x), 1e-300)) - np.log(R)
        history.append((log_mu, gap))
        if abs(gap) < 1e-9:
            break
        if gap > 0:
            lo = log_mu if lo is None else max(lo, log_mu)
        else:
            hi = log_mu if hi is None else min(hi, log_mu)
        if len(history) >= 2 and history[-1][1] != history[-2][1]:
            (m1, g1), (m2, g2) = history[-2], history[-1]
            step = m2 - g2 * (m2 - m1) / (g2 - g1)
        else:
            step = log_mu + (1.0 if gap > 0 else -1.0)
        if lo is not None and hi is not None and not (lo < step < hi):
            step = 0.5 * (lo + hi)
        elif lo is None and step >= log_mu and gap < 0:
            step = log_mu - 2.0
        elif hi is None and step <= log_mu and gap > 0:
            step = log_mu + 2.0
        log_mu = step
        x = solve(np.exp(log_mu), x)
    _, _ = problem.value_grad(x, np.exp(log_mu))
    return x, float(np.exp(log_mu)), float(problem._loss)


def regularization_path(
    stats: WindowStats,
    score_map: ScoreMap,
    orthonormal: bool,
    W_svm: np.ndarray,
    W_fin: np.ndarray,
    subspace: CyclicSubspace,
    radii: tuple[float, ...] = DEFAULT_RADII,
) -> list[PathPoint]:
    problem = PenalisedLoss(stats, score_map, in_pair_space=orthonormal)
    fin_coords = subspace.coords(W_fin)
    x = np.zeros(problem.size())
    mu = 1.0
    points = []
    for R in sorted(radii):
        x, mu, loss = solve_radius(problem, R, x, mu)
        W = problem.to_matrix(x)
        points.append(PathPoint(
            R=R, mu=mu, loss=loss, cos_svm=frobenius_cos(W, W_svm),
            fin_distance=float(np.linalg.norm(subspace.coords(W) - fin_coords)),
            norm=float(np.linalg.norm(W)),
        ))
    return points


def path_point_cvxpy(stats: WindowStats, score_map: ScoreMap, R: float) -> np.ndarray:
    """Reference W_R via cvxpy (exponential cone + second-order cone); small problems only."""
    import cvxpy as cp

    d = score_map.E.shape[1]
    W = cp.Variable((d, d))
    E = score_map.E
    left = E[score_map.pair_token]
    right = E[score_map.pair_query]
    m = cp.sum(cp.multiply(left @ W, right), axis=1)
    terms = []
    for i in range(stats.n_windows):
        lo, hi = stats.indptr[i], stats.indptr[i + 1]
        idx = stats.entry_pair[lo:hi]
        lab = stats.label_entry[i]
        terms.append(stats.weight[i] * (cp.log_sum_exp(m[idx] + stats.entry_logc[lo:hi])
                                        - m[stats.entry_pair[lab]] - stats.entry_logc[lab]))
    problem = cp.Problem(cp.Minimize(cp.sum(terms)), [cp.norm(W, "fro") <= R])
    problem.solve(solver="CLARABEL")
    return np.asarray(W.value)
