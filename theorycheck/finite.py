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
from dataclasses import dataclass, field, replace

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


def solution_status(diverging: bool, grad_norm: float) -> str:
    """W^fin status: not attained (iterates diverge), optimal (projected gradient <= 1e-9), or not converged."""
    if diverging:
        return "not_attained"
    if grad_norm <= 1e-9:
        return "optimal"
    return f"not converged (gradient norm {grad_norm:.1e})"


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

    if subspace.orthonormal:
        return _solve_finite_blocks(corpus, stats, cyc, subspace, t0)
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
    status = solution_status(result.diverging, grad_norm)
    return FiniteSolution(
        W=subspace.matrix(c), coords=c, status=status, loss=final.loss, gradient_norm=grad_norm,
        moment_residual=moment, dim=subspace.dim, iterations=result.iterations,
        solve_seconds=time.perf_counter() - t0, n_cyclic_windows=int(cyc.sum()),
    )


def merge_duplicate_windows(stats: WindowStats) -> WindowStats:
    """Identical windows (same entries, counts and label) merged, weights summed.

    The reduced loss is a weighted sum over windows (§4.3), so this changes no value,
    gradient or Hessian.  Vectorised: windows are grouped by two random 64-bit
    fingerprints of their (pair, count) entries and label, and every group is then
    verified entry by entry against its first member (any mismatch: no merge).
    """
    n = stats.n_windows
    if n == 0:
        return stats
    rng = np.random.default_rng(20240312)
    rows = stats.rows()
    lengths = np.diff(stats.indptr)
    counts = np.rint(np.exp(stats.entry_logc)).astype(np.uint64)
    keys = []
    for _ in range(2):
        r_pair = rng.integers(1, 2**63, size=stats.n_pairs, dtype=np.uint64)
        r_label = rng.integers(1, 2**63, size=stats.n_pairs, dtype=np.uint64)
        with np.errstate(over="ignore"):
            per_entry = r_pair[stats.entry_pair] * (counts * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1))
            h = np.add.reduceat(per_entry, stats.indptr[:-1]) + r_label[stats.entry_pair[stats.label_entry]]
        keys.append(h)
    table = np.stack([keys[0], keys[1], lengths.astype(np.uint64)], axis=1)
    _, first, group = np.unique(table, axis=0, return_index=True, return_inverse=True)
    group = group.ravel()
    if first.size == n:
        return stats
    rep = first[group]
    offset = np.arange(stats.entry_pair.size) - stats.indptr[rows]
    rep_entry = stats.indptr[rep][rows] + offset
    same = (np.array_equal(stats.entry_pair, stats.entry_pair[rep_entry])
            and np.array_equal(stats.entry_logc, stats.entry_logc[rep_entry])
            and np.array_equal(stats.label_entry - stats.indptr[:-1], (stats.label_entry - stats.indptr[:-1])[rep]))
    if not same:
        return stats
    keep = np.zeros(n, dtype=bool)
    keep[first] = True
    order_of_kept = np.cumsum(keep) - 1
    weight = np.bincount(order_of_kept[rep], weights=stats.weight, minlength=int(keep.sum()))
    out = stats.restrict(np.ones(stats.entry_pair.size, dtype=bool), keep, np.arange(stats.n_pairs), stats.n_pairs)
    return replace(out, weight=weight)


def _solve_finite_blocks(corpus: Corpus, stats: WindowStats, cyc: np.ndarray, subspace: CyclicSubspace,
                         t0: float, gtol: float = GRADIENT_TOL, maxiter: int = 100) -> FiniteSolution:
    """W^fin for orthonormal E by Newton's method with exact dense Hessians per block.

    The reduced loss (§4.3) is a sum over (query k, cyclic SCC C) blocks, block b
    depending only on the block-centred scores u_(a,k), a in C.  Its Hessian is
    block-diagonal with blocks H_b = sum_{i in b} w_i (diag(pi_i) - pi_i pi_i^T)
    (assembled for all blocks at once as diag(P^T w) - P^T diag(w) P with P the sparse
    window × pair matrix of probabilities), singular only along the block's all-ones
    direction (the shift invariance): the Newton step solves (H_b + c 1 1^T) p = -g_b,
    which for a zero-sum g_b gives the zero-sum solution of H_b p = -g_b.  Blocks of equal
    size are solved in one batched LAPACK call.  Armijo backtracking per block (each
    block is its own problem), stop at ||grad|| <= gtol.  Identical reduced windows are
    merged first (:func:`merge_duplicate_windows`).
    """
    import scipy.sparse as sp

    stats = merge_duplicate_windows(stats)
    nb = subspace.n_blocks
    block = subspace.block_index
    n_coords = block.size
    sizes = np.bincount(block, minlength=nb)
    # coordinates ordered by (block size, block) so equal-size blocks are contiguous
    block_order = np.lexsort((np.arange(nb), sizes))
    block_rank = np.empty(nb, dtype=np.int64)
    block_rank[block_order] = np.arange(nb)
    perm = np.lexsort((np.arange(n_coords), block_rank[block]))  # coordinate order
    pos = np.empty(n_coords, dtype=np.int64)
    pos[perm] = np.arange(n_coords)
    start = np.zeros(nb, dtype=np.int64)
    start[block_order] = np.r_[0, np.cumsum(sizes[block_order])[:-1]]
    flat_start = np.zeros(nb, dtype=np.int64)
    flat_start[block_order] = np.r_[0, np.cumsum(sizes[block_order] ** 2)[:-1]]
    local = pos - start[block]  # index of each coordinate inside its block
    full_stats = stats
    full_window_block = block[stats.entry_pair[stats.label_entry]]
    work = {}

    def use(st):  # the windows evaluated each iteration: those of blocks not yet at tolerance
        work.update(stats=st, rows=st.rows(), window_block=block[st.entry_pair[st.label_entry]],
                    w_entry=st.weight[st.rows()])

    use(stats)
    groups = []  # (size, first block rank, count)
    sorted_sizes = sizes[block_order]
    edges = np.flatnonzero(np.r_[True, sorted_sizes[1:] != sorted_sizes[:-1], True])
    for lo, hi in zip(edges[:-1], edges[1:]):
        groups.append((int(sorted_sizes[lo]), int(lo), int(hi - lo)))
    flat_size = int((sizes.astype(np.int64) ** 2).sum())

    def block_loss(ev):
        return np.bincount(work["window_block"], work["stats"].weight * ev.window_loss, minlength=nb)

    def newton_step(prob, g, active):
        stats, rows, w_entry = work["stats"], work["rows"], work["w_entry"]
        P = sp.csr_matrix((prob, (rows, stats.entry_pair)), shape=(stats.n_windows, n_coords))
        Pw = sp.csr_matrix((prob * w_entry, (rows, stats.entry_pair)), shape=(stats.n_windows, n_coords))
        H = (Pw.T @ P).tocoo()
        diag = np.bincount(stats.entry_pair, prob * w_entry, minlength=n_coords)
        b = block[H.row]
        buf = -np.bincount(flat_start[b] + local[H.row] * sizes[b] + local[H.col], H.data, minlength=flat_size)
        buf[flat_start[block] + local * sizes[block] + local] += diag
        rhs = np.zeros(n_coords)
        rhs[pos] = -g
        step_sorted = np.zeros(n_coords)
        for size, first, count in groups:
            f0 = int(flat_start[block_order[first]])
            c0 = int(start[block_order[first]])
            Hs = buf[f0:f0 + count * size * size].reshape(count, size, size)
            todo = np.flatnonzero(active[block_order[first:first + count]])
            if todo.size == 0:
                continue
            Hs = Hs[todo]
            scale = np.maximum(np.trace(Hs, axis1=1, axis2=2) / size, 1e-300)
            Hs += (scale / size)[:, None, None]  # c 1 1^T
            Hs[:, np.arange(size), np.arange(size)] += 1e-12 * scale[:, None]  # tokens with pi ~ 0
            r = rhs[c0:c0 + count * size].reshape(count, size, 1)[todo]
            x = np.linalg.solve(Hs, r)
            step_sorted[c0:c0 + count * size].reshape(count, size)[todo] = x[:, :, 0]
        return step_sorted[pos]

    c = np.zeros(n_coords)
    ev = evaluate(c, stats)
    g = subspace.center(ev.grad)
    f_blocks = block_loss(ev)
    iterations = 0
    diverging = False
    trace: list[int] = []
    last_restriction = nb
    for _ in range(maxiter):
        gnorm = float(np.linalg.norm(g))
        if gnorm <= gtol:
            break
        iterations += 1
        # blocks already at tolerance keep their point (the total stays below gtol)
        active = np.bincount(block, g * g, minlength=nb) > (0.1 * gtol) ** 2 / nb
        if active.sum() < 0.5 * last_restriction:  # drop the windows of finished blocks
            last_restriction = int(active.sum())
            keep = active[full_window_block]
            use(full_stats.restrict(np.ones(full_stats.entry_pair.size, dtype=bool), keep,
                                    np.arange(full_stats.n_pairs), full_stats.n_pairs))
            ev = evaluate(c, work["stats"])
            f_blocks = np.where(active, block_loss(ev), f_blocks)
        p = subspace.center(newton_step(ev.entry_prob, g, active))
        trace.append(int(active.sum()))
        slope = np.bincount(block, g * p, minlength=nb)
        bad = (slope >= 0) & active  # not a descent direction for that block: gradient step instead
        if bad.any():
            p = np.where(bad[block], -g, p)
            slope = np.bincount(block, g * p, minlength=nb)
        t = np.ones(nb)
        pending = np.ones(nb, dtype=bool)
        for attempt in range(60):
            trial = c + t[block] * p
            ev_t = evaluate(trial, work["stats"], grad=attempt == 0)
            fb = block_loss(ev_t)
            ok = ~active | np.isfinite(fb) & (fb <= f_blocks + 1e-4 * t * slope + 1e-15 * np.maximum(1.0, np.abs(f_blocks)))
            pending &= ~ok
            if not pending.any():
                break
            t[pending] *= 0.5
        t[pending] = 0.0
        if pending.all():
            break
        c = c + t[block] * p
        ev = ev_t if attempt == 0 else evaluate(c, work["stats"])
        g = np.where(active[block], subspace.center(ev.grad), g)
        f_blocks = np.where(active, block_loss(ev), f_blocks)
        if np.linalg.norm(c) > 1e6:
            diverging = True
            break
    stats = full_stats
    final = evaluate(c, stats)
    g = subspace.center(final.grad)
    grad_norm = float(np.linalg.norm(g))
    moment = float(np.abs(final.grad).max() * corpus.n)
    status = solution_status(diverging, grad_norm)
    return FiniteSolution(
        W=subspace.matrix(c), coords=c, status=status, loss=final.loss, gradient_norm=grad_norm,
        moment_residual=moment, dim=subspace.dim, iterations=iterations,
        solve_seconds=time.perf_counter() - t0, n_cyclic_windows=int(cyc.sum()),
        details={"method": "block Newton (dense Hessian per (query, SCC) block)",
                 "windows_after_merge": stats.n_windows, "active_blocks_per_iteration": trace},
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
