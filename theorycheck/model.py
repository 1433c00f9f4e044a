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

from dataclasses import dataclass, replace

import numpy as np

from theorycheck.corpus.types import Corpus
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
            cached = self._merge_identical_windows()
            object.__setattr__(self, "_deduplicated", cached)
        return cached

    def _merge_identical_windows(self) -> WindowStats:
        keys: dict[bytes, int] = {}
        first: list[int] = []
        group = np.empty(self.n_windows, dtype=np.int64)
        pairs, logc, label = self.entry_pair, self.entry_logc, self.label_entry - self.indptr[:-1]
        for i in range(self.n_windows):
            lo, hi = self.indptr[i], self.indptr[i + 1]
            key = pairs[lo:hi].tobytes() + logc[lo:hi].tobytes() + int(label[i]).to_bytes(4, "little")
            j = keys.setdefault(key, len(first))
            if j == len(first):
                first.append(i)
            group[i] = j
        if len(first) == self.n_windows:
            return self
        keep = np.zeros(self.n_windows, dtype=bool)
        keep[first] = True
        weight = np.bincount(group, weights=self.weight, minlength=len(first))
        all_entries = np.ones(self.entry_pair.size, dtype=bool)
        out = self.restrict(all_entries, keep, np.arange(self.n_pairs), self.n_pairs)
        return replace(out, weight=weight)

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
    entry_prob: np.ndarray  # attention mass of each entry's token in its window
    grad: np.ndarray | None  # dL/dm over pairs


UNDERFLOW_GUARD = 1e-280


def evaluate(m: np.ndarray, stats: WindowStats, grad: bool = True) -> LossEval:
    """Loss L(m) = sum_i w_i l_i (§1.5) and its gradient over pair scores m.

    Fast path: exponentials per *pair* (not per window entry) shifted by the largest
    score of the pair's query, which is shared by every entry of a window; it falls back
    to the exact per-window shift (:func:`evaluate_shifted`) whenever a label's
    exponential would come near underflow.
    """
    groups = stats.query_groups() if stats.n_windows else None
    if groups is None:
        return evaluate_shifted(m, stats, grad)
    starts_g, lengths_g = groups
    shift = np.repeat(np.maximum.reduceat(m, starts_g), lengths_g)
    e_pair = np.exp(m - shift)
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


class ScoreMap:
    """Linear map W -> m (m_p = e_a^T W e_k) and its adjoint g -> sum_p g_p e_a e_k^T."""

    def __init__(self, E: np.ndarray, pair_token: np.ndarray, pair_query: np.ndarray):
        self.E = E
        self.pair_token = pair_token
        self.pair_query = pair_query
        K, d = E.shape
        self.one_hot = d == K and np.array_equal(E, np.eye(K))
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
