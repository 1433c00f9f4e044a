"""Regularization path W_R = argmin_{||W||_F <= R} L(W) (THEORY.md §5.2).

The constrained minimiser equals the minimiser of L(W) + (mu/2)||W||_F^2 for the mu
at which ||W_mu||_F = R (convexity; the constraint is active whenever W^svm != 0).
Each radius is solved by Newton's method on the KKT system of the constrained problem
(:func:`solve_radius_kkt`: grad L(x) + mu x = 0, ||x|| = R, both unknowns at once, two
preconditioned CG solves per step), warm-started from the previous radius; where it does
not converge, by the nested method :func:`solve_radius` (Newton-CG for each mu, a
safeguarded secant search on log ||W_mu|| - log R, relative tolerance 1e-9).

For orthonormal E the variables are the pair scores m (||W||_F = ||m|| for the
minimiser, whose W lies in span{e_a e_k^T}); otherwise W itself (d×d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theorycheck.finite import CyclicSubspace, single_threaded_blas
from theorycheck.model import ScoreMap, WindowStats, evaluate, hessian_operator, hessp
from theorycheck.optim import conjugate_gradient, newton_cg

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
        self.tangent = None  # (R, (H + mu I)^{-1} x, x.(H + mu I)^{-1} x) from the last KKT-Newton step

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

    def loss_grad(self, x):
        """L(A x) and its gradient in x (no penalty)."""
        ev = evaluate(self.scores(x), self.stats, probabilities=not self.in_pair_space)
        self._loss = ev.loss
        if not self.in_pair_space:
            self._key, self._prob = x.tobytes(), ev.entry_prob
        return ev.loss, self.adjoint(ev.grad)

    def hessian(self, x):
        """(v -> Hessian of L times v, its diagonal or None) at x."""
        if self.in_pair_space:
            op = hessian_operator(x, self.stats)
            if op is not None:
                return op
            prob = evaluate(x, self.stats).entry_prob
            return (lambda v: hessp(prob, self.stats, v)), None
        if self._key != x.tobytes():
            self.loss_grad(x)
        prob = self._prob
        return (lambda v: self.adjoint(hessp(prob, self.stats, self.scores(v)))), None


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


CONTINUATION_RATIO = 1.5  # largest ratio of consecutive radii the KKT-Newton is started across
KKT_GTOL = 1e-11  # ||grad L + mu x||, as the nested method's inner tolerance
KKT_FORCING = 1e-2  # CG solves to relative residual min(KKT_FORCING, ||F||): few Newton steps
KKT_RTOL = 1e-10  # | ||x|| / R - 1 |


def solve_radius_kkt(problem: PenalisedLoss, R: float, x0: np.ndarray, mu0: float,
                     maxiter: int = 60) -> tuple[np.ndarray, float, float] | None:
    """W_R by Newton's method on the KKT system of min L(x) s.t. ||x|| = R (§5.2):

        F(x, mu) = (grad L(x) + mu x,  (||x||^2 - R^2) / (2R)) = 0.

    A step solves [H + mu I, x; x^T, 0] (dx, dmu) = -F through two preconditioned CG
    solves with H + mu I (Jacobi; H from :meth:`PenalisedLoss.hessian`):
    (H + mu I) a = -F_1, (H + mu I) b = x, dmu = (x.a + R F_2) / (x.b), dx = a - dmu b;
    the mu update is taken in log mu (keeps mu > 0), backtracking on ||F||.  Starts from x0 rescaled to norm R.  Returns
    (x, mu, loss), or None when it does not converge (the caller falls back to the
    nested method)."""
    n0 = float(np.linalg.norm(x0))
    if n0 == 0.0:
        _, g = problem.loss_grad(x0)
        gn = float(np.linalg.norm(g))
        if gn == 0.0:
            return None
        x = -R * g / gn
    else:
        x = x0 * (R / n0)
    mu = float(mu0)

    def residual(x, mu):
        loss, g = problem.loss_grad(x)
        r1 = g + mu * x
        r2 = (float(x @ x) - R * R) / (2 * R)
        return loss, g, r1, r2, float(np.sqrt(r1 @ r1 + r2 * r2))

    loss, g, r1, r2, norm_f = residual(x, mu)
    for _ in range(maxiter):
        if not np.isfinite(norm_f):
            return None
        if np.linalg.norm(r1) <= KKT_GTOL and abs(np.linalg.norm(x) / R - 1) <= KKT_RTOL:
            return x, mu, loss
        hvp, diag = problem.hessian(x)
        inv_diag = None if diag is None else 1.0 / np.maximum(diag + mu, 1e-300)
        forcing = min(KKT_FORCING, norm_f) * norm_f
        cg_iter = min(x.size, 2000)

        def shifted(v, hvp=hvp, mu=mu):
            return hvp(v) + mu * v

        a = conjugate_gradient(shifted, -r1, forcing, cg_iter, inv_diag)
        b = conjugate_gradient(shifted, x, min(KKT_FORCING, norm_f) * float(np.linalg.norm(x)), cg_iter, inv_diag)
        xb = float(x @ b)
        if not xb > 0:
            return None
        problem.tangent = (R, b, xb)  # for the next radius's predictor (path_step)
        dmu = (float(x @ a) + R * r2) / xb
        dx = a - dmu * b
        # Newton in log mu (the same step to first order, dnu = dmu / mu) keeps mu > 0;
        # one step changes mu by a factor of at most e^3
        dnu = float(np.clip(dmu / mu, -3.0, 3.0))
        t = 1.0
        for _ in range(40):
            mu_t = mu * float(np.exp(t * dnu))
            trial = residual(x + t * dx, mu_t)
            if np.isfinite(trial[4]) and trial[4] <= (1 - 1e-4 * t) * norm_f:
                break
            t *= 0.5
        else:
            return None
        x, mu = x + t * dx, mu_t
        loss, g, r1, r2, norm_f = trial
    return None


def path_step(problem: PenalisedLoss, R: float, x: np.ndarray, mu: float, R_from: float | None = None,
              mu_guess: float | None = None) -> tuple[np.ndarray, float, float, str]:
    """W_R from the solution (x, mu) at radius R_from (None: a cold start): KKT-Newton
    (:func:`solve_radius_kkt`) across intermediate radii at most CONTINUATION_RATIO apart,
    else the nested method (:func:`solve_radius`).  Returns (x, mu, loss, method)."""
    solved = None
    if R_from is not None or R <= CONTINUATION_RATIO:
        start = R if R_from is None else R_from
        steps = max(1, int(np.ceil(np.log(R / start) / np.log(CONTINUATION_RATIO)))) if R > start else 1
        x_c, mu_c = x, (mu_guess if steps == 1 and mu_guess is not None else mu)
        r_c = start
        for r in start * (R / start) ** (np.arange(1, steps + 1) / steps):
            tangent = getattr(problem, "tangent", None)
            if tangent is not None and tangent[0] == r_c and R_from is not None:
                # first-order predictor along the path: differentiating grad L(x) + mu x = 0,
                # ||x|| = r gives dx/dr = r b / (x.b), dmu/dr = -r / (x.b), b = (H + mu I)^{-1} x
                _, b, xb = tangent
                dr = float(r) - r_c
                x_c = x_c + (dr * r_c / xb) * b
                mu_c = mu_c * float(np.exp(np.clip(-dr * r_c / (xb * mu_c), -3.0, 3.0)))
            solved = solve_radius_kkt(problem, float(r), x_c, mu_c)
            if solved is None:
                break
            x_c, mu_c, _ = solved
            r_c = float(r)
    if solved is not None:
        return (*solved, "kkt")
    return (*solve_radius(problem, R, x, mu), "nested")


def regularization_path(
    stats: WindowStats,
    score_map: ScoreMap,
    orthonormal: bool,
    W_svm: np.ndarray,
    W_fin: np.ndarray,
    subspace: CyclicSubspace,
    radii: tuple[float, ...] = DEFAULT_RADII,
) -> list[PathPoint]:
    """The path points W_R for the radii (ascending), each continued from the previous one
    (:func:`path_step`)."""
    problem = PenalisedLoss(stats.deduplicated(), score_map, in_pair_space=orthonormal)
    fin_coords = subspace.coords(W_fin)
    x = np.zeros(problem.size())
    mu = 1.0
    points = []
    previous: list[tuple[float, float]] = []  # (log R, log mu) of solved radii
    for R in sorted(radii):
        mu_guess = mu
        if len(previous) >= 2:  # log mu is close to linear in log R along the path
            (r1, m1), (r2, m2) = previous[-2:]
            mu_guess = float(np.exp(m2 + (m2 - m1) / (r2 - r1) * (np.log(R) - r2)))
        with single_threaded_blas():  # CG's many short dot products: OpenBLAS threads only spin
            x, mu, loss, _ = path_step(problem, R, x, mu, points[-1].R if points else None, mu_guess)
        previous.append((float(np.log(R)), float(np.log(mu))))
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
