"""Regularization path W_R = argmin_{||W||_F <= R} L(W) (THEORY.md §5.2).

The constrained minimiser equals the minimiser of L(W) + (mu/2)||W||_F^2 for the mu
at which ||W_mu||_F = R (convexity; the constraint is active whenever W^svm != 0).
Each radius is solved by Newton's method on the KKT system of the constrained problem
(:func:`solve_radius_kkt`: grad L(x) + mu x = 0, ||x|| = R, both unknowns at once, two
preconditioned CG solves per step, for orthonormal E a step length per query: the loss
is a sum of per-query terms coupled only through mu), warm-started from the previous
radius by a first-order predictor; where it does
not converge, by the nested method :func:`solve_radius` (Newton-CG for each mu, a
safeguarded secant search on log ||W_mu|| - log R, relative tolerance 1e-9).

For orthonormal E the variables are the pair scores m (||W||_F = ||m|| for the
minimiser, whose W lies in span{e_a e_k^T}); otherwise W itself (d×d).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theorycheck.corpus.types import embedding_scale
from theorycheck.finite import CyclicSubspace
from theorycheck.model import ScoreMap, WindowStats, evaluate, hessian_operator, hessp
from theorycheck.optim import conjugate_gradient, newton_cg
from theorycheck.runtime import single_threaded_blas

DEFAULT_RADII = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)  # for unit-norm embeddings; see default_radii


def default_radii(E: np.ndarray) -> tuple[float, ...]:
    """DEFAULT_RADII in the units of E / s (s = ``embedding_scale(E)``): R / s^2.  Scores are
    bilinear in E, so W_R on c E is W_{c^2 R} on E / c^2, and these radii trace on c E the
    path that DEFAULT_RADII trace on E (s = 1 for unit-norm rows: unchanged)."""
    scale = embedding_scale(E)
    return tuple(R / scale**2 for R in DEFAULT_RADII)


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
    return cosine(float(np.sum(A * B)), float(np.linalg.norm(A)), float(np.linalg.norm(B)))


def cosine(inner: float, norm_a: float, norm_b: float) -> float:
    """<a, b> / (||a|| ||b||) from its three parts; 0 when either is the zero vector."""
    return inner / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0


class PenalisedLoss:
    """x -> L(A x) + (mu/2)||x||^2 with A = identity (orthonormal) or the score map."""

    def __init__(self, stats: WindowStats, score_map: ScoreMap, in_pair_space: bool):
        self.stats = stats
        self.score_map = score_map
        self.in_pair_space = in_pair_space
        self._key = None
        self._blocks = None
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

    def blocks(self) -> tuple[np.ndarray, int]:
        """(block of each coordinate, number of blocks): the queries for pair scores (every
        window's entries share its query, so L is a sum of per-query terms), else one block."""
        if self._blocks is None:
            pq = self.stats.pair_query
            if self.in_pair_space and pq is not None and pq.size:
                _, coord_block = np.unique(pq, return_inverse=True)
                coord_block = coord_block.ravel()
                self._window_block = coord_block[self.stats.entry_pair[self.stats.label_entry]]
            else:
                coord_block = np.zeros(self.size(), dtype=np.int64)
                self._window_block = np.zeros(self.stats.n_windows, dtype=np.int64)
            self._blocks = (coord_block, int(coord_block.max()) + 1 if coord_block.size else 0)
            contiguous = coord_block.size > 0 and bool(np.all(np.diff(coord_block) >= 0))
            self._block_starts = np.flatnonzero(np.r_[True, np.diff(coord_block) != 0]) if contiguous else None
        return self._blocks

    def block_sum(self, v: np.ndarray) -> np.ndarray:
        """Sum of v over each block's coordinates."""
        coord_block, n_blocks = self.blocks()
        if self._block_starts is not None:  # pairs sorted by query: a segment sum (faster than bincount)
            return np.add.reduceat(v, self._block_starts)
        return np.bincount(coord_block, weights=v, minlength=n_blocks)

    def loss_grad_blocks(self, x):
        """L(A x), its gradient in x and each block's share of L."""
        _, n_blocks = self.blocks()
        ev = evaluate(self.scores(x), self.stats, probabilities=not self.in_pair_space)
        self._loss = ev.loss
        if not self.in_pair_space:
            self._key, self._prob = x.tobytes(), ev.entry_prob
        block_loss = np.bincount(self._window_block, weights=self.stats.weight * ev.window_loss, minlength=n_blocks)
        return ev.loss, self.adjoint(ev.grad), block_loss

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


CONTINUATION_RATIO = 3.0  # largest ratio of consecutive radii the KKT-Newton is started across
KKT_GTOL = 1e-11  # ||grad L + mu x||, as the nested method's inner tolerance
KKT_FORCING = 1e-2  # CG solves to relative residual min(KKT_FORCING, ||F||): few Newton steps
KKT_RTOL = 1e-10  # | ||x|| / R - 1 |
KKT_XTOL = 1e-8  # ||F_1|| / (mu R): a bound on the relative error of x
KKT_ARMIJO = 1e-4  # sufficient decrease of each query's penalised loss
KKT_ROUNDOFF = 1e-12  # relative slack in that test: a query's loss sums many windows' rounding


def solve_radius_kkt(problem: PenalisedLoss, R: float, x0: np.ndarray, mu0: float,
                     maxiter: int = 60) -> tuple[np.ndarray, float, float] | None:
    """W_R by Newton's method on the KKT system of min L(x) s.t. ||x|| = R (§5.2):

        F(x, mu) = (grad L(x) + mu x,  (||x||^2 - R^2) / (2R)) = 0.

    A step solves [H + mu I, x; x^T, 0] (dx, dmu) = -F with two preconditioned CG solves
    with H + mu I (Jacobi; H from :meth:`PenalisedLoss.hessian`):

        b = (H + mu I)^{-1} x            (loose, relative KKT_FORCING, warm-started),
        dmu_lin = (R F_2 - b.F_1) / (x.b)  (x.(H + mu I)^{-1} F_1 = b.F_1 by symmetry),
        d = -(H + mu I)^{-1} (F_1 + dmu_lin x)   (forcing min(KKT_FORCING, ||F||) ||F||);

    dmu is then the root of ||x + d - (dmu - dmu_lin) b||^2 = R^2 nearest dmu_lin (the
    constraint to second order), mu' = mu + dmu within [e^-3 mu, e^3 mu] (mu > 0), and
    dx = d - (mu' - mu - dmu_lin) b = -(H + mu I)^{-1} grad f(x; mu') up to b's error: a
    descent direction of the penalised loss f(x; mu') = L(x) + (mu'/2)||x||^2.  For
    orthonormal E, f is a sum over queries k of f_k(x_k; mu') (:meth:`PenalisedLoss.blocks`),
    so each query takes its own Armijo step length on its own f_k: one hard query does not
    shorten every other query's step (one step length for all took ~20 damped steps per
    radius on the python3-doc corpus).  Near the solution every step length is 1 and the
    iteration is Newton's method on F.  Stops at ||F_1|| <= KKT_GTOL, | ||x||/R - 1 | <=
    KKT_RTOL and ||F_1|| <= KKT_XTOL mu R (or F_1 at its rounding floor).  Starts from x0
    rescaled to norm R (x0 = 0: -R grad L(0) / ||grad L(0)|| with the least-squares mu).
    Returns (x, mu, loss), or None when it does not converge (the caller falls back to the
    nested method).

    Overflow inside (badly scaled or degenerate data) counts as a failure: None, and the
    caller falls back to the nested solver.
    """
    try:
        with np.errstate(over="raise"):
            return _solve_radius_kkt_raw(problem, R, x0, mu0, maxiter)
    except FloatingPointError:
        return None


def _solve_radius_kkt_raw(problem: PenalisedLoss, R: float, x0: np.ndarray, mu0: float,
                          maxiter: int = 60) -> tuple[np.ndarray, float, float] | None:
    """:func:`solve_radius_kkt` without its overflow guard."""
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
    coord_block, n_blocks = problem.blocks()
    block_sum = problem.block_sum

    loss, g, block_loss = problem.loss_grad_blocks(x)
    if n0 == 0.0 and float(x @ g) < 0:  # cold start: the least-squares multiplier of grad L + mu x = 0
        mu = -float(x @ g) / float(x @ x)
    previous_r1 = np.inf
    for _ in range(maxiter):
        r1 = g + mu * x
        r2 = (float(x @ x) - R * R) / (2 * R)
        norm_f = float(np.sqrt(r1 @ r1 + r2 * r2))
        if not np.isfinite(norm_f):
            return None
        norm_r1 = float(np.linalg.norm(r1))
        # H + mu I >= mu I, so ||x - x_R|| <~ ||F_1|| / mu: where the loss is flat (mu ~ 1e-7)
        # ||F_1|| <= KKT_GTOL alone leaves x loose; stop also when F_1 no longer falls (rounding)
        accurate = norm_r1 <= KKT_XTOL * mu * R or norm_r1 > 0.5 * previous_r1
        if norm_r1 <= KKT_GTOL and abs(np.linalg.norm(x) / R - 1) <= KKT_RTOL and accurate:
            return x, mu, loss
        previous_r1 = norm_r1
        hvp, diag = problem.hessian(x)
        inv_diag = None if diag is None else 1.0 / np.maximum(diag + mu, 1e-300)
        forcing = min(KKT_FORCING, norm_f) * norm_f
        cg_iter = min(x.size, 2000)

        def shifted(v, hvp=hvp, mu=mu):
            return hvp(v) + mu * v

        # b = (H + mu I)^{-1} x, loosely: it enters dmu only through x.b and b.F_1, whose
        # errors are second order (x.b) or a product of two small terms (b.F_1 near the
        # solution); warm-started from the previous step's b
        b_tol = KKT_FORCING * float(np.linalg.norm(x))
        b = None
        if problem.tangent is not None and problem.tangent[1].shape == x.shape:
            b_prev = problem.tangent[1]
            residual_b = x - shifted(b_prev)
            if np.linalg.norm(residual_b) < float(np.linalg.norm(x)):
                b = b_prev + conjugate_gradient(shifted, residual_b, b_tol, cg_iter, inv_diag)
        if b is None:
            b = conjugate_gradient(shifted, x, b_tol, cg_iter, inv_diag)
        xb = float(x @ b)
        if not xb > 0:
            return None
        problem.tangent = (R, b, xb)  # for the next radius's predictor (path_step)
        # the linearised constraint x.dx = -R F_2 with dx = -(H + mu I)^{-1}(F_1 + dmu x):
        # x.a = -b.F_1 by symmetry, so dmu needs no solve with F_1
        dmu_lin = (R * r2 - float(b @ r1)) / xb
        d = conjugate_gradient(shifted, -(r1 + dmu_lin * x), forcing, cg_iter, inv_diag)
        # dx(dmu) = d - (dmu - dmu_lin) b; the root of ||x + dx(dmu)||^2 = R^2 nearest
        # dmu_lin: the constraint's second-order term ||dx||^2 is most of the norm error
        # after a long step
        c = x + d + dmu_lin * b
        bb, bc = float(b @ b), float(b @ c)
        disc = bc * bc - bb * (float(c @ c) - R * R)
        dmu = dmu_lin
        if disc >= 0 and bb > 0:
            roots = (bc - np.sqrt(disc)) / bb, (bc + np.sqrt(disc)) / bb
            dmu = min(roots, key=lambda root: abs(root - dmu_lin))
        mu_new = float(np.clip(mu + dmu, mu * np.exp(-3.0), mu * np.exp(3.0)))  # mu > 0, at most e^3 per step
        dx = d - (mu_new - mu - dmu_lin) * b
        grad_new = g + mu_new * x  # gradient of f(.; mu') at x
        slope = block_sum(grad_new * dx)
        uphill = slope > 0  # (inexact CG) steepest descent for that query instead
        if uphill.any():
            dx = np.where(uphill[coord_block], -grad_new, dx)
            slope = block_sum(grad_new * dx)
        f0 = block_loss + 0.5 * mu_new * block_sum(x * x)
        slack = KKT_ROUNDOFF * np.abs(f0)  # rounding in a sum over many windows
        t = np.ones(n_blocks)
        pending = np.ones(n_blocks, dtype=bool)
        for _ in range(40):
            trial = x + t[coord_block] * dx
            loss_t, g_t, block_loss_t = problem.loss_grad_blocks(trial)
            f_t = block_loss_t + 0.5 * mu_new * block_sum(trial * trial)
            failed = pending & ~(f_t <= f0 + KKT_ARMIJO * t * slope + slack)  # (NaN fails)
            if not failed.any():
                break
            pending = failed  # the others keep their accepted step
            # minimiser of the quadratic through f0, slope and f_t, within [0.1 t, 0.5 t]
            curvature = np.where(np.isfinite(f_t), f_t - f0 - slope * t, np.inf)
            with np.errstate(divide="ignore", invalid="ignore"):
                t_q = -slope * t * t / (2 * curvature)
            t = np.where(failed, np.clip(np.nan_to_num(t_q, nan=0.5 * t), 0.1 * t, 0.5 * t), t)
        else:
            return None
        x, mu = trial, mu_new
        loss, g, block_loss = loss_t, g_t, block_loss_t
    return None


def path_step(problem: PenalisedLoss, R: float, x: np.ndarray, mu: float,
              R_from: float | None = None) -> tuple[np.ndarray, float, float, str]:
    """W_R from the solution (x, mu) at radius R_from (None: a cold start): KKT-Newton
    (:func:`solve_radius_kkt`) across intermediate radii at most CONTINUATION_RATIO apart,
    else the nested method (:func:`solve_radius`).  Returns (x, mu, loss, method)."""
    solved = None
    if R_from is not None or R <= CONTINUATION_RATIO:
        start = R if R_from is None else R_from
        steps = max(1, int(np.ceil(np.log(R / start) / np.log(CONTINUATION_RATIO)))) if R > start else 1
        x_c, mu_c = x, mu
        r_c = start
        for r in start * (R / start) ** (np.arange(1, steps + 1) / steps):
            tangent = getattr(problem, "tangent", None)
            if (tangent is not None and tangent[0] == r_c and R_from is not None
                    and np.isfinite(tangent[2]) and tangent[2] > 0 and mu_c > 0):  # a degenerate tangent predicts nothing
                # first-order predictor along the path: differentiating grad L(x) + mu x = 0,
                # ||x|| = r gives dx/dr = r b / (x.b) and d log mu / d log r = -r^2 / (mu x.b),
                # b = (H + mu I)^{-1} x; mu is extrapolated in log r (log mu is close to
                # linear in log r; linear in r it overshoots to ~0 across 20 -> 50)
                _, b, xb = tangent
                x_c = x_c + ((float(r) - r_c) * r_c / xb) * b
                slope = -r_c * r_c / (xb * mu_c)
                mu_c = mu_c * float(np.exp(np.clip(slope * np.log(float(r) / r_c), -5.0, 5.0)))
            solved = solve_radius_kkt(problem, float(r), x_c, mu_c)
            if solved is None:
                break
            x_c, mu_c, _ = solved
            r_c = float(r)
    if solved is not None:
        return (*solved, "kkt")
    return (*solve_radius(problem, R, x, mu), "nested")


@dataclass(frozen=True)
class PathTrace:
    """The solved radii: W_R = ``to_matrix(x)`` for each (R, mu, loss, x), ascending in R (x in
    the units of the caller's E; ``problem`` may be posed on E / s, whose to_matrix is a reshape)."""

    problem: PenalisedLoss
    solved: tuple[tuple[float, float, float, np.ndarray], ...]


def trace_path(stats: WindowStats, score_map: ScoreMap, orthonormal: bool,
               radii: tuple[float, ...] = DEFAULT_RADII, stop: Callable[[], bool] | None = None) -> PathTrace:
    """W_R for the radii (ascending), each continued from the previous one (:func:`path_step`).
    Needs neither W^svm nor W^fin, so ``analyze`` runs it beside them; ``stop()`` is asked
    before each radius (True: the radii solved so far are returned).

    Solved in the units of E / s (s = ``embedding_scale(E)``, a power of two): W' = s^2 W at
    radius s^2 R, multiplier mu' = mu / s^4 (grad L(W) = s^2 grad L'(W')), where the solvers'
    absolute tolerances (KKT_GTOL, the mu bracket) are meant; reported in the units of E."""
    scale = embedding_scale(score_map.E)
    if scale != 1.0:
        unit_radii = tuple(R * scale**2 for R in radii)
        if not all(np.isfinite(unit_radii)):
            raise FloatingPointError(f"overflow (radius {max(radii):g} times s^2 = {scale**2:g})")
        unit_map = ScoreMap(score_map.E / scale, score_map.pair_token, score_map.pair_query)
        unit = trace_path(stats, unit_map, orthonormal, unit_radii, stop)
        return PathTrace(unit.problem, tuple((R / scale**2, mu * scale**4, loss, x / scale**2)
                                             for R, mu, loss, x in unit.solved))
    problem = PenalisedLoss(stats.deduplicated(), score_map, in_pair_space=orthonormal)
    if orthonormal and problem.stats.query_groups() is not None:
        problem.stats.design()  # the first Hessian builds it anyway; the evaluations before it would go entry by entry
    x = np.zeros(problem.size())
    mu = 1.0
    solved: list[tuple[float, float, float, np.ndarray]] = []
    for R in sorted(radii):
        if stop is not None and stop():
            break
        with single_threaded_blas():  # CG's many short dot products: OpenBLAS threads only spin
            x, mu, loss, _ = path_step(problem, R, x, mu, solved[-1][0] if solved else None)
        solved.append((float(R), float(mu), float(loss), x))
    return PathTrace(problem, tuple(solved))


def path_points(trace: PathTrace, W_svm: np.ndarray, W_fin: np.ndarray, subspace: CyclicSubspace) -> list[PathPoint]:
    """Each traced W_R against the predictions: cos(W_R, W^svm) and ||Pi_fin W_R - W^fin||_F.

    In pair space (E E^T = I) W_R = sum_p x_p e_a e_k^T over distinct pairs p = (a, k) is never
    formed (d×d: 200 MB per radius at V = 5,000): E E^T = I gives ||W_R||_F = ||x||_2,
    <W_R, W^svm>_F = x . m(W^svm) (m: the pair scores e_a^T W e_k) and m(W_R)_p = x_p, so the
    S_fin coordinates of W_R are x on the cyclic pairs, block-centred (:meth:`CyclicSubspace.coords`).
    """
    fin_coords = subspace.coords(W_fin)
    problem = trace.problem
    pair_space = problem.in_pair_space and _same_pairs(problem.score_map, subspace)
    if pair_space:
        svm_scores, svm_norm = problem.score_map.scores(W_svm), float(np.linalg.norm(W_svm))
    points = []
    for R, mu, loss, x in trace.solved:
        if pair_space:
            norm = float(np.linalg.norm(x))
            cos_svm = cosine(float(x @ svm_scores), norm, svm_norm)
            coords = subspace.center(x[subspace.pairs]) if subspace.pairs.size else np.zeros(0)
        else:
            W = problem.to_matrix(x)
            norm, cos_svm, coords = float(np.linalg.norm(W)), frobenius_cos(W, W_svm), subspace.coords(W)
        points.append(PathPoint(R=R, mu=mu, loss=loss, cos_svm=cos_svm,
                                fin_distance=float(np.linalg.norm(coords - fin_coords)), norm=norm))
    return points


def _same_pairs(score_map: ScoreMap, subspace: CyclicSubspace) -> bool:
    """The path's pair p is the graphs' pair p (so subspace.pairs index x), on the same E."""
    cyclic = subspace.score_map
    return (score_map.E is subspace.E or np.array_equal(score_map.E, subspace.E)) \
        and score_map.pair_token.size == subspace.graphs.n_pairs \
        and np.array_equal(score_map.pair_token[subspace.pairs], cyclic.pair_token) \
        and np.array_equal(score_map.pair_query[subspace.pairs], cyclic.pair_query)


def regularization_path(
    stats: WindowStats,
    score_map: ScoreMap,
    orthonormal: bool,
    W_svm: np.ndarray,
    W_fin: np.ndarray,
    subspace: CyclicSubspace,
    radii: tuple[float, ...] = DEFAULT_RADII,
) -> list[PathPoint]:
    """The path points W_R for the radii (ascending): :func:`trace_path`, then :func:`path_points`."""
    return path_points(trace_path(stats, score_map, orthonormal, radii), W_svm, W_fin, subspace)


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
