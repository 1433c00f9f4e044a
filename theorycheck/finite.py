"""The cyclic subspace S_fin and the finite component W^fin (THEORY.md §4).

    S_fin = span{ (e_a - e_b) e_k^T : a, b in one SCC of G^(k) },
    Lbar(W) = (1/n) sum_{i in I_cyc} -log( sum_{t in O_i, tau_t = y_i} softmax(Xbar_i W xbar_i)_t ),
    W^fin = argmin_{W in S_fin} Lbar(W).

Coordinates.  For orthonormal E the coordinates of Pi W are the block-centred pair
scores u_(a,k) = e_a^T W e_k - mean_{b in C} e_b^T W e_k over the cyclic pairs; they are
isometric (||Pi W||_F = ||u||).  For general E an orthonormal basis of S_fin is built
from the Gram matrix of the generators (member - root of each SCC), rank tolerance 1e-10.
The reduced loss is strictly convex on S_fin (§4.4), solved by trust-region Newton-Krylov
with exact Hessian-vector products to a gradient norm below 1e-12.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from theorycheck.corpus.types import Corpus, is_orthonormal
from theorycheck.graphs import TokenPriorityGraphs, scc_generators
from theorycheck.model import ScoreMap, WindowStats, evaluate, hessp, window_stats
from theorycheck.optim import newton_cg

RANK_TOL = 1e-10
GRADIENT_TOL = 1e-12


class CyclicSubspace:
    """S_fin with isometric coordinates (see module docstring)."""

    def __init__(self, E: np.ndarray, graphs: TokenPriorityGraphs):
        self.E = E
        self.graphs = graphs
        self.pairs = np.flatnonzero(graphs.pair_cyclic)
        self.block = graphs.scc[self.pairs]
        _, self.block_index = np.unique(self.block, return_inverse=True)
        self.n_blocks = int(self.block_index.max()) + 1 if self.pairs.size else 0
        self.score_map = ScoreMap(E, graphs.pair_token[self.pairs], graphs.pair_query[self.pairs])
        self.orthonormal = is_orthonormal(E)
        if not self.orthonormal:
            self._build_general_frame()

    # -- general embeddings ---------------------------------------------------
    def _build_general_frame(self) -> None:
        g = self.graphs
        member, root = scc_generators(g)
        self.gen_a, self.gen_r, self.gen_k = g.pair_token[member], g.pair_token[root], g.pair_query[member]
        self.gen_pair_a, self.gen_pair_r = member, root
        G = self.E @ self.E.T
        diff_gram = G[np.ix_(self.gen_a, self.gen_a)] - G[np.ix_(self.gen_a, self.gen_r)] \
            - G[np.ix_(self.gen_r, self.gen_a)] + G[np.ix_(self.gen_r, self.gen_r)]
        gram = diff_gram * G[np.ix_(self.gen_k, self.gen_k)]
        if gram.size:
            lam, V = np.linalg.eigh(gram)
            keep = lam > RANK_TOL * max(lam.max(), 1.0)
            self.frame = V[:, keep] / np.sqrt(lam[keep])
        else:
            self.frame = np.zeros((0, 0))
        # J0[p, j] = <e_a e_k^T, B_j> for cyclic pairs p
        ta, tk = g.pair_token[self.pairs], g.pair_query[self.pairs]
        J0 = (G[np.ix_(ta, self.gen_a)] - G[np.ix_(ta, self.gen_r)]) * G[np.ix_(tk, self.gen_k)]
        self.jacobian = J0 @ self.frame

    @property
    def dim(self) -> int:
        if self.orthonormal:
            return int(self.pairs.size - self.n_blocks)
        return int(self.frame.shape[1])

    def center(self, u: np.ndarray) -> np.ndarray:
        sums = np.bincount(self.block_index, u, minlength=self.n_blocks)
        sizes = np.bincount(self.block_index, minlength=self.n_blocks)
        return u - (sums / np.maximum(sizes, 1))[self.block_index]

    def coords(self, W: np.ndarray) -> np.ndarray:
        """Isometric coordinates of Pi_{S_fin} W."""
        if self.pairs.size == 0:
            return np.zeros(0)
        m = self.score_map.scores(W)
        if self.orthonormal:
            return self.center(m)
        pos = np.searchsorted(self.pairs, self.gen_pair_a), np.searchsorted(self.pairs, self.gen_pair_r)
        inner = m[pos[0]] - m[pos[1]]  # <W, B_j>
        return self.frame.T @ inner

    def matrix(self, c: np.ndarray) -> np.ndarray:
        """The d×d matrix with coordinates c."""
        d = self.E.shape[1]
        if self.pairs.size == 0:
            return np.zeros((d, d))
        if self.orthonormal:
            return self.score_map.adjoint(c)
        beta = self.frame @ c
        return (self.E[self.gen_a] - self.E[self.gen_r]).T @ (beta[:, None] * self.E[self.gen_k])

    def scores(self, c: np.ndarray) -> np.ndarray:
        """Pair scores u_p = e_a^T W e_k on the cyclic pairs for W with coordinates c."""
        return c if self.orthonormal else self.jacobian @ c

    def scores_adjoint(self, g: np.ndarray) -> np.ndarray:
        return g if self.orthonormal else self.jacobian.T @ g

    def project(self, W: np.ndarray) -> np.ndarray:
        return self.matrix(self.coords(W))


@dataclass(frozen=True)
class FiniteSolution:
    W: np.ndarray
    coords: np.ndarray
    status: str  # "optimal", "trivial (S_fin = {0})", "not_attained", "not converged"
    loss: float  # Lbar(W^fin) = inf L (the infimum of the full loss, §5.3)
    gradient_norm: float  # ||projected gradient of Lbar|| at W^fin
    moment_residual: float  # max over (k, C, a) of |sum_i (pi_i(a) - 1[a = y_i])| (§4.4)
    dim: int
    iterations: int
    solve_seconds: float
    n_cyclic_windows: int
    details: dict = field(default_factory=dict)


def reduced_stats(corpus: Corpus, graphs: TokenPriorityGraphs, subspace: CyclicSubspace,
                  full: WindowStats | None = None) -> tuple[WindowStats, np.ndarray]:
    """Windows of I_cyc restricted to O_i (§4.2), over the cyclic pair index; and the I_cyc mask."""
    full = full or window_stats(corpus, graphs)
    in_O = graphs.label_scc_entries(corpus)
    rows = full.rows()
    others = np.bincount(rows, weights=in_O.astype(float), minlength=corpus.n)
    window_mask = others >= 2  # O_i holds a token other than the label
    pair_map = np.full(graphs.n_pairs, -1)
    pair_map[subspace.pairs] = np.arange(subspace.pairs.size)
    return full.restrict(in_O, window_mask, pair_map, subspace.pairs.size), window_mask


def solve_finite(corpus: Corpus, graphs: TokenPriorityGraphs, subspace: CyclicSubspace | None = None,
                 full: WindowStats | None = None) -> FiniteSolution:
    t0 = time.perf_counter()
    subspace = subspace or CyclicSubspace(corpus.E, graphs)
    d = corpus.d
    if subspace.dim == 0:
        return FiniteSolution(np.zeros((d, d)), np.zeros(0), "trivial (S_fin = {0})", 0.0, 0.0, 0.0, 0, 0,
                              time.perf_counter() - t0, 0)
    stats, cyc = reduced_stats(corpus, graphs, subspace, full)
    n_coords = subspace.pairs.size if subspace.orthonormal else subspace.dim
    cache: dict = {}

    project = subspace.center if subspace.orthonormal else None

    def value_grad(c):
        ev = evaluate(subspace.scores(c), stats)
        cache["prob"], cache["key"] = ev.entry_prob, c.tobytes()
        g = subspace.scores_adjoint(ev.grad)
        return ev.loss, (project(g) if project else g)

    def refresh(c):
        if cache.get("key") != c.tobytes():
            value_grad(c)

    def hvp(c, v):
        refresh(c)
        h = subspace.scores_adjoint(hessp(cache["prob"], stats, subspace.scores(v)))
        return project(h) if project else h

    def diag(c):  # Jacobi preconditioner: sum_i w_i pi(1 - pi) per cyclic pair
        refresh(c)
        p = cache["prob"]
        return np.bincount(stats.entry_pair, stats.weight[stats.rows()] * p * (1 - p), minlength=stats.n_pairs)

    blocks = None
    if subspace.orthonormal:  # the problem splits per (query, SCC) block
        window_block = subspace.block_index[stats.entry_pair[stats.label_entry]]

        def block_values(c):
            ev = evaluate(c, stats, grad=False)
            return np.bincount(window_block, stats.weight * ev.window_loss, minlength=subspace.n_blocks)

        blocks = (subspace.block_index, block_values)
    # the loss is invariant to per-block shifts (orthonormal case): iterate on zero-sum blocks
    result = newton_cg(value_grad, hvp, np.zeros(n_coords), gtol=GRADIENT_TOL,
                       diag=diag if subspace.orthonormal else None, project=project, blocks=blocks)
    c = result.x
    if subspace.orthonormal:
        c = subspace.center(c)
    final = evaluate(subspace.scores(c), stats)
    projected = subspace.scores_adjoint(final.grad)
    if subspace.orthonormal:
        projected = subspace.center(projected)
    grad_norm = float(np.linalg.norm(projected))
    n = corpus.n
    moment = float(np.abs(final.grad).max() * n) if subspace.orthonormal else float(np.abs(projected).max() * n)
    if result.diverging:
        status = "not_attained"
    elif grad_norm <= 1e-9:
        status = "optimal"
    else:
        status = f"not converged (gradient norm {grad_norm:.1e})"
    return FiniteSolution(
        W=subspace.matrix(c), coords=c, status=status, loss=final.loss, gradient_norm=grad_norm,
        moment_residual=moment, dim=subspace.dim, iterations=result.iterations,
        solve_seconds=time.perf_counter() - t0, n_cyclic_windows=int(cyc.sum()),
    )


def solve_finite_cvxpy(corpus: Corpus, graphs: TokenPriorityGraphs, subspace: CyclicSubspace | None = None) -> np.ndarray:
    """Reference W^fin through cvxpy's exponential cone (small problems only)."""
    import cvxpy as cp

    subspace = subspace or CyclicSubspace(corpus.E, graphs)
    if subspace.dim == 0:
        return np.zeros((corpus.d, corpus.d))
    stats, _ = reduced_stats(corpus, graphs, subspace)
    n_coords = subspace.pairs.size if subspace.orthonormal else subspace.dim
    c = cp.Variable(n_coords)
    J = np.eye(n_coords) if subspace.orthonormal else subspace.jacobian
    u = J @ c
    terms = []
    for i in range(stats.n_windows):
        lo, hi = stats.indptr[i], stats.indptr[i + 1]
        idx = stats.entry_pair[lo:hi]
        logc = stats.entry_logc[lo:hi]
        lab = stats.label_entry[i]
        terms.append(stats.weight[i] * (cp.log_sum_exp(u[idx] + logc) - u[stats.entry_pair[lab]] - stats.entry_logc[lab]))
    constraints = []
    if subspace.orthonormal:
        for b in range(subspace.n_blocks):
            constraints.append(cp.sum(c[np.flatnonzero(subspace.block_index == b)]) == 0)
    problem = cp.Problem(cp.Minimize(cp.sum(terms)), constraints)
    problem.solve(solver="CLARABEL")
    if problem.status != "optimal":
        raise RuntimeError(f"cvxpy reference for W^fin ended with status {problem.status}")
    return subspace.matrix(np.asarray(c.value))
