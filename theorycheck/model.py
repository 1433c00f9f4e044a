"""The attention model of THEORY.md §1.3-§1.5 in *pair space*.

Scores s_t = x_t^T W xbar depend on W only through the pair scores
m_p = e_a^T W e_k for the pairs p = (token a, query k) that occur (graphs.py).
A window i with query k, label y and token counts c has log-loss (§5.1)

    l_i = -log c_y - m_(y,k) + log sum_a c_a exp(m_(a,k)),

computed here as softplus(LSE_{a != y} (log c_a + m_a - log c_y - m_y)) so that it
neither overflows nor cancels when the label takes almost all the attention, and
with gradient coefficients pi_a - 1[a = y] where the label's coefficient is
-sum_{a != y} pi_a (never 1 - pi_y, which cancels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from theorycheck.corpus.types import Corpus, is_one_hot
from theorycheck.graphs import TokenPriorityGraphs, entry_rows


@dataclass(frozen=True, eq=False)
class WindowStats:
    """Windows as entries over pair nodes (CSR layout: window i owns entries indptr[i]:indptr[i+1]).

    ``entry_pair`` indexes a pair space of size ``n_pairs``; ``weight`` is each window's
    weight in the average (1/n for the ERM loss of §1.5).
    """

    n_pairs: int
    indptr: np.ndarray
    entry_pair: np.ndarray
    entry_logc: np.ndarray
    label_entry: np.ndarray
    weight: np.ndarray
    pair_query: np.ndarray | None = None  # query token of each pair (enables the fast path)

    @property
    def n_windows(self) -> int:
        return int(self.indptr.size - 1)

    def rows(self) -> np.ndarray:
        """Window index of every entry (cached: the training loop needs it every step)."""
        cached = self.__dict__.get("_rows")
        if cached is None:
            cached = np.repeat(np.arange(self.n_windows), np.diff(self.indptr))
            object.__setattr__(self, "_rows", cached)
        return cached

    def query_groups(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(group start, group length) of pairs sharing a query, if pairs are sorted by query."""
        if "_groups" not in self.__dict__:
            groups = None
            pq = self.pair_query
            if pq is not None and pq.size and np.all(pq[1:] >= pq[:-1]):
                starts = np.flatnonzero(np.r_[True, pq[1:] != pq[:-1]])
                groups = (starts, np.diff(np.r_[starts, pq.size]))
            object.__setattr__(self, "_groups", groups)
        return self.__dict__["_groups"]

    def entry_count(self) -> np.ndarray:
        """c_j = exp(entry_logc), cached for the training loop."""
        cached = self.__dict__.get("_entry_count")
        if cached is None:
            cached = np.exp(self.entry_logc)
            object.__setattr__(self, "_entry_count", cached)
        return cached

    def uniform_weight(self) -> float | None:
        """The common weight when all windows weigh the same (lets the loop skip a pass)."""
        cached = self.__dict__.get("_uniform")
        if cached is None:
            w = self.weight
            cached = float(w[0]) if w.size and np.all(w == w[0]) else np.nan
            object.__setattr__(self, "_uniform", cached)
        return None if np.isnan(cached) else cached

    def deduplicated(self) -> WindowStats:
        """Identical windows merged, their weights summed (the loss is a weighted sum over
        windows, so this changes no value or gradient; it only saves work).  Cached."""
        cached = self.__dict__.get("_deduplicated")
        if cached is None:
            cached = merge_identical_windows(self)
            object.__setattr__(self, "_deduplicated", cached)
        return cached

    def design(self) -> WindowDesign:
        """The windows as sparse count matrices (cached; see :class:`WindowDesign`)."""
        cached = self.__dict__.get("_design")
        if cached is None:
            cached = WindowDesign.of(self)
            object.__setattr__(self, "_design", cached)
        return cached

    def restrict(self, entry_mask: np.ndarray, window_mask: np.ndarray, pair_map: np.ndarray, n_pairs: int) -> WindowStats:
        """Keep the masked entries of the masked windows; re-index pairs through ``pair_map``."""
        rows = self.rows()
        keep = entry_mask & window_mask[rows]
        kept_rows = rows[keep]
        new_row = np.cumsum(window_mask) - 1
        lengths = np.bincount(new_row[kept_rows], minlength=int(window_mask.sum()))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        is_label = np.zeros(self.entry_pair.size, dtype=bool)
        is_label[self.label_entry] = True
        label_entry = np.flatnonzero(is_label[keep])
        if label_entry.size != window_mask.sum():
            raise ValueError("restrict must keep the label entry of every kept window")
        pair_query = None
        if self.pair_query is not None:
            valid = pair_map >= 0
            pair_query = np.zeros(n_pairs, dtype=np.int64)
            pair_query[pair_map[valid]] = self.pair_query[valid]
        return WindowStats(
            n_pairs=n_pairs,
            indptr=indptr,
            entry_pair=pair_map[self.entry_pair[keep]],
            entry_logc=self.entry_logc[keep],
            label_entry=label_entry,
            weight=self.weight[window_mask],
            pair_query=pair_query,
        )


PARALLEL_MIN_NNZ = 500_000  # below this a product is too short for a second thread to pay off


def _worker_count() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 4))
    except AttributeError:  # not on Linux
        return max(1, min(os.cpu_count() or 1, 4))


_POOL: dict = {}  # pid -> executor: a forked child must not reuse its parent's (threadless) pool


def _pool():
    pid = os.getpid()
    if pid not in _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.clear()
        _POOL[pid] = ThreadPoolExecutor(max_workers=_worker_count(), thread_name_prefix="theorycheck-matvec")
    return _POOL[pid]


def in_threads(work, parts: list, *args) -> None:
    """work(part, *args) for every part: the last on the calling thread, the others on the pool
    meanwhile (all on the calling thread where one worker is all there is)."""
    if len(parts) == 1 or _worker_count() == 1:
        for part in parts:
            work(part, *args)
        return
    futures = [_pool().submit(work, part, *args) for part in parts[:-1]]
    work(parts[-1], *args)
    for future in futures:
        future.result()


def balanced_groups(costs, count: int) -> np.ndarray:
    """The group (0..count-1) of each item: largest cost first, each onto the group with the
    least cost so far (the lowest-numbered on ties)."""
    costs = np.asarray(costs, dtype=np.float64)
    group = np.zeros(costs.size, dtype=np.int64)
    load = np.zeros(max(1, count))
    for j in np.argsort(-costs, kind="stable").tolist():
        group[j] = int(np.argmin(load))
        load[group[j]] += costs[j]
    return group


class RowSplitMatrix:
    """A CSR matrix whose product with a vector runs on row chunks in parallel threads
    (scipy's csr_matvec releases the GIL).  Each row's sum is computed in the same order as
    by one ``A @ x``, so the result is bitwise the same."""

    def __init__(self, matrix):
        self.matrix = matrix
        self.shape = matrix.shape
        chunks = _worker_count() if matrix.nnz >= PARALLEL_MIN_NNZ else 1
        if chunks > 1:  # chunk boundaries at equal numbers of nonzeros
            bounds = np.searchsorted(matrix.indptr, np.linspace(0, matrix.nnz, chunks + 1)[1:-1])
            bounds = np.unique(np.concatenate([[0], bounds, [matrix.shape[0]]]))
            self.parts = [matrix[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        else:
            self.parts = [matrix]

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        if len(self.parts) == 1:
            return self.matrix @ x
        futures = [_pool().submit(part.dot, x) for part in self.parts]
        return np.concatenate([f.result() for f in futures])


class QueryBlockTranspose:
    """y = A^T x for a CSR matrix A whose rows (windows) and columns (pairs) are both sorted by
    query: every row's nonzeros lie in its query's columns, so rows cut at query boundaries
    give chunks with disjoint column ranges, each a scatter product (CSC view of the chunk;
    faster than a CSR transpose with one short row per pair) run in its own thread."""

    def __init__(self, matrix, row_query: np.ndarray, pair_query: np.ndarray):
        n_rows, n_cols = matrix.shape
        chunks = _worker_count() if matrix.nnz >= PARALLEL_MIN_NNZ else 1
        cuts = np.searchsorted(matrix.indptr, np.linspace(0, matrix.nnz, chunks + 1)[1:-1])
        cuts = np.minimum(cuts, n_rows - 1) if n_rows else cuts
        row_cuts = np.searchsorted(row_query, row_query[cuts], side="left") if n_rows else cuts
        row_bounds = np.unique(np.concatenate([[0], row_cuts, [n_rows]]))
        col_bounds = [0] + [int(np.searchsorted(pair_query, row_query[r], side="left")) for r in row_bounds[1:-1]] \
            + [n_cols]
        self.parts = [(int(r0), int(r1), matrix[r0:r1, c0:c1].T)
                      for r0, r1, c0, c1 in zip(row_bounds[:-1], row_bounds[1:], col_bounds[:-1], col_bounds[1:])]
        self.n_cols = n_cols

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        if len(self.parts) == 1:
            r0, r1, part = self.parts[0]
            return part @ x[r0:r1]
        futures = [_pool().submit(part.dot, x[r0:r1]) for r0, r1, part in self.parts]
        return np.concatenate([f.result() for f in futures])


@dataclass(frozen=True, eq=False)
class WindowDesign:
    """Window i's token counts as rows of sparse matrices over the pair space.

    ``others[i, p] = c_(i,a)`` for the non-label entries (pair p = (a, k_i)), ``others_t``
    its transpose, and the label's pair and count.  With e_p = exp(m_p - shift) the window
    sums of THEORY §5.1 are the products

        S_i^other = (others @ e)_i,  v_i = c_(i,y) e_(y_i, k_i),  S_i = v_i + S_i^other,
        dL/dm = e * (others_t @ (w / S)) - bincount(label pair, w S^other / S),

    which visit every entry once per product instead of a gather, a segment sum and a
    scatter (np.bincount) over the entries.  The rows are the windows sorted by query
    (``order``: row r is window order[r]), so that the pairs of one query, and in the
    transpose the windows of one query, lie together in memory.
    """

    order: np.ndarray
    others: RowSplitMatrix  # windows (sorted by query) × pairs
    others_t: RowSplitMatrix | QueryBlockTranspose  # pairs × windows (sorted by query)
    label_pair: np.ndarray  # per row
    label_count: np.ndarray  # per row
    row_weight: np.ndarray  # w of each row's window
    label_pairs: np.ndarray  # the distinct label pairs
    label_slot: np.ndarray  # per row: index of its label pair in label_pairs

    def label_sums(self, values: np.ndarray) -> np.ndarray:
        """sum of ``values`` (one per row) over the rows of each distinct label pair, in the
        order of ``label_pairs``: the label entries' share of A^T y, without a pass over all pairs."""
        return np.bincount(self.label_slot, values, minlength=self.label_pairs.size)

    def squared_t(self) -> RowSplitMatrix:
        """others_t with squared counts (for the Hessian's diagonal; cached)."""
        cached = self.__dict__.get("_squared_t")
        if cached is None:
            m = self.others.matrix.copy()
            m.data = m.data ** 2
            cached = RowSplitMatrix(m.T.tocsr())
            object.__setattr__(self, "_squared_t", cached)
        return cached

    @classmethod
    def of(cls, stats: WindowStats) -> WindowDesign:
        import scipy.sparse as sp

        label_pair = stats.entry_pair[stats.label_entry]
        key = stats.pair_query[label_pair] if stats.pair_query is not None else label_pair
        order = np.argsort(key, kind="stable")
        is_label = np.zeros(stats.entry_pair.size, dtype=bool)
        is_label[stats.label_entry] = True
        counts = stats.entry_count()
        kept_rows = stats.rows()[~is_label]
        # entries of the sorted windows, each window's own entries in their stored order
        rank = np.empty(stats.n_windows, dtype=np.int64)
        rank[order] = np.arange(stats.n_windows)
        entry_order = np.argsort(rank[kept_rows], kind="stable")
        kept = np.flatnonzero(~is_label)[entry_order]
        lengths = (np.diff(stats.indptr) - 1)[order]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        others = sp.csr_matrix((counts[kept], stats.entry_pair[kept].astype(np.int32), indptr),
                               shape=(stats.n_windows, stats.n_pairs))
        label_pairs, label_slot = np.unique(label_pair[order], return_inverse=True)
        pq = stats.pair_query
        if pq is not None and pq.size and np.all(pq[1:] >= pq[:-1]):
            transpose = QueryBlockTranspose(others, pq[label_pair[order]], pq)
        else:
            transpose = RowSplitMatrix(others.T.tocsr())
        return cls(order, RowSplitMatrix(others), transpose, label_pair[order],
                   counts[stats.label_entry][order], stats.weight[order], label_pairs, label_slot.ravel())


def merge_identical_windows(stats: WindowStats, min_merged_fraction: float = 0.0) -> WindowStats:
    """Identical windows (same entries, counts and label) merged, weights summed; the first
    of each group keeps its place.

    The loss is a weighted sum over windows (§4.3), so this changes no value, gradient or
    Hessian.  Vectorised: windows are grouped by two random 64-bit fingerprints of their
    (pair, count) entries and label, and every group is then verified entry by entry
    against its first member (any mismatch: no merge).  ``min_merged_fraction``: return
    ``stats`` unchanged when at most that fraction of the windows could merge (n minus the
    distinct first fingerprints bounds the merges), so that a caller for whom the merge
    would cost more than it saves stops after one fingerprint.
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
        if len(keys) == 1 and min_merged_fraction > 0 and n - np.unique(h).size <= min_merged_fraction * n:
            return stats
    # groups of equal (fingerprint 1, fingerprint 2, length) by a stable sort: the first
    # window of each group in sorted order is its first occurrence
    order = np.lexsort((lengths, keys[1], keys[0]))
    k0, k1, ln = keys[0][order], keys[1][order], lengths[order]
    new_group = np.r_[True, (k0[1:] != k0[:-1]) | (k1[1:] != k1[:-1]) | (ln[1:] != ln[:-1])]
    group_sorted = np.cumsum(new_group) - 1
    group_of_first = order[new_group]  # first occurrence of each group (sorted by key)
    rank = np.argsort(group_of_first, kind="stable")  # renumber groups by first occurrence
    renumber = np.empty(rank.size, dtype=np.int64)
    renumber[rank] = np.arange(rank.size)
    group = np.empty(n, dtype=np.int64)
    group[order] = renumber[group_sorted]
    first = group_of_first[rank]
    if first.size == n:
        return stats
    rep = first[group]
    offset = np.arange(stats.entry_pair.size) - stats.indptr[rows]
    rep_entry = stats.indptr[rep][rows] + offset
    label_offset = stats.label_entry - stats.indptr[:-1]
    same = (np.array_equal(stats.entry_pair, stats.entry_pair[rep_entry])
            and np.array_equal(stats.entry_logc, stats.entry_logc[rep_entry])
            and np.array_equal(label_offset, label_offset[rep]))
    if not same:
        return stats
    keep = np.zeros(n, dtype=bool)
    keep[first] = True
    order_of_kept = np.cumsum(keep) - 1
    weight = np.bincount(order_of_kept[rep], weights=stats.weight, minlength=int(keep.sum()))
    out = stats.restrict(np.ones(stats.entry_pair.size, dtype=bool), keep, np.arange(stats.n_pairs), stats.n_pairs)
    return replace(out, weight=weight)


def window_stats(corpus: Corpus, graphs: TokenPriorityGraphs) -> WindowStats:
    """Sufficient statistics of a realizable corpus, weights 1/n."""
    counts = corpus.counts
    rows = entry_rows(corpus)
    is_label = counts.indices == corpus.label[rows]
    label_entry = np.flatnonzero(is_label)
    return WindowStats(
        n_pairs=graphs.n_pairs,
        indptr=counts.indptr.astype(np.int64),
        entry_pair=graphs.entry_pair,
        entry_logc=np.log(counts.data.astype(np.float64)),
        label_entry=label_entry,
        weight=np.full(corpus.n, 1.0 / corpus.n),
        pair_query=graphs.pair_query,
    )


@dataclass(frozen=True)
class LossEval:
    loss: float
    window_loss: np.ndarray  # l_i
    entry_prob: np.ndarray | None  # attention mass of each entry's token in its window (None if not asked for)
    grad: np.ndarray | None  # dL/dm over pairs


UNDERFLOW_GUARD = 1e-280


def evaluate(m: np.ndarray, stats: WindowStats, grad: bool = True, probabilities: bool = True,
             design: bool = True) -> LossEval:
    """Loss L(m) = sum_i w_i l_i (§1.5) and its gradient over pair scores m.

    Fast path: exponentials per *pair* (not per window entry) shifted by the largest
    score (overall, else of the pair's query, which is shared by every entry of a
    window), and the window sums as sparse products (:class:`WindowDesign`, built from the
    DESIGN_AFTER_CALLS-th evaluation of the same stats on; per-entry sums before); it falls back to the exact
    per-window shift (:func:`evaluate_shifted`) whenever a label's exponential would come
    near underflow.  ``probabilities=False`` leaves ``entry_prob`` out (None): the
    training loop needs only the gradient.  ``design=False``: never build the sparse
    matrices for these stats (a caller that evaluates them only a few times, with
    probabilities: the build costs about five evaluations).
    """
    groups = stats.query_groups() if stats.n_windows else None
    if groups is None:
        return evaluate_shifted(m, stats, grad)
    calls = stats.__dict__.get("_evaluations", 0) + 1
    object.__setattr__(stats, "_evaluations", calls)
    if (calls < DESIGN_AFTER_CALLS or not design) and "_design" not in stats.__dict__:
        return _evaluate_by_entries(m, stats, groups, grad)
    design = stats.design()
    # one shift for all pairs first (cheapest); the largest score of each query when a
    # label's exponential would come near underflow; the exact per-window shift after that
    e_pair = m - m.max()
    np.exp(e_pair, out=e_pair)
    v_label = e_pair[design.label_pair]  # window quantities below are per design row
    v_label *= design.label_count
    if v_label.min() < UNDERFLOW_GUARD:
        starts_g, lengths_g = groups
        e_pair = np.exp(m - np.repeat(np.maximum.reduceat(m, starts_g), lengths_g))
        v_label = e_pair[design.label_pair]
        v_label *= design.label_count
        if v_label.min() < UNDERFLOW_GUARD:
            return evaluate_shifted(m, stats, grad)
    others = design.others @ e_pair
    sorted_loss = np.log1p(others / v_label)
    window_loss = np.empty_like(sorted_loss)
    window_loss[design.order] = sorted_loss
    inv_total = 1.0 / (v_label + others)
    weight = stats.uniform_weight()
    g = None
    if grad:
        # dL/dm_p = sum_i w_i (pi_i(p) - 1[p = y_i]); the label's coefficient is -S^other/S
        w_inv = inv_total * design.row_weight
        g = design.others_t @ w_inv
        g *= e_pair
        g[design.label_pairs] -= design.label_sums(w_inv * others)
    prob = None
    if probabilities:
        inv_window = np.empty_like(inv_total)
        inv_window[design.order] = inv_total
        prob = e_pair[stats.entry_pair]
        prob *= stats.entry_count()
        prob *= np.repeat(inv_window, np.diff(stats.indptr))
        prob[stats.label_entry[design.order]] = v_label * inv_total
    # (not a BLAS dot: OpenBLAS threads would wake for it on every call)
    loss = float(weight * sorted_loss.sum()) if weight is not None else float((design.row_weight * sorted_loss).sum())
    return LossEval(loss, window_loss, prob, g)


DESIGN_AFTER_CALLS = 4  # building the sparse matrices costs a few evaluations: not for short-lived stats


def _evaluate_by_entries(m: np.ndarray, stats: WindowStats, groups, grad: bool) -> LossEval:
    """:func:`evaluate` without the sparse matrices: per-entry gather, segment sums
    (np.add.reduceat) and a scatter (np.bincount); shift per query."""
    starts_g, lengths_g = groups
    e_pair = np.exp(m - np.repeat(np.maximum.reduceat(m, starts_g), lengths_g))
    label = stats.label_entry
    v = e_pair[stats.entry_pair]
    v *= stats.entry_count()
    v_label = v[label]
    if v_label.min() < UNDERFLOW_GUARD:
        return evaluate_shifted(m, stats, grad)
    v[label] = 0.0
    others = np.add.reduceat(v, stats.indptr[:-1])
    window_loss = np.log1p(others / v_label)
    inv_total = 1.0 / (v_label + others)
    v *= np.repeat(inv_total, np.diff(stats.indptr))  # pi_j for j != label
    weight = stats.uniform_weight()
    g = _gradient(v, -others * inv_total, stats, weight) if grad else None
    v[label] = v_label * inv_total
    loss = float(weight * window_loss.sum()) if weight is not None else float(stats.weight @ window_loss)
    return LossEval(loss, window_loss, v, g)


def _gradient(prob: np.ndarray, label_coef: np.ndarray, stats: WindowStats, weight: float | None) -> np.ndarray:
    """dL/dm = sum_i w_i sum_j (pi_j - 1[j = label]) e_(pair j), the label's coefficient
    given directly as -sum_{j != label} pi_j."""
    coef = prob.copy()
    coef[stats.label_entry] = label_coef
    if weight is None:
        coef *= stats.weight[stats.rows()]
    g = np.bincount(stats.entry_pair, weights=coef, minlength=stats.n_pairs)
    if weight is not None:
        g *= weight
    return g


def evaluate_shifted(m: np.ndarray, stats: WindowStats, grad: bool = True) -> LossEval:
    """Loss and gradient with a per-window shift (exact in every regime).

    With r_j = z_j - z_label and peak_i = max(0, max_j r_j) (a valid shift):
    S_i = sum_{j != label} exp(r_j - peak_i) (no cancellation: the label is left out),
    l_i = softplus(log S_i + peak_i), pi_j = exp(r_j - peak_i) * exp(peak_i - l_i),
    pi_label = exp(-l_i), and the label's gradient coefficient -sum_{j != label} pi_j
    = -S_i exp(peak_i - l_i).
    """
    starts = stats.indptr[:-1]
    rows = stats.rows()
    label = stats.label_entry
    z = m[stats.entry_pair]
    z += stats.entry_logc
    z -= z[label][rows]  # r_j; exactly 0 at the label entry
    peak = np.maximum.reduceat(z, starts)  # >= 0 because the label's r is 0
    z -= peak[rows]
    np.exp(z, out=z)
    z[label] = 0.0
    others = np.add.reduceat(z, starts)
    with np.errstate(divide="ignore"):
        lse_others = np.log(others) + peak
    window_loss = np.logaddexp(0.0, lse_others)
    scale = np.exp(peak - window_loss)
    z *= scale[rows]  # pi_j for j != label
    other_mass = others * scale
    weight = stats.uniform_weight()
    g = _gradient(z, -other_mass, stats, weight) if grad else None
    z[label] = np.exp(-window_loss)
    loss = float(weight * window_loss.sum()) if weight is not None else float(stats.weight @ window_loss)
    return LossEval(loss, window_loss, z, g)


class LeakMap:
    """The part of dL/dm that moves W off S_fin, scaled so that it never underflows.

    With pi_ij the attention on entry j of window i and ``outside`` the entries whose token
    is not in the SCC of the window's label (THEORY.md §2.2),
        ell = sum_i w_i [ sum_{j outside} pi_ij e_(p_ij) - (sum_{j outside} pi_ij) e_(p_label_i) ]:
    dL/dm - ell sums to zero over each window's label SCC, so its image under the adjoint lies
    in S_fin, and Pi_perp dL/dW = Pi_perp adjoint(ell).  Computed per entry in the log domain,
    log(w_i pi_ij) = (m_(p_ij) + log c_ij) - (m_(p_label_i) + log c_(i,label)) - l_i + log w_i
    (l_i: the window's loss), never as the difference 1 - sum_{j in C_i} pi_ij, which cancels
    once the leak is below 1e-16.  Returned as (ell / c, log c) with c = the largest w_i pi_ij
    outside: the direction of ell survives margins far beyond exp's range (log c < -745).
    The training loop uses :class:`SplitLoss` (sparse products) and this form where that one
    would underflow.
    """

    def __init__(self, stats: WindowStats, outside: np.ndarray):
        rows = stats.rows()
        label = stats.label_entry
        self.n_pairs = stats.n_pairs
        self.row = rows[outside]
        self.pair = stats.entry_pair[outside]
        self.label_pair = stats.entry_pair[label][self.row]
        self.offset = (stats.entry_logc[outside] - stats.entry_logc[label][self.row]
                       + np.log(stats.weight)[self.row])

    def __call__(self, m: np.ndarray, window_loss: np.ndarray) -> tuple[np.ndarray, float]:
        """(ell / c, log c) at scores ``m``; ``window_loss``: l_i at m (from :func:`evaluate`)."""
        if self.pair.size == 0:
            return np.zeros(self.n_pairs), -np.inf
        log_pi = m[self.pair]
        log_pi -= m[self.label_pair]
        log_pi += self.offset
        log_pi -= window_loss[self.row]
        log_c = float(log_pi.max())
        log_pi -= log_c
        scaled = np.exp(log_pi, out=log_pi)
        ell = np.bincount(self.pair, scaled, minlength=self.n_pairs)
        ell -= np.bincount(self.label_pair, scaled, minlength=self.n_pairs)
        return ell, log_c


def leak_gradient(m: np.ndarray, stats: WindowStats, outside: np.ndarray,
                  window_loss: np.ndarray) -> tuple[np.ndarray, float]:
    """:class:`LeakMap` for one call: ``LeakMap(stats, outside)(m, window_loss)``."""
    return LeakMap(stats, outside)(m, window_loss)


class SplitLoss:
    """dL/dm and its leak ell (:class:`LeakMap`) in one pass of sparse products, for split-ngd.

    The non-label entries are split into those inside the label's SCC (count matrix A over the
    pairs that occur inside) and those outside it (B over all pairs, e^out = 0 on those that never occur outside).  With
    per-query shifts M^in_k, M^out_k (largest score among a query's inside / outside pairs),
    e^in = exp(m - M^in), e^out = exp(m - M^out), v_i = c_(i,label) e^in_(label):

        S_i / e^(M^in) = v_i + (A e^in)_i + exp(M^out - M^in) (B e^out)_i,   l_i = log(S_i / (v_i e^(M^in))),
        g_in = sum_i w_i [sum_(j in, != label) pi_ij e_(p_ij) - (sum_(j in, != label) pi_ij) e_(p_label_i)]
             = e^in * (A^T (w / S)) - bincount(label pair, w (A e^in) / S),
        w_i pi_ij (j outside) = rho_i c_ij e^out_(p_ij),  log rho_i = log(w_i e^(M^in) / S_i) + M^out_k - M^in_k,
        ell / c = e^out * (B^T (rho / c)) - bincount(label pair, (rho / c) (B e^out)),  c: max |ell| = 1,

    and dL/dm = g_in + ell (the label's coefficient, -sum_(j != label) pi_ij, split between the
    two: no cancellation in either).  Four products over the entries, as many as the loss and
    gradient alone (:func:`evaluate`), and B e^out serves the loss and the leak.

    Every quantity above but the scale c and the loss is per query, so the queries are cut into
    contiguous ranges of about equal work (entries + RANGE_PAIR_COST pairs; one per worker thread,
    :class:`_SplitLossShard`), each computing its pairs' slice of dL/dm and of ell / c_s with
    its own scale c_s, all at once in threads (scipy's products and numpy's ufuncs release
    the GIL); then c = max_s c_s and each slice of ell is multiplied by c_s / c (1 for the
    largest: max |ell| = 1 still holds exactly).  Terms below 1e-308 of their scale underflow;
    where that could matter (a label's v_i below 1e-280, the outside shift 700 above the
    inside one, or every leak term of a range below 1e-200 c_s) it falls back to
    :func:`evaluate` and the log-domain :class:`LeakMap`.
    """

    def __init__(self, stats: WindowStats, outside: np.ndarray, shards: int | None = None):
        """``shards``: the number of query ranges (default: one per worker thread for at least
        PARALLEL_MIN_NNZ entries, else one)."""
        self.stats = stats
        self.outside = outside
        self._exact_leak: LeakMap | None = None
        self.n_pairs = n_pairs = stats.n_pairs
        pair_query = stats.pair_query
        self.usable = pair_query is not None and bool(np.all(pair_query[1:] >= pair_query[:-1]))
        if not self.usable:  # the shifts need pairs numbered by query (as window_stats numbers them)
            return
        self._ell, self._grad = np.zeros(n_pairs), np.zeros(n_pairs)  # reused: the loop calls it every step
        if shards is None:
            shards = _worker_count() if stats.entry_pair.size >= PARALLEL_MIN_NNZ else 1
        self.shards: list[tuple[np.ndarray | None, int, int, _SplitLossShard]] = []
        for windows, p0, p1 in _query_ranges(stats, shards):
            if windows is None:  # one range: all of it
                sub, sub_outside = stats, outside
            else:
                keep = np.zeros(stats.n_windows, dtype=bool)
                keep[windows] = True
                pair_map = np.full(n_pairs, -1, dtype=np.int64)
                pair_map[p0:p1] = np.arange(p1 - p0)
                sub = stats.restrict(np.ones(stats.entry_pair.size, dtype=bool), keep, pair_map, p1 - p0)
                sub_outside = outside[keep[stats.rows()]]
            self.shards.append((windows, p0, p1, _SplitLossShard(sub, sub_outside, self._ell[p0:p1],
                                                                 self._grad[p0:p1])))

    @property
    def exact_leak(self) -> LeakMap:
        """The log-domain leak of the fallback (built on first use: it holds every outside entry)."""
        if self._exact_leak is None:
            self._exact_leak = LeakMap(self.stats, self.outside)
        return self._exact_leak

    def __call__(self, m: np.ndarray) -> tuple[LossEval, np.ndarray, float]:
        """(loss and gradient as from :func:`evaluate` without probabilities, ell / c, log c).
        The two arrays are buffers of this object, overwritten by the next call."""
        fast = self._fast(m) if self.usable else None
        if fast is not None:
            return fast
        ev = evaluate(m, self.stats, probabilities=False)
        ell, log_c = self.exact_leak(m, ev.window_loss)
        return ev, ell, log_c

    def _fast(self, m: np.ndarray):
        if len(self.shards) == 1:
            results = [self.shards[0][3](m)]
        else:
            futures = [_pool().submit(shard, m[p0:p1]) for _, p0, p1, shard in self.shards]
            results = [f.result() for f in futures]
        if any(r is None for r in results):
            return None
        log_c = max(r[2] for r in results)
        if len(results) > 1 and np.isfinite(log_c):
            for (_, p0, p1, _), (_, _, log_c_s) in zip(self.shards, results):
                if log_c_s < log_c:  # -inf: a range without leak, its slice is already 0
                    self._ell[p0:p1] *= np.exp(log_c_s - log_c)
        loss = float(sum(r[0] for r in results))
        if len(results) == 1:
            window_loss = results[0][1]
        else:
            window_loss = np.empty(self.stats.n_windows)
            for (windows, _, _, _), (_, part, _) in zip(self.shards, results):
                window_loss[windows] = part
        return LossEval(loss, window_loss, None, self._grad), self._ell, log_c


RANGE_PAIR_COST = 2.3  # a pair's share of SplitLoss's work against an entry's (measured: ~8 ns against ~3.5 ns)


def _query_ranges(stats: WindowStats, count: int) -> list[tuple[np.ndarray | None, int, int]]:
    """(windows, first pair, end pair) of ``count`` or fewer contiguous query ranges of about
    equal work (entries + RANGE_PAIR_COST pairs), each holding at least one window and
    together every pair (pairs are numbered by query); windows None for a single range."""
    pair_query = stats.pair_query
    window_query = pair_query[stats.entry_pair[stats.label_entry]]
    if count <= 1 or stats.n_windows < 2:
        return [(None, 0, stats.n_pairs)]
    n_queries = int(pair_query.max()) + 1
    work = np.bincount(window_query, np.diff(stats.indptr), minlength=n_queries) \
        + RANGE_PAIR_COST * np.bincount(pair_query, minlength=n_queries)
    cumulative = np.cumsum(work)
    cuts = np.searchsorted(cumulative, cumulative[-1] * np.arange(1, count) / count, side="left") + 1
    has_window = np.bincount(window_query, minlength=n_queries) > 0
    # a cut at query k leaves windows on both sides only if some query below k and some from k on hold one
    first, last = int(np.argmax(has_window)), n_queries - 1 - int(np.argmax(has_window[::-1]))
    cuts = np.unique(cuts[(cuts > first) & (cuts <= last)])
    if cuts.size == 0:
        return [(None, 0, stats.n_pairs)]
    bounds = np.r_[0, cuts, n_queries]
    pair_bounds = np.searchsorted(pair_query, bounds, side="left")
    pair_bounds[-1] = stats.n_pairs
    ranges = []
    for k0, k1, p0, p1 in zip(bounds[:-1], bounds[1:], pair_bounds[:-1], pair_bounds[1:]):
        windows = np.flatnonzero((window_query >= k0) & (window_query < k1))
        if windows.size:
            ranges.append((windows, int(p0), int(p1)))
        elif ranges:  # queries without windows between two cuts (the first range always holds one): its pairs join the last
            ranges[-1] = (ranges[-1][0], ranges[-1][1], int(p1))
    return ranges


class _SplitLossShard:
    """:class:`SplitLoss`'s products and arithmetic for one contiguous range of queries (the
    windows of ``stats``; its pairs are that range's, renumbered from 0), on the calling
    thread.  Writes its slice of dL/dm and of ell / c_s (max |ell| = 1 over the slice) into
    ``ell`` and ``grad`` (views of the caller's buffers) and returns (loss, window losses in
    the order of ``stats``, log c_s), or None where the shifted sums could underflow."""

    def __init__(self, stats: WindowStats, outside: np.ndarray, ell: np.ndarray, grad: np.ndarray):
        import scipy.sparse as sp

        self.n_pairs = n_pairs = stats.n_pairs
        rows, label = stats.rows(), stats.label_entry
        is_label = np.zeros(stats.entry_pair.size, dtype=bool)
        is_label[label] = True
        inside = ~outside & ~is_label
        counts = stats.entry_count()
        pair_query = stats.pair_query
        # windows sorted by query (as in WindowDesign): consecutive rows read the same query's pairs
        label_pair = stats.entry_pair[label]
        self.order = np.argsort(pair_query[label_pair], kind="stable")
        rank = np.empty(stats.n_windows, dtype=np.int64)
        rank[self.order] = np.arange(stats.n_windows)
        self.label_pair = label_pair[self.order]
        self.label_count = counts[label][self.order]
        self.weight = stats.weight[self.order]
        self.window_query = pair_query[self.label_pair]
        n_queries = int(pair_query.max()) + 1 if pair_query.size else 0

        def columns(pairs_of_entries, extra=None):  # the distinct pairs, sorted (a bincount, not a sort)
            present = np.bincount(pairs_of_entries, minlength=n_pairs) > 0
            if extra is not None:
                present[extra] = True
            pairs = np.flatnonzero(present)
            query = pair_query[pairs]
            starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]]) if pairs.size else np.zeros(0, int)
            return pairs, query, starts, query[starts]

        self.in_pairs, self.in_query, self.in_starts, self.in_queries = columns(stats.entry_pair[inside],
                                                                                self.label_pair)
        # B's columns are all pairs (most pairs occur outside some window's label SCC): e^out and
        # ell are then full-length vectors, no gather or scatter; the shift M^out_k is still
        # the largest score among the pairs that do occur outside (the others get e^out = 0)
        self.out_pairs, _, self.out_starts, self.out_queries = columns(stats.entry_pair[outside])
        self.not_out = np.setdiff1d(np.arange(n_pairs), self.out_pairs, assume_unique=True)
        self.pair_query = pair_query
        self.label_col = np.searchsorted(self.in_pairs, self.label_pair)

        def counts_matrix(entries, pairs):
            col = stats.entry_pair[entries] if pairs is None else np.searchsorted(pairs, stats.entry_pair[entries])
            return sp.csr_matrix((counts[entries], (rank[rows[entries]], col)),
                                 shape=(stats.n_windows, n_pairs if pairs is None else pairs.size))

        # the transposes as CSC views: a scatter product, faster than a CSR with one short row per pair
        self.A = counts_matrix(inside, self.in_pairs)
        self.B = counts_matrix(outside, None)
        self.A_t, self.B_t = self.A.T, self.B.T
        self.no_outside = np.diff(self.B.indptr) == 0  # windows that leak nothing: out of the scale c
        self.top_in = np.full(n_queries, -np.inf)
        self.top_out = np.full(n_queries, -np.inf)
        self._ell, self._grad = ell, grad

    def _shifted(self, m, pairs, query, starts, queries, top):
        values = m[pairs]
        top.fill(-np.inf)
        if values.size:
            top[queries] = np.maximum.reduceat(values, starts)
        values -= top[query]
        return np.exp(values, out=values)

    def _shifted_outside(self, m):
        """e^out = exp(m - M^out_k) over all pairs, 0 on the pairs that occur outside no label SCC
        (their scores may exceed the shift: exp overflows there, harmlessly, before the zeroing)."""
        top = self.top_out
        top.fill(-np.inf)
        if self.out_pairs.size:
            top[self.out_queries] = np.maximum.reduceat(m[self.out_pairs], self.out_starts)
        e_out = m - top[self.pair_query]
        with np.errstate(over="ignore", invalid="ignore"):
            np.exp(e_out, out=e_out)
        e_out[self.not_out] = 0.0
        return e_out

    def __call__(self, m: np.ndarray):
        e_in = self._shifted(m, self.in_pairs, self.in_query, self.in_starts, self.in_queries, self.top_in)
        e_out = self._shifted_outside(m)
        q = self.window_query
        v = self.label_count * e_in[self.label_col]
        if v.size == 0 or not v.min() >= UNDERFLOW_GUARD:
            return None
        with np.errstate(invalid="ignore"):
            lift = self.top_out[q] - self.top_in[q]  # -inf where the query has no outside pair
        if lift.max() > 700.0:
            return None
        inside_sum = self.A @ e_in
        outside_sum = self.B @ e_out
        other = inside_sum + np.exp(lift) * outside_sum
        window_loss = np.log1p(other / v)
        w_inv = self.weight / (v + other)
        n_in = self.in_pairs.size
        grad_in = e_in * (self.A_t @ w_inv)  # label pairs are among the inside columns (label_col)
        grad_in -= np.bincount(self.label_col, w_inv * inside_sum, minlength=n_in)
        # log(w / (S / e^M_in)) + M_out - M_in: two passes over the windows (the same number as
        # log w + M_out - m_label - log c_label - l, with its two gathers, in 1.1 ms of 14.4)
        log_rho = np.log(w_inv)
        log_rho += lift
        log_rho[self.no_outside] = -np.inf
        log_c = float(log_rho.max()) if log_rho.size else -np.inf
        ell = self._ell
        if np.isfinite(log_c):
            rho = np.exp(log_rho - log_c)
            np.multiply(e_out, self.B_t @ rho, out=ell)
            if not ell.max() >= 1e-200:
                return None
            ell[self.in_pairs] -= np.bincount(self.label_col, rho * outside_sum, minlength=n_in)
            # rescaled to a largest entry of 1, as the log-domain form: a caller's squared norm
            # of a 1e-160 vector would underflow to 0.  Only the label columns can be negative.
            top = max(float(ell.max()), -float(ell[self.in_pairs].min()) if n_in else 0.0)
            if top > 0:
                ell /= top
                log_c += float(np.log(top))
        else:
            ell.fill(0.0)
        grad = np.multiply(ell, np.exp(log_c) if np.isfinite(log_c) else 0.0, out=self._grad)
        grad[self.in_pairs] += grad_in
        loss = float((self.weight * window_loss).sum())
        in_window_order = np.empty_like(window_loss)
        in_window_order[self.order] = window_loss
        return loss, in_window_order, log_c


def hessp(prob: np.ndarray, stats: WindowStats, v: np.ndarray) -> np.ndarray:
    """Hessian-vector product of L at the point whose entry probabilities are ``prob``.

    Per window the Hessian in z is diag(pi) - pi pi^T (a weighted covariance, §5.1).
    """
    starts = stats.indptr[:-1]
    rows = stats.rows()
    ve = v[stats.entry_pair]
    mean = np.add.reduceat(prob * ve, starts)
    coef = stats.weight[rows] * prob * (ve - mean[rows])
    return np.bincount(stats.entry_pair, weights=coef, minlength=stats.n_pairs)


def hessian_operator(m: np.ndarray, stats: WindowStats):
    """(v -> H v, diag H) for the Hessian H of L at pair scores m, from the sparse window
    matrices (:class:`WindowDesign`): with A the window × pair count matrix, e = exp(m - shift),
    S = A e and q = w / S,

        H v = e*v*(A^T q) - e*A^T(q * (A (e*v)) / S),   diag H = e*(A^T q) - e^2*((A*A)^T (q / S)),

    the sum over windows of w_i (diag(pi_i) - pi_i pi_i^T) (§5.1) without a pass over the
    entries per product.  None when the stats have no query groups or a window sum would
    underflow (the caller then uses :func:`hessp`)."""
    groups = stats.query_groups() if stats.n_windows else None
    if groups is None:
        return None
    starts_g, lengths_g = groups
    e = np.exp(m - np.repeat(np.maximum.reduceat(m, starts_g), lengths_g))
    design = stats.design()
    label_value = design.label_count * e[design.label_pair]
    total = design.others @ e + label_value
    if total.min() < UNDERFLOW_GUARD:
        return None
    weight = stats.weight[design.order]
    q = weight / total

    def transpose(y, label_count=design.label_count, matrix=design.others_t):  # A^T y
        out = matrix @ y
        out[design.label_pairs] += design.label_sums(y * label_count)
        return out

    at_q = transpose(q)

    def hvp(v):
        ev = e * v
        pi_v = (design.others @ ev + design.label_count * ev[design.label_pair]) / total
        back = transpose(q * pi_v)
        back *= e
        ev *= at_q
        ev -= back  # e v (A^T q) - e A^T(q pi_v), in the two buffers: no pair-length temporaries
        return ev

    q_s = q / total
    diag = e * at_q - e * e * transpose(q_s, design.label_count ** 2, design.squared_t())
    return hvp, diag


class ScoreMap:
    """Linear map W -> m (m_p = e_a^T W e_k) and its adjoint g -> sum_p g_p e_a e_k^T."""

    def __init__(self, E: np.ndarray, pair_token: np.ndarray, pair_query: np.ndarray):
        self.E = E
        self.pair_token = pair_token
        self.pair_query = pair_query
        K, d = E.shape
        self.one_hot = is_one_hot(E)
        self.flat_index = pair_token * d + pair_query if self.one_hot else None

    def scores(self, W: np.ndarray) -> np.ndarray:
        if self.one_hot:
            return W.ravel()[self.flat_index]
        left = self.E @ W  # rows e_a^T W
        return np.einsum("pi,pi->p", left[self.pair_token], self.E[self.pair_query])

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        d = self.E.shape[1]
        if self.one_hot:
            out = np.zeros(d * d)
            out[self.flat_index] = g
            return out.reshape(d, d)
        weighted = np.zeros((self.E.shape[0], self.E.shape[0]))
        weighted[self.pair_token, self.pair_query] = g  # pairs are distinct
        return self.E.T @ weighted @ self.E

    def gram(self) -> np.ndarray:
        """<e_a e_k^T, e_b e_l^T>_F = (e_a.e_b)(e_k.e_l) over pairs (P×P)."""
        G = self.E @ self.E.T
        return G[np.ix_(self.pair_token, self.pair_token)] * G[np.ix_(self.pair_query, self.pair_query)]
