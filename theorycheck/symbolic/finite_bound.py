"""A rigorous error bound for the numeric W^fin (THEORY.md §4.3-§4.4).

Parametrise S_fin by W(c) = sum_j (P c)_j B_j with the generators
B_j = (e_a - e_r) e_k^T (member minus root of each cyclic SCC of G^(k)) and P = I, or
the frame of :class:`theorycheck.finite.CyclicSubspace` when the generators are
dependent.  With E converted to rationals exactly, the pair scores u = J c, the metric
Gamma (||W(c)||_F^2 = c^T Gamma c) and J are exact.  The reduced loss, with unit window
weights (n times Lbar, same minimiser), is

    f(c) = sum_{i in I_cyc} [ log sum_{a in O_i} c_ia exp(u_a) - u_{y_i} - log c_iy ].

Its Hessian in u is, per window, diag(pi) - pi pi^T = sum_{s<t} pi_s pi_t (e_s - e_t)(e_s - e_t)^T
(proofs/obligation_hessian_covariance.py): a graph Laplacian whose edge weights are
products of attention masses.  Laplacians are monotone in their weights, so on the ball
B = {c : ||W(c) - W(c*)||_F <= rho}, where every score moves by at most
|u_p - u_p*| <= ||e_a|| ||e_k|| rho, the Hessian is bounded below by the Laplacian H_lo
with weights l_st <= min_B pi_s pi_t (computed with mpmath interval arithmetic, then
rounded down to rationals).  An exact LDL^T test proves J^T H_lo J - mu Gamma > 0.

The gradient g = ||grad f(c*)||_{Gamma^-1} is enclosed with interval arithmetic.  Then
(proofs/obligation_strong_convexity_radius.py): if 2 g / mu < rho, f has a unique
minimiser in B and ||W^fin - W(c*)||_F <= g / mu.  Proof: on the sphere of radius
r = rho, f(c) >= f(c*) - g r + mu r^2 / 2 > f(c*), so the minimum over B is interior,
hence global (convexity); at it grad f = 0 and strong monotonicity on B gives
mu r^2 <= g r.  The reported radius adds ||W - W(c*)||_F (exact), the distance from the
numeric matrix to the centre.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from mpmath import iv, libmp

from theorycheck.corpus.types import Corpus
from theorycheck.finite import CyclicSubspace, reduced_stats
from theorycheck.graphs import TokenPriorityGraphs, scc_generators
from theorycheck.symbolic.exact import (
    ZERO,
    exact_gram,
    floor_dyadic,
    positive_definite,
    sqrt_upper,
    to_fractions,
)

MAX_DIM = 120  # dim S_fin
MAX_ENTRIES = 20_000  # entries of the reduced windows
PRECISION_BITS = 113
ATTEMPTS = 8


@dataclass(frozen=True)
class FiniteBound:
    """``status``: "certified" (radius valid), "not certified", "trivial" (S_fin = {0}) or "too large"."""

    status: str
    radius: float = math.inf  # ||W^fin - W_numeric||_F <= radius
    gradient_bound: float = math.nan  # g, dual norm of grad f at the centre (n Lbar scale)
    convexity_bound: float = math.nan  # mu, certified on the ball
    ball: float = math.nan  # rho
    centre_distance: float = math.nan  # ||W_numeric - W(c*)||_F
    dim: int = 0
    message: str = ""
    seconds: float = 0.0

    @property
    def certified(self) -> bool:
        return self.status in ("certified", "trivial")

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "statement": "||W^fin - W_numeric||_F <= radius (exact data, interval arithmetic, strong convexity "
                         "on a ball; see docs/certificates.md)",
            "radius": self.radius,
            "gradient_bound": self.gradient_bound,
            "strong_convexity": self.convexity_bound,
            "ball_radius": self.ball,
            "centre_distance": self.centre_distance,
            "dimension": self.dim,
            "message": self.message,
        }


def _iv(x: Fraction):
    return iv.mpf(x.numerator) / iv.mpf(x.denominator)


def _lower(x) -> Fraction:
    return Fraction(*libmp.to_rational(x._mpi_[0]))


def _upper(x) -> Fraction:
    return Fraction(*libmp.to_rational(x._mpi_[1]))


def _windows(stats):
    """(entry pairs, integer counts, label position) of every reduced window."""
    counts = np.rint(np.exp(stats.entry_logc)).astype(np.int64)
    out = []
    for i in range(stats.n_windows):
        lo, hi = int(stats.indptr[i]), int(stats.indptr[i + 1])
        out.append((stats.entry_pair[lo:hi].tolist(), counts[lo:hi].tolist(), int(stats.label_entry[i]) - lo))
    return out


def _masses(u: list[Fraction], pairs: list[int], counts: list[int], radius: list):
    """Interval attention masses pi_s = 1 / sum_t exp(u_t - u_s + log(c_t / c_s)), scores moved by
    at most ``radius[p]`` (iv upper bounds; zero for the centre itself)."""
    out = []
    for s, (ps, cs) in enumerate(zip(pairs, counts, strict=True)):
        total = iv.mpf(1)
        for t, (pt, ct) in enumerate(zip(pairs, counts, strict=True)):
            if t == s:
                continue
            gap = _iv(u[pt] - u[ps]) + iv.log(iv.mpf(ct) / iv.mpf(cs))
            if radius is not None:
                gap = gap + iv.mpf([-1, 1]) * (radius[pt] + radius[ps])
            total = total + iv.exp(gap)
        out.append(1 / total)
    return out


def certify_finite(corpus: Corpus, graphs: TokenPriorityGraphs, W: np.ndarray,
                   subspace: CyclicSubspace | None = None, max_dim: int = MAX_DIM,
                   max_entries: int = MAX_ENTRIES) -> FiniteBound:
    """Certified radius around the numeric W^fin ``W`` (see the module docstring)."""
    t0 = time.perf_counter()
    subspace = subspace or CyclicSubspace(corpus.E, graphs)
    if subspace.dim == 0:
        norm = float(np.linalg.norm(W))
        return FiniteBound("trivial", radius=norm, gradient_bound=0.0, centre_distance=norm, dim=0,
                           message="S_fin = {0}, so W^fin = 0 exactly", seconds=time.perf_counter() - t0)
    stats, _ = reduced_stats(corpus, graphs, subspace)
    n_entries = int(stats.entry_pair.size)
    if subspace.dim > max_dim or n_entries > max_entries:
        return FiniteBound("too large", dim=subspace.dim,
                           message=f"dim S_fin = {subspace.dim} (limit {max_dim}), {n_entries} reduced entries "
                                   f"(limit {max_entries})", seconds=time.perf_counter() - t0)
    old_prec = iv.prec
    iv.prec = PRECISION_BITS
    try:
        result = _certify(corpus, graphs, W, subspace, stats)
    finally:
        iv.prec = old_prec
    return FiniteBound(**{**result, "dim": subspace.dim, "seconds": time.perf_counter() - t0})


def _certify(corpus, graphs, W, subspace, stats) -> dict:
    E = corpus.E
    member, root = scc_generators(graphs)
    ga, gr, gk = graphs.pair_token[member], graphs.pair_token[root], graphs.pair_query[member]
    ta, tk = graphs.pair_token[subspace.pairs], graphs.pair_query[subspace.pairs]
    G = exact_gram(E)
    J = (G[np.ix_(ta, ga)] - G[np.ix_(ta, gr)]) * G[np.ix_(tk, gk)]  # u = J beta
    Gamma = (G[np.ix_(ga, ga)] - G[np.ix_(ga, gr)] - G[np.ix_(gr, ga)] + G[np.ix_(gr, gr)]) * G[np.ix_(gk, gk)]
    P = None
    if not positive_definite(Gamma)[0]:
        if subspace.orthonormal:
            return {"status": "not certified", "message": "the generators of S_fin are dependent"}
        P = to_fractions(subspace.frame)
        J, Gamma = J @ P, P.T @ Gamma @ P
        if not positive_definite(Gamma)[0]:
            return {"status": "not certified", "message": "no exact basis of S_fin (frame Gram not definite)"}
    Gamma_f = np.array([[float(x) for x in row] for row in Gamma])
    m = Gamma.shape[0]
    # centre: least-squares coordinates of W in the basis, then read as exact rationals
    M = E @ W @ E.T
    b = M[ga, gk] - M[gr, gk]
    if P is not None:
        b = np.array([[float(x) for x in row] for row in P]).T @ b
    centre = to_fractions(np.linalg.solve(Gamma_f, b))
    u = list(J @ centre)
    # rigorous lower bound on lambda_min(Gamma) for the dual norm of the gradient
    gamma_low = _certified_min_eig(Gamma, np.eye(m, dtype=np.int64), Gamma_f, np.eye(m))
    if gamma_low is None:
        return {"status": "not certified", "message": "could not certify lambda_min of the metric"}
    windows = _windows(stats)
    grad_u = [iv.mpf(0)] * len(u)
    for pairs, counts, label in windows:
        for s, mass in enumerate(_masses(u, pairs, counts, None)):
            grad_u[pairs[s]] = grad_u[pairs[s]] + mass - (1 if s == label else 0)
    grad_c = [iv.mpf(0)] * m
    for p in range(len(u)):
        for j in range(m):
            if J[p, j] != 0:
                grad_c[j] = grad_c[j] + _iv(J[p, j]) * grad_u[p]
    g2 = sum((x * x for x in grad_c), iv.mpf(0))
    g = float(_upper(iv.sqrt(g2 / _iv(gamma_low))))
    g = math.nextafter(g, math.inf)
    # centre distance ||W - W(c*)||_F, exactly
    coef = (P @ centre) if P is not None else centre
    E_exact = to_fractions(E)
    W_centre = (E_exact[ga] - E_exact[gr]).T @ (coef[:, None] * E_exact[gk])
    diff = to_fractions(W) - W_centre
    d0 = sqrt_upper(sum((x * x for x in diff.reshape(-1)), ZERO))
    score_scale = [_iv(Fraction(sqrt_upper(G[a, a] * G[k, k]))) for a, k in zip(ta, tk, strict=True)]
    rho = 0.0
    mu = _convexity(u, windows, J, Gamma, Gamma_f, score_scale, rho)
    if mu is None:
        return {"status": "not certified", "gradient_bound": g, "centre_distance": d0,
                "message": "strong convexity could not be certified at the centre"}
    rho = max(4.0 * g / mu, 1e-30)
    for _ in range(ATTEMPTS):
        mu = _convexity(u, windows, J, Gamma, Gamma_f, score_scale, rho)
        if mu is not None and 2.0 * g / mu < rho:
            radius = math.nextafter(float(_upper(iv.mpf(g) / _iv(Fraction(mu)) + iv.mpf(d0))), math.inf)
            return {"status": "certified", "radius": radius, "gradient_bound": g,
                    "convexity_bound": math.nextafter(float(mu), 0.0),
                    "ball": rho, "centre_distance": d0,
                    "message": f"unique minimiser within {radius:.2e} (Frobenius) of the numeric W^fin"}
        rho = max(4.0 * rho, 4.0 * g / mu) if mu is not None else rho / 16.0
    return {"status": "not certified", "gradient_bound": g, "centre_distance": d0,
            "message": "strong convexity could not be certified on a ball large enough for the gradient "
                       f"bound g = {g:.2e}"}


def _convexity(u, windows, J, Gamma, Gamma_f, score_scale, rho: float) -> float | None:
    """A mu > 0 with J^T H(u') J >= mu Gamma for all scores u' of the ball of radius rho, or None."""
    radius = [iv.mpf(rho) * s for s in score_scale] if rho > 0 else None
    n = len(u)
    H = np.full((n, n), ZERO, dtype=object)
    for pairs, counts, _ in windows:
        masses = _masses(u, pairs, counts, radius)
        low = [max(_lower(x), ZERO) for x in masses]
        for s in range(len(pairs)):
            for t in range(s + 1, len(pairs)):
                w = floor_dyadic(low[s] * low[t])
                if w <= 0:
                    continue
                ps, pt = pairs[s], pairs[t]
                H[ps, ps] += w
                H[pt, pt] += w
                H[ps, pt] -= w
                H[pt, ps] -= w
    K_lo = J.T @ H @ J
    K_f = np.array([[float(x) for x in row] for row in K_lo])
    return _certified_min_eig(K_lo, Gamma, K_f, Gamma_f)


def _certified_min_eig(A, B, A_f, B_f) -> Fraction | None:
    """A rational mu > 0 with A - mu B positive definite (exact LDL^T), or None."""
    from scipy.linalg import eigh

    try:
        low = float(eigh(A_f, B_f, eigvals_only=True)[0])
    except np.linalg.LinAlgError:
        return None
    if not low > 0:
        return None
    mu = floor_dyadic(Fraction(low * (1 - 1e-6)), bits=30)
    for _ in range(12):
        if positive_definite(A - mu * B)[0]:
            return mu
        mu = mu / 2
    return None
