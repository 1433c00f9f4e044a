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
B = {c : ||W(c) - W(c*)||_F <= rho} the Hessian is bounded below by the Laplacian with
weights p_s p_t, p_s <= min_B pi_s, which equals P diag(p) - p p^T (P = sum p).  The
lower bounds p_s come from mpmath interval arithmetic (113 bits) over the box of scores
the ball allows, |u_p - u_p*| <= ||e_a|| ||e_k|| rho (for one-hot E every difference
u_t - u_s moves by at most sqrt(2) rho), and are rounded down to multiples of 2^-48.  A
rigorous test (`exact.positive_definite_fast`: exact congruence by a float inverse
Cholesky factor, then Gershgorin) proves J^T H_lo J - mu Gamma positive definite.

The gradient g = ||grad f(c*)||_{Gamma^-1} is enclosed with interval arithmetic (through
a certified lower bound on lambda_min(Gamma)).  Then
(proofs/obligation_strong_convexity_radius.py): if 2 g / mu < rho, f has a unique
minimiser in B and ||W^fin - W(c*)||_F <= g / mu.  Proof: on the sphere of radius
r = rho, f(c) >= f(c*) - g r + mu r^2 / 2 > f(c*), so the minimum over B is interior,
hence global (convexity); at it grad f = 0 and strong monotonicity on B gives
mu r^2 <= g r.  rho is found by the fixed-point search rho <- 2.2 g / mu(rho).  The
reported radius adds an upper bound on ||W - W(c*)||_F, the distance from the numeric
matrix to the centre (exact; for one-hot E exact on the support of W(c*) and a rounded-up
float64 sum of squares elsewhere).

One-hot E: no window and no generator spans two (query, SCC) blocks and Gamma is block
diagonal, so the problem splits exactly; each block gets its own (g_b, mu_b, rho_b) and
the radius is sqrt(sum_b (g_b / mu_b)^2) plus the centre distance.
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
    integer_matrix,
    matmul,
    positive_definite_fast,
    positive_definite_fast_int,
    sqrt_upper,
    to_fractions,
)

MAX_DIM = 120  # dim S_fin (one-hot E: of the largest (query, SCC) block)
MAX_ENTRIES = 200_000  # entries of the reduced windows
PRECISION_BITS = 113
ATTEMPTS = 12
MAX_SCORE_MOVE = 20.0  # give up on balls that move scores by more than this


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


def _upper(x) -> Fraction:
    return Fraction(*libmp.to_rational(x._mpi_[1]))


def _window_groups(stats, window_block: np.ndarray | None = None) -> dict:
    """Identical reduced windows merged: {(pairs, counts, label position, block): multiplicity}."""
    counts = np.rint(np.exp(stats.entry_logc)).astype(np.int64)
    groups: dict = {}
    for i in range(stats.n_windows):
        lo, hi = int(stats.indptr[i]), int(stats.indptr[i + 1])
        key = (tuple(stats.entry_pair[lo:hi].tolist()), tuple(counts[lo:hi].tolist()), int(stats.label_entry[i]) - lo,
               int(window_block[i]) if window_block is not None else 0)
        groups[key] = groups.get(key, 0) + 1
    return groups


WEIGHT_BITS = 48  # lower bounds of attention masses are rounded down to multiples of 2^-48


def _floor_scaled(x, bits: int = WEIGHT_BITS) -> int:
    """floor(2^bits * lower end of the interval x), clipped at 0 (from mantissa and exponent)."""
    sign, man, exp, _ = x._mpi_[0]
    if sign or not man:  # negative, zero or -inf
        return 0
    shift = exp + bits
    return man << shift if shift >= 0 else man >> -shift


def _masses(a: list, factors) -> list:
    """Interval attention masses of one window, a_t = c_t exp(u_t): pi_s = a_s / sum_t a_t.

    ``factors`` bounds the masses over a box of scores.  Either a per-entry pair of lists
    (exp(r_t), exp(-r_t)) when score t moves by at most r_t:
        pi_s >= a_s e^{-r_s} / (a_s e^{-r_s} + sum_{t != s} a_t e^{r_t});
    or one interval F = exp(D) when every difference u_t - u_s moves by at most D:
        pi_s >= a_s / (a_s + F sum_{t != s} a_t).
    """
    total = sum(a[1:], a[0])
    if factors is None:
        return [x / total for x in a]
    if not isinstance(factors, tuple):
        return [x / (x + factors * (total - x)) for x in a]
    up, down = factors
    high = [x * f for x, f in zip(a, up, strict=True)]
    total_high = sum(high[1:], high[0])
    out = []
    for x, h, f in zip(a, high, down, strict=True):
        low = x * f
        out.append(low / (low + (total_high - h)))
    return out


@dataclass
class _Block:
    """One independent piece of the reduced problem: its cyclic pairs, coordinates and windows."""

    pairs: list[int]  # indices into subspace.pairs
    J: np.ndarray  # exact, len(pairs) x m: scores u = J c
    Gamma: np.ndarray  # exact metric, ||W(c)||_F^2 = c^T Gamma c
    centre: np.ndarray  # exact coordinates of the centre
    windows: list  # (local pairs, counts, label position, multiplicity)
    score_scale: list  # iv upper bounds of ||e_a|| ||e_k|| per local pair
    gap_scale: float | None = None  # bound on ||(e_t - e_s) e_k^T||_F for pairs of a window, if common

    def __post_init__(self):
        self.J_scaled = integer_matrix(self.J)  # (integers, denominator): fast exact products
        self.Gamma_scaled = integer_matrix(self.Gamma)


def certify_finite(corpus: Corpus, graphs: TokenPriorityGraphs, W: np.ndarray,
                   subspace: CyclicSubspace | None = None, max_dim: int = MAX_DIM,
                   max_entries: int = MAX_ENTRIES) -> FiniteBound:
    """Certified radius around the numeric W^fin ``W`` (see the module docstring).

    With one-hot embeddings the reduced problem splits exactly into one problem per
    (query, cyclic SCC) block (no window and no generator spans two blocks, and the metric
    is block diagonal); each block is certified on its own and the radii combine as
    sqrt(sum_b r_b^2).  ``max_dim`` limits the largest block (the whole S_fin otherwise).
    """
    t0 = time.perf_counter()
    subspace = subspace or CyclicSubspace(corpus.E, graphs)
    if subspace.dim == 0:
        norm = float(np.linalg.norm(W))
        return FiniteBound("trivial", radius=norm, gradient_bound=0.0, centre_distance=norm, dim=0,
                           message="S_fin = {0}, so W^fin = 0 exactly", seconds=time.perf_counter() - t0)
    stats, _ = reduced_stats(corpus, graphs, subspace)
    if stats.n_windows and not np.all(stats.weight == stats.weight[0]):
        # the bound counts identical windows itself and assumes the ERM weights 1/n
        return FiniteBound("not certified", dim=subspace.dim, message="window weights are not uniform",
                           seconds=time.perf_counter() - t0)
    n_entries = int(stats.entry_pair.size)
    one_hot = corpus.one_hot
    largest = int(np.bincount(subspace.block_index).max()) - 1 if one_hot else subspace.dim
    if largest > max_dim or n_entries > max_entries:
        what = "largest (query, SCC) block" if one_hot else "dim S_fin"
        return FiniteBound("too large", dim=subspace.dim,
                           message=f"too large to certify: {what} = {largest} (limit {max_dim}), {n_entries} reduced entries "
                                   f"(limit {max_entries})", seconds=time.perf_counter() - t0)
    old_prec = iv.prec
    iv.prec = PRECISION_BITS
    try:
        result = _certify(corpus, graphs, W, subspace, stats, one_hot)
    finally:
        iv.prec = old_prec
    return FiniteBound(**{**result, "dim": subspace.dim, "seconds": time.perf_counter() - t0})


def _blocks(corpus, graphs, W, subspace, stats, one_hot) -> tuple[list[_Block], np.ndarray | None, str]:
    """The exact pieces of the problem (one per block for one-hot E, else one), the exact
    generator coefficients of the centre (P c*, in scc_generators order), and an error."""
    E = corpus.E
    member, root = scc_generators(graphs)
    ga, gr, gk = graphs.pair_token[member], graphs.pair_token[root], graphs.pair_query[member]
    M = W if one_hot else E @ W @ E.T
    b = M[ga, gk] - M[gr, gk]  # <W, B_j>
    local_of_pair = {int(p): i for i, p in enumerate(subspace.pairs.tolist())}
    gen_member = np.array([local_of_pair[int(p)] for p in member], dtype=np.int64)
    gen_root = np.array([local_of_pair[int(p)] for p in root], dtype=np.int64)
    window_block = subspace.block_index[stats.entry_pair[stats.label_entry]]
    groups = _window_groups(stats, window_block if one_hot else None)
    ta, tk = graphs.pair_token[subspace.pairs], graphs.pair_query[subspace.pairs]
    if one_hot:
        pieces = [(np.flatnonzero(subspace.block_index == blk), np.flatnonzero(subspace.block_index[gen_member] == blk))
                  for blk in range(subspace.n_blocks)]
        G = None
    else:
        pieces = [(np.arange(subspace.pairs.size), np.arange(member.size))]
        G = exact_gram(E)
    blocks = []
    coefficients = np.full(member.size, ZERO, dtype=object)
    for blk, (pair_idx, gen_idx) in enumerate(pieces):
        position = {int(p): i for i, p in enumerate(pair_idx.tolist())}
        if one_hot:  # J[p, j] = 1[p = member_j] - 1[p = root_j]; Gamma = I + 1 1^T on the block
            J = np.full((pair_idx.size, gen_idx.size), ZERO, dtype=object)
            for col, j in enumerate(gen_idx.tolist()):
                J[position[int(gen_member[j])], col] += 1
                J[position[int(gen_root[j])], col] -= 1
            Gamma = matmul(J.T, J)
        else:
            pa, pk = ta[pair_idx], tk[pair_idx]
            ja, jr, jk = ga[gen_idx], gr[gen_idx], gk[gen_idx]
            J = (G[np.ix_(pa, ja)] - G[np.ix_(pa, jr)]) * G[np.ix_(pk, jk)]
            Gamma = (G[np.ix_(ja, ja)] - G[np.ix_(ja, jr)] - G[np.ix_(jr, ja)] + G[np.ix_(jr, jr)]) * G[np.ix_(jk, jk)]
        P = None
        if not positive_definite_fast(Gamma):
            if one_hot or not hasattr(subspace, "frame"):
                return [], None, "the generators of S_fin are dependent"
            P = to_fractions(subspace.frame)
            J, Gamma = matmul(J, P), matmul(matmul(P.T, Gamma), P)
            if not positive_definite_fast(Gamma):
                return [], None, "no exact basis of S_fin (the frame's Gram matrix is not definite)"
        Gamma_f = np.array([[float(x) for x in row] for row in Gamma])
        rhs = b[gen_idx] if P is None else np.array([[float(x) for x in row] for row in P]).T @ b[gen_idx]
        centre = to_fractions(np.linalg.solve(Gamma_f, rhs))
        coefficients[gen_idx] = matmul(P, centre) if P is not None else centre
        windows = [(tuple(position[p] for p in pairs), counts, label, mult)
                   for (pairs, counts, label, wb), mult in groups.items() if not one_hot or wb == blk]
        if one_hot:  # every score moves by <= rho, every difference u_t - u_s by <= sqrt(2) rho
            scale = [iv.mpf(1)] * pair_idx.size
        else:
            scale = [_iv(Fraction(sqrt_upper(G[a, a] * G[k, k])))
                     for a, k in zip(ta[pair_idx], tk[pair_idx], strict=True)]
        blocks.append(_Block(pair_idx.tolist(), J, Gamma, centre, windows, scale,
                             math.sqrt(2) * (1 + 1e-15) if one_hot else None))
    return blocks, coefficients, ""


def _centre_distance(corpus, graphs, W, coefficients, one_hot) -> float:
    """An upper bound on ||W - W(c*)||_F, W(c*) = sum_j coef_j (e_a - e_r) e_k^T (exact where it matters)."""
    member, root = scc_generators(graphs)
    ga, gr, gk = graphs.pair_token[member], graphs.pair_token[root], graphs.pair_query[member]
    if not one_hot:
        E_exact = to_fractions(corpus.E)
        W_centre = matmul((E_exact[ga] - E_exact[gr]).T, coefficients[:, None] * E_exact[gk])
        diff = to_fractions(W) - W_centre
        return sqrt_upper(sum((x * x for x in diff.reshape(-1)), ZERO))
    centre: dict = {}
    for a, r, k, cf in zip(ga.tolist(), gr.tolist(), gk.tolist(), coefficients, strict=True):
        centre[(a, k)] = centre.get((a, k), ZERO) + cf
        centre[(r, k)] = centre.get((r, k), ZERO) - cf
    on = sum(((Fraction(float(W[a, k])) - v) ** 2 for (a, k), v in centre.items()), ZERO)
    mask = np.ones(W.shape, dtype=bool)
    if centre:
        rows, cols = zip(*centre.keys(), strict=True)
        mask[list(rows), list(cols)] = False
    # off the support W(c*) = 0: fsum of rounded squares, inflated to an upper bound
    outside = W[mask]
    off = math.fsum((outside ** 2).tolist()) * (1 + 2.0 ** -50) + np.count_nonzero(outside) * 5e-324
    return sqrt_upper(on + Fraction(off))


def _certify(corpus, graphs, W, subspace, stats, one_hot) -> dict:
    blocks, coefficients, error = _blocks(corpus, graphs, W, subspace, stats, one_hot)
    if error:
        return {"status": "not certified", "message": error}
    d0 = _centre_distance(corpus, graphs, W, coefficients, one_hot)
    total_r2, total_g2 = iv.mpf(0), iv.mpf(0)
    mu_min, rho_max = math.inf, 0.0
    for n_block, block in enumerate(blocks):
        outcome = _certify_block(block)
        if isinstance(outcome, str):
            where = f" (block {n_block} of {len(blocks)})" if len(blocks) > 1 else ""
            return {"status": "not certified", "centre_distance": d0, "message": outcome + where}
        g, mu, rho = outcome
        total_r2 += (iv.mpf(g) / _iv(mu)) ** 2
        total_g2 += iv.mpf(g) ** 2
        mu_min, rho_max = min(mu_min, math.nextafter(float(mu), 0.0)), max(rho_max, rho)
    radius = math.nextafter(float(_upper(iv.sqrt(total_r2) + iv.mpf(d0))), math.inf)
    g_all = math.nextafter(float(_upper(iv.sqrt(total_g2))), math.inf)
    pieces = f" over {len(blocks)} independent blocks" if len(blocks) > 1 else ""
    return {"status": "certified", "radius": radius, "gradient_bound": g_all, "convexity_bound": mu_min,
            "ball": rho_max, "centre_distance": d0,
            "message": f"unique minimiser within {radius:.2e} (Frobenius) of the numeric W^fin{pieces}"}


def _certify_block(block: _Block):
    """(g, mu, rho) for one block with 2 g / mu < rho, or a message saying what failed."""
    m = block.Gamma.shape[0]
    Gamma_f = _to_float(*block.Gamma_scaled)
    u = dict(enumerate(matmul(block.J, block.centre).tolist()))
    identity = np.zeros((m, m), dtype=object)
    identity[np.diag_indices(m)] = 1
    gamma_low = _certified_min_eig(block.Gamma_scaled, (identity, 1), np.eye(m))
    if gamma_low is None:
        return "could not certify lambda_min of the metric"
    exp_u = {p: iv.exp(_iv(x)) for p, x in u.items()}
    weights = [[iv.mpf(c) * exp_u[p] for p, c in zip(pairs, counts, strict=True)]
               for pairs, counts, _, _ in block.windows]
    grad_u = [iv.mpf(0)] * len(u)
    for (pairs, _, label, mult), a in zip(block.windows, weights, strict=True):
        for s, mass in enumerate(_masses(a, None)):
            grad_u[pairs[s]] = grad_u[pairs[s]] + mult * (mass - (1 if s == label else 0))
    grad_c = [iv.mpf(0)] * m
    for p in range(len(u)):
        for j in range(m):
            if block.J[p, j] != 0:
                grad_c[j] = grad_c[j] + _iv(block.J[p, j]) * grad_u[p]
    g2 = sum((_upper(abs(x)) ** 2 for x in grad_c), ZERO)  # >= ||grad||^2, exactly
    g = sqrt_upper(g2 / gamma_low)
    mu = _convexity(weights, block, Gamma_f, 0.0)
    if mu is None:
        return "strong convexity could not be certified at the centre"
    # fixed-point search: rho <- 2.2 g / mu(rho), where mu(rho) decreases as the ball grows
    rho = max(2.2 * g / float(mu), 1e-30)
    widest = max(float(_upper(x)) for x in block.score_scale)
    for _ in range(ATTEMPTS):
        if rho * widest > MAX_SCORE_MOVE:  # masses bounded below by ~exp(-2 rho): hopeless
            break
        mu = _convexity(weights, block, Gamma_f, rho)
        if mu is None:
            break
        if 2.0 * g / float(mu) < rho:
            return g, mu, rho
        rho = 2.2 * g / float(mu)
    return f"strong convexity could not be certified on a ball large enough for the gradient bound g = {g:.2e}"


def _convexity(weights: list, block: _Block, Gamma_f, rho: float) -> Fraction | None:
    """A mu > 0 with J^T H(u') J >= mu Gamma for all scores u' of the ball of radius rho, or None.

    Per window the Hessian is the Laplacian with weights pi_s pi_t >= p_s p_t, p_s a lower
    bound of pi_s over the ball; that Laplacian is P diag(p) - p p^T with P = sum p.
    """
    factors = None
    if rho > 0 and block.gap_scale is not None:
        common = iv.exp(iv.mpf(rho) * iv.mpf(block.gap_scale))
    elif rho > 0:
        radius = [iv.mpf(rho) * s for s in block.score_scale]
        factors = ([iv.exp(r) for r in radius], [iv.exp(-r) for r in radius])
    n = block.J.shape[0]
    H = np.zeros((n, n), dtype=object)
    for (pairs, _, _, mult), a in zip(block.windows, weights, strict=True):
        if rho > 0 and block.gap_scale is not None:
            local = common
        else:
            local = None if factors is None else ([factors[0][p] for p in pairs], [factors[1][p] for p in pairs])
        low = np.array([_floor_scaled(x) for x in _masses(a, local)], dtype=object)
        idx = np.array(pairs)
        H[np.ix_(idx, idx)] += mult * (np.diag(low * int(low.sum())) - np.outer(low, low))
    # K = J^T H J / (J_den^2 2^(2 WEIGHT_BITS)), kept as an integer matrix and its denominator
    J_int, J_den = block.J_scaled
    K_int = J_int.T @ H @ J_int
    K_den = J_den * J_den << (2 * WEIGHT_BITS)
    return _certified_min_eig((K_int, K_den), block.Gamma_scaled, Gamma_f)


def _to_float(M_int: np.ndarray, den: int) -> np.ndarray:
    return np.array([[int(x) / den for x in row] for row in M_int], dtype=np.float64)


def _certified_min_eig(A: tuple, B: tuple, B_f: np.ndarray) -> Fraction | None:
    """A rational mu > 0 with A - mu B positive definite, or None.

    A and B are (integer matrix, denominator) pairs; the test is on the integer matrix
    A_int q B_den - p A_den B_int for mu = p / q (same sign pattern, positive scale).
    """
    from scipy.linalg import eigh

    (A_int, A_den), (B_int, B_den) = A, B
    try:
        low = float(eigh(_to_float(A_int, A_den), B_f, eigvals_only=True)[0])
    except np.linalg.LinAlgError:
        return None
    if not low > 0:
        return None
    mu = floor_dyadic(Fraction(low * (1 - 1e-6)), bits=30)
    for _ in range(12):
        if positive_definite_fast_int(A_int * (mu.denominator * B_den) - B_int * (mu.numerator * A_den)):
            return mu
        mu = mu / 2
    return None
