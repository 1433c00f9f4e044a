"""The cyclic subspace S_fin and the finite component W^fin (THEORY.md §4).

    S_fin = span{ (e_a - e_b) e_k^T : a, b in one SCC of G^(k) },
    Lbar(W) = (1/n) sum_{i in I_cyc} -log( sum_{t in O_i, tau_t = y_i} softmax(Xbar_i W xbar_i)_t ),
    W^fin = argmin_{W in S_fin} Lbar(W).

Coordinates.  For orthonormal E the coordinates of Pi W are the block-centred pair
scores u_(a,k) = e_a^T W e_k - mean_{b in C} e_b^T W e_k over the cyclic pairs; they are
isometric (||Pi W||_F = ||u||).  For general E the coordinates whiten the Gram matrix of
the generators (member - root of each SCC): by its Cholesky factor where it is definite
(rank tolerance 1e-10), else by its eigenvectors.

The reduced loss depends on W only through the block-centred cyclic scores, and is strictly
convex on S_fin (§4.4).  Where W -> those scores is a bijection on S_fin (orthonormal E, or
independent generators, i.e. dim S_fin = sum (|C| - 1)), W^fin's scores are the one-hot
problem's, solved by a block Newton per (query, SCC) block to a gradient norm below 1e-12,
and mapped back through the generators (<B_j, W> = u_a - u_r).  Otherwise trust-region
Newton-Krylov in the coordinates, with exact Hessian-vector products.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from theorycheck.corpus.types import Corpus, embedding_scale, is_orthonormal
from theorycheck.errors import DEPENDENT_EMBEDDINGS_FIX, InputError
from theorycheck.graphs import TokenPriorityGraphs, scc_generators
from theorycheck.model import (
    ScoreMap,
    WindowStats,
    evaluate,
    hessp,
    merge_identical_windows,
    window_stats,
)
from theorycheck.optim import newton_cg, norm_without_blas
from theorycheck.runtime import single_threaded_blas

RANK_TOL = 1e-10
FRAME_LIMIT = 16_000  # generators of S_fin for general E: a dense n×n Gram (2 GiB) and its factorisation
EIGEN_FRAME_LIMIT = 6_000  # dependent generators: eigh (11,521: 172 s, 6.4 GiB)
GRAM_ROWS = 1024  # rows of the generators' Gram built at a time
INVERSE_LIMIT = 12_000  # generators up to which repeated projections keep Gamma^-1 (one more n×n array, 1.1 GiB)
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
        self.block_sizes = np.bincount(self.block_index, minlength=self.n_blocks)
        self.score_map = ScoreMap(E, graphs.pair_token[self.pairs], graphs.pair_query[self.pairs])
        self.orthonormal = is_orthonormal(E)
        self.gram_inverse = None  # upper triangle of Gamma^-1, once prepare_repeated_projections asks for it
        if not self.orthonormal:
            self._build_general_frame()

    # -- general embeddings ---------------------------------------------------
    def _build_general_frame(self) -> None:
        """Coordinates x of S_fin with F^T Gamma F = I (F: the frame; Gamma: the Gram of the
        generators B_j = (x_a - x_r) x_k^T, member a and root r of a cyclic SCC of G^(k)):

            Gamma[i, j] = ((x_a_i - x_r_i) . (x_a_j - x_r_j)) (x_k_i . x_k_j).

        Gamma positive definite with condition number below 1 / RANK_TOL (the generators
        independent, as for E with independent rows): F = U^-1 from its Cholesky factor
        Gamma = U^T U, applied by triangular solves and never formed (``scores_bijective``);
        otherwise F = V diag(lambda)^-1/2 over the eigenvalues above RANK_TOL lambda_max.
        Gamma is refused above FRAME_LIMIT generators (a dense n×n matrix and factorisation)."""
        from scipy.linalg.lapack import dpocon, dpotrf

        g = self.graphs
        member, root = scc_generators(g)
        n = member.size
        if n > FRAME_LIMIT:
            raise InputError(
                f"these embeddings are not orthonormal, and S_fin's basis for them comes from the dense Gram "
                f"matrix of its {n:,} generators ({n:,}², {8 * n * n / 2**30:.1f} GiB, and a factorisation of "
                f"~{n**3 / 3e12:.1f} TFlop); the limit is {FRAME_LIMIT:,}. Use one-hot or orthonormal "
                "embeddings (omit --embeddings), or a smaller --vocab or --window")
        self.gen_a, self.gen_r, self.gen_k = g.pair_token[member], g.pair_token[root], g.pair_query[member]
        # positions of each generator's member and root among the cyclic pairs
        self.gen_pos_a, self.gen_pos_r = np.searchsorted(self.pairs, member), np.searchsorted(self.pairs, root)
        self.cholesky = None  # U (Fortran order) with Gamma = U^T U: L = U^T
        self.frame_eigen = None
        if n == 0:
            self.frame_eigen = np.zeros((0, 0))
            return
        gram, norm_1 = self._generator_gram()
        # gram.T is Fortran-ordered (gram is symmetric): LAPACK factors it in place
        factor, info = dpotrf(gram.T, lower=0, clean=1, overwrite_a=1)
        # LAPACK's estimate of 1 / cond_1 (O(n^2)); cond_2 <= cond_1 for a symmetric matrix, so
        # this is the eigenvalue path's cut lambda_min > RANK_TOL lambda_max or stricter
        if info == 0 and dpocon(factor, norm_1, "U")[0] > RANK_TOL:
            self.cholesky = factor
            return
        if n > EIGEN_FRAME_LIMIT:
            raise InputError(
                f"these embeddings make S_fin's {n:,} generators dependent, to the relative tolerance "
                f"{RANK_TOL:g} (the embeddings are not linearly independent, or nearly so), and its basis then needs an eigendecomposition of their {n:,}² Gram; the limit "
                f"is {EIGEN_FRAME_LIMIT:,} (11,521 took 172 s and 6.4 GiB). {DEPENDENT_EMBEDDINGS_FIX}")
        lam, V = np.linalg.eigh(self._generator_gram()[0])
        keep = lam > RANK_TOL * lam.max()  # relative: the Gram scales as c^4 with the embeddings
        self.frame_eigen = V[:, keep] / np.sqrt(lam[keep])

    def _generator_gram(self) -> tuple[np.ndarray, float]:
        """(Gamma, ||Gamma||_1): Gamma = (D D^T) * (Q Q^T), D = rows x_a - x_r, Q = rows x_k,
        in row blocks (one n×n array at the peak)."""
        D, Q = self.E[self.gen_a] - self.E[self.gen_r], self.E[self.gen_k]
        n = D.shape[0]
        gram = np.empty((n, n))
        norm_1 = 0.0
        for lo in range(0, n, GRAM_ROWS):
            hi = min(n, lo + GRAM_ROWS)
            np.matmul(D[lo:hi], D.T, out=gram[lo:hi])
            gram[lo:hi] *= Q[lo:hi] @ Q.T
            norm_1 = max(norm_1, float(np.abs(gram[lo:hi]).sum(axis=1).max()))
        return gram, norm_1

    @property
    def scores_bijective(self) -> bool:
        """Pi_fin W <-> its block-centred cyclic scores is a bijection (orthonormal E, or
        independent generators: dim S_fin = sum (|C| - 1)); then W^fin's scores are those of the
        one-hot problem on the same windows (THEORY.md §4.4: the reduced loss depends on W only
        through them)."""
        return self.orthonormal or self.cholesky is not None

    @property
    def frame(self) -> np.ndarray:
        """F explicitly (n × dim), for the exact certificate's fallback."""
        if self.orthonormal:
            raise AttributeError("orthonormal embeddings: the coordinates are the centred scores")
        if self.cholesky is None:
            return self.frame_eigen
        return _upper_solve(self.cholesky, np.eye(self.cholesky.shape[0]))  # F = L^-T = U^-1

    def _frame_times(self, c: np.ndarray) -> np.ndarray:
        """beta = F c (generator coefficients): U^-1 c."""
        if self.cholesky is None:
            return self.frame_eigen @ c
        return _upper_solve(self.cholesky, c)

    def _frame_transpose_times(self, inner: np.ndarray) -> np.ndarray:
        """F^T v (coordinates from the inner products <B_j, W>): U^-T v."""
        if self.cholesky is None:
            return self.frame_eigen.T @ inner
        return _upper_solve(self.cholesky, inner, transpose=True)

    def _combination(self, beta: np.ndarray) -> np.ndarray:
        """sum_j beta_j B_j = E^T N E with N = sum_j beta_j (e_a_j - e_r_j) e_k_j^T (K × K):
        d^2 K products instead of d^2 per generator."""
        K = self.E.shape[0]
        N = np.zeros(K * K)
        np.add.at(N, self.gen_a * K + self.gen_k, beta)
        np.subtract.at(N, self.gen_r * K + self.gen_k, beta)
        return self.E.T @ (N.reshape(K, K) @ self.E)

    def coords_of_scores(self, u: np.ndarray) -> np.ndarray:
        """The coordinates of the point of S_fin whose cyclic scores are u up to a constant per
        block (``scores_bijective``): u itself centred, or F^T (u_a - u_r),
        since <B_j, W> = u_(a_j, k_j) - u_(r_j, k_j)."""
        if self.orthonormal:
            return self.center(u)
        if self.cholesky is None:
            raise ValueError("the cyclic scores do not determine a point of S_fin for dependent generators")
        return self._frame_transpose_times(u[self.gen_pos_a] - u[self.gen_pos_r])

    @property
    def dim(self) -> int:
        if self.orthonormal:
            return int(self.pairs.size - self.n_blocks)
        return int(self.gen_a.size if self.cholesky is not None else self.frame_eigen.shape[1])

    def center(self, u: np.ndarray) -> np.ndarray:
        """u minus its mean over each block (the training loop calls it twice a step)."""
        return u - self.block_mean(u)

    def block_mean(self, u: np.ndarray) -> np.ndarray:
        """The mean of u over each coordinate's block, per coordinate."""
        return (np.bincount(self.block_index, u, minlength=self.n_blocks) / self.block_sizes)[self.block_index]

    def coords(self, W: np.ndarray) -> np.ndarray:
        """Isometric coordinates of Pi_{S_fin} W."""
        if self.pairs.size == 0:
            return np.zeros(0)
        if self.orthonormal:
            return self.center(self.score_map.scores(W))
        return self._frame_transpose_times(self._generator_inner(W))

    def _generator_inner(self, W: np.ndarray) -> np.ndarray:
        """<B_j, W> = u_(a_j, k_j) - u_(r_j, k_j) (u: the cyclic scores of W)."""
        m = self.score_map.scores(W)
        return m[self.gen_pos_a] - m[self.gen_pos_r]

    def matrix(self, c: np.ndarray) -> np.ndarray:
        """The d×d matrix with coordinates c."""
        d = self.E.shape[1]
        if self.pairs.size == 0:
            return np.zeros((d, d))
        if self.orthonormal:
            return self.score_map.adjoint(c)
        return self._combination(self._frame_times(c))

    def scores(self, c: np.ndarray) -> np.ndarray:
        """Pair scores u_p = e_a^T W e_k on the cyclic pairs for W with coordinates c."""
        return c if self.orthonormal else self.score_map.scores(self.matrix(c))

    def scores_adjoint(self, g: np.ndarray) -> np.ndarray:
        """The adjoint of :meth:`scores`: F^T (<B_j, sum_p g_p x_a_p x_k_p^T>)_j."""
        return g if self.orthonormal else self._frame_transpose_times(self._generator_inner(self.score_map.adjoint(g)))

    def project(self, W: np.ndarray) -> np.ndarray:
        """Pi_{S_fin} W = sum_j (Gamma^-1 b)_j B_j, b_j = <B_j, W> (= matrix(coords(W)) = F F^T b)."""
        if self.gram_inverse is not None:
            from scipy.linalg.blas import dsymv

            return self._combination(dsymv(1.0, self.gram_inverse, self._generator_inner(W), lower=0))
        return self.matrix(self.coords(W))

    def prepare_repeated_projections(self, calls: int) -> None:
        """For a caller about to call :meth:`project` ``calls`` times (split-ngd: twice a step):
        keep Gamma^-1 (LAPACK potri from the Cholesky factor), so that a projection reads the
        n×n triangle once (a symmetric mat-vec) instead of twice (U^-T, then U^-1; the
        projections were 29 of 42 ms of a training step at 5,435 generators).  potri costs
        n^3/3 flops and one more n×n array, repaid after ~n/16 projections at 5,435 generators
        (1.4-2.8 s; a step 20 -> 29 per second) and ~n/10 at 9,562 (12 s; 7.1 -> 8.7): done for
        calls >= n/8, up to INVERSE_LIMIT generators; nothing for orthonormal E or the eigenvector
        frame."""
        from scipy.linalg.lapack import dpotri

        if self.orthonormal or self.cholesky is None or self.gram_inverse is not None:
            return
        n = self.cholesky.shape[0]
        if n > INVERSE_LIMIT or 8 * calls < n:
            return
        inverse, info = dpotri(self.cholesky, lower=0)
        if info == 0:
            self.gram_inverse = inverse


def _upper_solve(U: np.ndarray, b: np.ndarray, transpose: bool = False) -> np.ndarray:
    """U^-1 b (or U^-T b) for the Fortran-ordered upper triangular U, without copying U."""
    from scipy.linalg.lapack import dtrtrs

    x, info = dtrtrs(U, b, lower=0, trans=1 if transpose else 0)
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular solve failed (info {info})")
    return x


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
    if subspace.scores_bijective:  # orthonormal E, or independent generators (CyclicSubspace)
        return _solve_finite_blocks(corpus, stats, cyc, subspace, t0)
    # dependent generators (E without independent rows): Newton-CG in the orthonormal coordinates
    # of S_fin, exact Hessian-vector products, in the units of E / s (s = embedding_scale(E)): the scores are s^2 J' c for the unit-scale
    # Jacobian J' = J / s^2, so Newton runs on c' = s^2 c, where GRADIENT_TOL means what it means
    # for unit-norm embeddings (on c itself the gradient shrinks as s^2: 11 % short at s = 1e-3)
    unit = embedding_scale(corpus.E) ** -2
    cache: dict = {}

    def value_grad(c):
        ev = evaluate(unit * subspace.scores(c), stats)
        cache["prob"], cache["key"] = ev.entry_prob, c.tobytes()
        return ev.loss, unit * subspace.scores_adjoint(ev.grad)

    def hvp(c, v):
        if cache.get("key") != c.tobytes():
            value_grad(c)
        return unit * unit * subspace.scores_adjoint(hessp(cache["prob"], stats, subspace.scores(v)))

    result = newton_cg(value_grad, hvp, np.zeros(subspace.dim), gtol=GRADIENT_TOL)
    c = unit * result.x
    final = evaluate(subspace.scores(c), stats)
    projected = unit * subspace.scores_adjoint(final.grad)  # the gradient in c', as newton_cg saw it
    grad_norm = float(np.linalg.norm(projected))
    status = solution_status(result.diverging, grad_norm)
    return FiniteSolution(
        W=subspace.matrix(c), coords=c, status=status, loss=final.loss, gradient_norm=grad_norm,
        moment_residual=float(np.abs(projected).max() * corpus.n), dim=subspace.dim, iterations=result.iterations,
        solve_seconds=time.perf_counter() - t0, n_cyclic_windows=int(cyc.sum()),
    )


MERGE_MIN_FRACTION = 0.1  # W^fin merges identical reduced windows only when over this fraction could merge


def merge_duplicate_windows(stats: WindowStats) -> WindowStats:
    """Identical windows merged, weights summed (:func:`theorycheck.model.merge_identical_windows`),
    when more than MERGE_MIN_FRACTION of them could merge: the merge costs about ten evaluations
    (0.1 s at V = 2,000 / T = 32, where 2.7 % of the 165,577 reduced windows merge and block
    Newton evaluates about ten times), so below that it costs more than the evaluations it saves."""
    return merge_identical_windows(stats, min_merged_fraction=MERGE_MIN_FRACTION)


# --------------------------------------------------------------------------- block Newton
class _BlockLayout:
    """Cyclic-pair coordinates renumbered so that every (query, SCC) block is contiguous and
    blocks of equal size are adjacent (sorted by size): ``sorted = original[perm]``."""

    def __init__(self, block: np.ndarray):
        nb = int(block.max()) + 1
        sizes = np.bincount(block, minlength=nb)
        order = np.lexsort((np.arange(nb), sizes))  # blocks by size
        rank = np.empty(nb, dtype=np.int64)
        rank[order] = np.arange(nb)
        self.perm = np.lexsort((np.arange(block.size), rank[block]))
        self.pos = np.empty(block.size, dtype=np.int64)
        self.pos[self.perm] = np.arange(block.size)
        self.sizes = sizes[order]  # per sorted block
        self.block = np.repeat(np.arange(nb), self.sizes)  # sorted block of each sorted coordinate
        self.start = np.r_[0, np.cumsum(self.sizes)[:-1]]
        self.flat_start = np.r_[0, np.cumsum(self.sizes.astype(np.int64) ** 2)[:-1]]
        self.flat_size = int((self.sizes.astype(np.int64) ** 2).sum())
        self.local = np.arange(block.size) - self.start[self.block]
        self.n_blocks = nb
        edges = np.flatnonzero(np.r_[True, self.sizes[1:] != self.sizes[:-1], True])
        self.groups = [(int(self.sizes[lo]), int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]

    def block_sum(self, x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, self.start) if x.size else x

    def center(self, x: np.ndarray) -> np.ndarray:
        return x - (self.block_sum(x) / self.sizes)[self.block]



HESSIAN_THREADS_MIN_WORK = 2e6  # sum_i m_i^2 below which one thread assembles the block Hessians


class _FixedPatternProduct:
    """C = A B for CSR matrices whose sparsity patterns stay fixed while their values change.

    scipy's A @ B runs two passes each time: the pattern of C (an upper bound on its nonzeros)
    and the values.  Here the first pass runs once and the buffers of C are kept, so a call is
    the numeric pass alone (scipy's own kernel, which releases the GIL; measured at vocabulary
    2,000, window 32: 40 against 75 ms for a 1.1 M-entry product).  Where that kernel is not
    reachable (scipy's private module moved) or the indices would need 64 bits, each call is
    A @ B.  Returns (indptr, indices, data) of C, rows in CSR order, columns in the kernel's order
    (the same on every call); the arrays are overwritten by the next call."""

    def __init__(self, A, B):
        self.A, self.B = A, B
        self.kernel = None
        try:
            from scipy.sparse import _sparsetools
        except ImportError:  # pragma: no cover - scipy moved its private module
            return
        index = A.indices.dtype
        if not (index == B.indices.dtype == A.indptr.dtype == B.indptr.dtype == np.int32):
            return
        rows, cols = A.shape[0], B.shape[1]
        bound = _sparsetools.csr_matmat_maxnnz(rows, cols, A.indptr, A.indices, B.indptr, B.indices)
        if bound >= np.iinfo(np.int32).max:
            return
        self.kernel = _sparsetools.csr_matmat
        self.indptr = np.empty(rows + 1, dtype=np.int32)
        self.indices = np.empty(bound, dtype=np.int32)
        self.data = np.empty(bound)

    def __call__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        A, B = self.A, self.B
        if self.kernel is None:
            C = A @ B
            return C.indptr, C.indices, C.data
        self.kernel(A.shape[0], B.shape[1], A.indptr, A.indices, A.data, B.indptr, B.indices, B.data,
                    self.indptr, self.indices, self.data)
        nnz = int(self.indptr[-1])
        return self.indptr, self.indices[:nnz], self.data[:nnz]


class _BlockHessians:
    """The dense block Hessians H_b = sum_{i in b} w_i (diag(pi_i) - pi_i pi_i^T) in one flat
    buffer (block b row-major at ``lay.flat_start[b]``), for the windows of ``stats``.

    With P the windows × coordinates matrix of sqrt(w_i) pi_ij, H = diag(P^T sqrt(w)) - P^T P
    (every reduced window lies in one (query, SCC) block, so P^T P is block-diagonal).
    P^T P is scipy's sparse product (compiled, outside the GIL), on groups of whole blocks
    (balanced by sum_i m_i^2) in worker threads; the sparsity structures of P, P^T and P^T P
    and the flat position of every product entry are fixed, computed on the first call, so a
    call costs two gathers, the products and one scatter, into a buffer kept between calls (the
    array a call returns is overwritten by the next).
    """

    def __init__(self, stats: WindowStats, lay: _BlockLayout):
        from theorycheck.model import _worker_count

        self.lay = lay
        self.entry_pair = stats.entry_pair
        rows = stats.rows()
        self.sqrt_weight = np.sqrt(stats.weight)[rows]
        window_block = lay.block[stats.entry_pair[stats.label_entry]]
        if not np.all(lay.block[stats.entry_pair] == window_block[rows]):
            raise RuntimeError("a reduced window spans two (query, SCC) blocks; please report this input")
        lengths = np.diff(stats.indptr).astype(np.float64)
        work = np.bincount(window_block, lengths ** 2, minlength=lay.n_blocks)
        parts = _worker_count() if work.sum() >= HESSIAN_THREADS_MIN_WORK else 1  # blocks numbered in coordinate order
        cuts = np.searchsorted(np.cumsum(work), work.sum() * np.arange(1, parts) / parts)
        part_of_block = np.searchsorted(cuts, np.arange(lay.n_blocks), side="right")
        members = [np.flatnonzero(part_of_block[window_block] == k) for k in range(parts)]
        self.parts = [self._part(stats, rows, windows) for windows in members if windows.size]
        self.diagonal = lay.flat_start[lay.block] + lay.local * (lay.sizes[lay.block] + 1)
        self._buffer = None  # the flat Hessians, reused by every call (each call returns it refilled)

    def _part(self, stats: WindowStats, rows: np.ndarray, windows: np.ndarray) -> dict:
        import scipy.sparse as sp

        n = self.lay.block.size
        in_part = np.zeros(stats.n_windows, dtype=bool)
        in_part[windows] = True
        entries = np.flatnonzero(in_part[rows])  # in window order
        indptr = np.r_[0, np.cumsum(np.diff(stats.indptr)[windows])]
        # P with its entries' indices as values: its transpose (scipy's counting sort) then
        # holds, in P^T's order, which entry each value comes from (exact: < 2^53)
        P = sp.csr_matrix((entries.astype(np.float64), stats.entry_pair[entries].astype(np.int32), indptr),
                          shape=(windows.size, n))
        PT = P.T.tocsr()
        entries_t = PT.data.astype(np.int64)
        return {"P": P, "PT": PT, "entries": entries, "entries_t": entries_t, "map": None}

    def _product(self, part: dict, values: np.ndarray):
        np.take(values, part["entries"], out=part["P"].data)
        np.take(values, part["entries_t"], out=part["PT"].data)
        if part["map"] is None:  # P's pattern is fixed, so is P^T P's: its flat positions once
            part["product"] = _FixedPatternProduct(part["PT"], part["P"])
            indptr, indices, data = part["product"]()
            lay = self.lay
            row = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
            block = lay.block[row]
            part["map"] = lay.flat_start[block] + lay.local[row] * lay.sizes[block] + lay.local[indices]
            return part["map"], data
        return part["map"], part["product"]()[2]

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        from theorycheck.model import _pool

        values = prob * self.sqrt_weight
        if len(self.parts) <= 1:
            products = [self._product(part, values) for part in self.parts]
        else:
            products = [f.result() for f in [_pool().submit(self._product, part, values) for part in self.parts]]
        H = self._buffer
        if H is None:  # kept between calls: a fresh 40 MB array would cost a pass of page faults each time
            H = self._buffer = np.zeros(self.lay.flat_size)
        else:
            H.fill(0.0)
        for flat, data in products:
            H[flat] = -data
        H[self.diagonal] += np.bincount(self.entry_pair, values * self.sqrt_weight, minlength=self.lay.block.size)
        return H


WARM_START = True


def label_mass(stats: WindowStats) -> np.ndarray:
    """sum_i w_i 1[label_i = a] per pair a: the observed side of the moment condition (§4.4)."""
    return np.bincount(stats.entry_pair[stats.label_entry], stats.weight, minlength=stats.n_pairs)


def _moment_start(stats: WindowStats, lay: _BlockLayout, labelled: np.ndarray) -> np.ndarray:
    """Starting scores u_a = log((labels of a + 1/2) / (windows holding a + 1)), block-centred: the
    moment-matching point (§4.4) if every window held its whole block with equal counts
    (``labelled``: :func:`label_mass`)."""
    present = np.bincount(stats.entry_pair, stats.weight[stats.rows()], minlength=stats.n_pairs)
    unit = stats.weight.min()
    return lay.center(np.log((labelled + 0.5 * unit) / (present + unit)))


SCALING_SWEEPS = 12  # at most; they stop earlier once a sweep gains less than SCALING_MIN_GAIN
SCALING_MIN_GAIN = 2.0


def _scaling_sweeps(c: np.ndarray, stats: WindowStats, lay: _BlockLayout, labelled: np.ndarray):
    """Generalized iterative scaling (Darroch & Ratcliff 1972) towards the moment condition
    sum_i w_i pi_ia = sum_i w_i 1[label_i = a] (§4.4): u_a <- u_a + log(labels_a / expected_a).

    Every candidate of a window carries exactly one indicator feature (its token's score), so the
    feature sum is C = 1 and the full step never increases the loss.  A sweep costs one
    evaluation, a Newton iteration several: the sweeps take over the linear early phase of Newton
    on the log-sum-exp losses (about 10x per Newton step from the moment start on real text).
    Stops when a sweep shrinks the gradient by less than SCALING_MIN_GAIN.  Returns the point,
    its evaluation and the sweeps done.
    """
    ev = evaluate(c, stats, design=False)
    gnorm = norm_without_blas(lay.center(ev.grad))
    sweeps = 0
    while sweeps < SCALING_SWEEPS:
        expected = labelled + ev.grad  # the gradient is expected minus observed label mass
        if not np.all(expected > 0):
            break
        trial = lay.center(c + np.log(labelled / expected))
        ev_trial = evaluate(trial, stats, design=False)
        g_trial = norm_without_blas(lay.center(ev_trial.grad))
        if not (np.isfinite(ev_trial.loss) and ev_trial.loss <= ev.loss):
            break
        c, ev, sweeps = trial, ev_trial, sweeps + 1
        if g_trial * SCALING_MIN_GAIN > gnorm:
            break
        gnorm = g_trial
    return c, ev, sweeps


THREADED_SOLVE_MIN_FLOPS = 5e7  # below this the solves are too short for a second thread to pay off
CHOLESKY_MIN_SIZE = 64  # blocks from this size on are solved by LAPACK dposv, one call each


def _solve_in_threads(jobs: list, step: np.ndarray) -> None:
    """Batched LAPACK solves of the block Newton systems, written into ``step``; OpenBLAS on one
    thread per solve, the groups of blocks split between worker threads by their cost (LAPACK
    releases the GIL)."""
    from scipy.linalg.lapack import dposv

    from theorycheck.model import _worker_count, balanced_groups, in_threads

    def run(part):
        for c0, size, count, todo, Hs, r, _cost in part:
            out = step[c0:c0 + count * size].reshape(count, size)
            if size < CHOLESKY_MIN_SIZE:
                out[todo] = np.linalg.solve(Hs, r)[:, :, 0]
                continue
            for H, rhs, row in zip(Hs, r, todo):  # large blocks one by one: Cholesky (m^3/3) over LU (2m^3/3)
                _, x, info = dposv(H.T, rhs, lower=1)  # H.T: the same matrix in Fortran order
                out[row] = x[:, 0] if info == 0 else np.linalg.solve(H, rhs)[:, 0]

    cost = sum(job[-1] for job in jobs)
    workers = _worker_count() if cost >= THREADED_SOLVE_MIN_FLOPS else 1
    with single_threaded_blas():
        if workers == 1:
            run(jobs)
            return
        group = balanced_groups([job[-1] for job in jobs], workers)
        parts = [[job for job, g in zip(jobs, group) if g == i] for i in range(workers)]
        in_threads(run, [part for part in parts if part])


def _solve_finite_blocks(corpus: Corpus, stats: WindowStats, cyc: np.ndarray, subspace: CyclicSubspace,
                         t0: float, gtol: float = GRADIENT_TOL, maxiter: int = 100) -> FiniteSolution:
    """W^fin by Newton's method on the cyclic scores with exact dense Hessians per block
    (orthonormal E, or any E with ``subspace.scores_bijective``: the scores, then mapped to S_fin).

    The reduced loss (§4.3) is a sum over (query k, cyclic SCC C) blocks, block b
    depending only on the block-centred scores u_(a,k), a in C.  Its Hessian is
    block-diagonal with blocks H_b = sum_{i in b} w_i (diag(pi_i) - pi_i pi_i^T)
    (assembled for all blocks at once as diag(P^T sqrt(w)) - P^T P, P the windows' sqrt(w) pi
    as a sparse matrix, :class:`_BlockHessians`), singular only along the block's all-ones
    direction (the shift invariance): the Newton step solves (H_b + c 1 1^T) p = -g_b,
    which for a zero-sum g_b gives the zero-sum solution of H_b p = -g_b.  Blocks of equal
    size are solved in one batched LAPACK call (OpenBLAS on one thread; the groups split
    over worker threads, :func:`_solve_in_threads`).  The coordinates
    are renumbered block by block so that the loss evaluation shifts each block by its own
    largest score.  Armijo backtracking per block (quadratic interpolation, each trial on the
    windows of the blocks still backtracking) (each block is its own problem); stop at ||grad|| <= gtol.  Identical reduced
    windows are merged first (:func:`merge_duplicate_windows`); the windows of blocks at
    tolerance are dropped from the evaluations.
    """
    lay = _BlockLayout(subspace.block_index)
    nb, n_coords = lay.n_blocks, lay.block.size
    merged = merge_duplicate_windows(stats)
    # windows over the sorted coordinates, "query" = block, so that evaluate shifts per block
    full_stats = replace(merged, entry_pair=lay.pos[merged.entry_pair], n_pairs=n_coords, pair_query=lay.block)
    full_window_block = lay.block[full_stats.entry_pair[full_stats.label_entry]]
    work = {}

    def use(st):  # the windows evaluated each iteration: those of blocks not yet at tolerance
        work.update(stats=st, window_block=lay.block[st.entry_pair[st.label_entry]],
                    hessians=_BlockHessians(st, lay))

    use(full_stats)

    def block_loss(ev):
        return np.bincount(work["window_block"], work["stats"].weight * ev.window_loss, minlength=nb)

    def newton_step(prob, g, active):
        buf = work["hessians"](prob)
        step = np.zeros(n_coords)
        jobs = []
        for size, first, count in lay.groups:
            todo = np.flatnonzero(active[first:first + count])
            if todo.size == 0:
                continue
            f0, c0 = int(lay.flat_start[first]), int(lay.start[first])
            Hs = buf[f0:f0 + count * size * size].reshape(count, size, size)[todo]
            scale = np.maximum(np.trace(Hs, axis1=1, axis2=2) / size, 1e-300)
            Hs += (scale / size)[:, None, None]  # c 1 1^T
            Hs[:, np.arange(size), np.arange(size)] += 1e-12 * scale[:, None]  # tokens with pi ~ 0
            r = -g[c0:c0 + count * size].reshape(count, size, 1)[todo]
            jobs.append((c0, size, count, todo, Hs, r, float(todo.size) * size ** 3))
        _solve_in_threads(jobs, step)
        return step

    labelled = label_mass(full_stats)
    c = _moment_start(full_stats, lay, labelled) if WARM_START else np.zeros(n_coords)
    if WARM_START and np.all(labelled > 0):  # else some score tends to -inf (W^fin not attained)
        c, ev, sweeps = _scaling_sweeps(c, full_stats, lay, labelled)
    else:
        ev, sweeps = evaluate(c, full_stats, design=False), 0
    g = lay.center(ev.grad)
    f_blocks = block_loss(ev)
    iterations = 0
    diverging = False
    trace: list[int] = []
    gradient_norms: list[float] = []
    timing: list[tuple[float, float]] = []  # (Newton step, whole iteration) seconds
    last_restriction = nb
    for _ in range(maxiter):
        gnorm = norm_without_blas(g)
        gradient_norms.append(float(f"{gnorm:.3g}"))
        if gnorm <= gtol:
            break
        iterations += 1
        # blocks already at tolerance keep their point (the total stays below gtol)
        active = lay.block_sum(g * g) > (0.1 * gtol) ** 2 / nb
        if active.sum() < 0.5 * last_restriction:  # drop the windows of finished blocks
            last_restriction = int(active.sum())
            keep = active[full_window_block]
            use(full_stats.restrict(np.ones(full_stats.entry_pair.size, dtype=bool), keep,
                                    np.arange(n_coords), n_coords))
            ev = evaluate(c, work["stats"], design=False)
            f_blocks = np.where(active, block_loss(ev), f_blocks)
        t_iter = time.perf_counter()
        p = lay.center(newton_step(ev.entry_prob, g, active))
        t_newton = time.perf_counter() - t_iter
        trace.append(int(active.sum()))
        slope = lay.block_sum(g * p)
        bad = (slope >= 0) & active  # not a descent direction for that block: gradient step instead
        if bad.any():
            p = np.where(bad[lay.block], -g, p)
            slope = lay.block_sum(g * p)
        t = np.ones(nb)
        pending = active.copy()
        trial_stats, trial_block = work["stats"], work["window_block"]
        for attempt in range(60):
            trial = c + t[lay.block] * p
            ev_t = evaluate(trial, trial_stats, grad=attempt == 0, design=False)
            fb = np.bincount(trial_block, trial_stats.weight * ev_t.window_loss, minlength=nb)
            ok = np.isfinite(fb) & (fb <= f_blocks + 1e-4 * t * slope + 1e-15 * np.maximum(1.0, np.abs(f_blocks)))
            pending &= ~ok
            if not pending.any():
                break
            # minimiser of the quadratic through f(0), f'(0) and f(t), kept within [0.1 t, 0.5 t]
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                excess = fb - f_blocks - slope * t
                t_quad = np.where(np.isfinite(fb) & (excess > 0), -slope * t * t / (2 * excess), 0.1 * t)
            t[pending] = np.clip(np.nan_to_num(t_quad[pending], nan=0.1), 0.1 * t[pending], 0.5 * t[pending])
            # the next trials evaluate only the windows of blocks still backtracking
            keep = pending[trial_block]
            if keep.sum() < 0.5 * keep.size:
                trial_stats = trial_stats.restrict(np.ones(trial_stats.entry_pair.size, dtype=bool), keep,
                                                   np.arange(n_coords), n_coords)
                trial_block = trial_block[keep]
        t[pending] = 0.0
        t[~active] = 0.0
        if not (t > 0).any():
            break
        c = c + t[lay.block] * p
        ev = ev_t if attempt == 0 else evaluate(c, work["stats"], design=False)
        g = np.where(active[lay.block], lay.center(ev.grad), g)
        f_blocks = np.where(active, block_loss(ev), f_blocks)
        timing.append((round(t_newton, 4), round(time.perf_counter() - t_iter, 4)))
        if norm_without_blas(c) > 1e6:
            diverging = True
            break
    final = evaluate(c, full_stats, design=False)
    g = lay.center(final.grad)
    moment = float(np.abs(final.grad).max() * corpus.n)
    c = c[lay.pos]  # back to the cyclic-pair order
    method = "block Newton (dense Hessian per (query, SCC) block)"
    if not subspace.orthonormal:  # the same scores, as a point of S_fin (coordinates F^T (u_a - u_r));
        # its gradient in the units of E / s, as the Newton-CG route reports it (J F grows as s^2)
        c = subspace.coords_of_scores(c)
        g = subspace.scores_adjoint(g[lay.pos]) * embedding_scale(corpus.E) ** -2
        method += " on the cyclic scores, mapped to S_fin by the generators' Cholesky factor"
    grad_norm = norm_without_blas(g)
    status = solution_status(diverging, grad_norm)
    return FiniteSolution(
        W=subspace.matrix(c), coords=c, status=status, loss=final.loss, gradient_norm=grad_norm,
        moment_residual=moment, dim=subspace.dim, iterations=iterations,
        solve_seconds=time.perf_counter() - t0, n_cyclic_windows=int(cyc.sum()),
        details={"method": method,
                 "windows_after_merge": full_stats.n_windows, "scaling_sweeps": sweeps,
                 "active_blocks_per_iteration": trace,
                 "seconds_per_iteration": timing, "gradient_norm_per_iteration": gradient_norms},
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
    J = np.eye(n_coords) if subspace.orthonormal else np.column_stack([subspace.scores(e) for e in np.eye(n_coords)])
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
