"""Trajectory metrics: how far W(tau) is from the predictions (THEORY.md §5.3-§5.5, §8).

Training windows (P13): the retrieval leak is the attention mass outside O_i (positions
whose token shares the label's SCC); the composition error is the total-variation
distance between the attention renormalised on O_i and softmax(log c + Xbar_i W^fin xbar_i).
Held-out windows (P14): the same with O(X) the dominant SCC of the window (§2.3, §5.5);
windows without a dominant SCC are not predicted and are left out (and counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theorycheck.model import ScoreMap, WindowStats, evaluate
from theorycheck.path import frobenius_cos


@dataclass(frozen=True, eq=False)
class WindowSet:
    """Windows with their predicted top-SCC entries and predicted composition."""

    stats: WindowStats
    score_map: ScoreMap
    in_top: np.ndarray  # entry mask: token in the retrieved SCC
    predicted: np.ndarray  # per entry: predicted probability within the top SCC (0 outside)
    skipped: int = 0  # windows without a dominant SCC (not predicted)

    @property
    def size(self) -> int:
        return self.stats.n_windows

    def with_finite(self, W_fin: np.ndarray) -> WindowSet:
        """The same windows with the composition predicted by another W^fin (for judging it)."""
        if self.size == 0:
            return self
        fin = self.score_map.scores(W_fin)[self.stats.entry_pair]
        return WindowSet(self.stats, self.score_map, self.in_top, _composition(self.stats, self.in_top, fin), self.skipped)

    def errors(self, W: np.ndarray, scores: np.ndarray | None = None) -> dict:
        """max / mean retrieval leak and composition error of the model W."""
        if self.size == 0:
            return {}
        m = self.score_map.scores(W) if scores is None else scores
        ev = evaluate(m, self.stats, grad=False)
        starts = self.stats.indptr[:-1]
        outside = np.add.reduceat(np.where(self.in_top, 0.0, ev.entry_prob), starts)
        # the model's distribution within the top SCC, from the scores (a softmax over those entries):
        # entry_prob / (its top-SCC sum) overflows once that sum underflows, on a model that leaks
        with np.errstate(invalid="ignore"):  # a window with no top-SCC entry has no composition (NaN, skipped)
            q = _composition(self.stats, self.in_top, m[self.stats.entry_pair])
        tv = 0.5 * np.add.reduceat(np.abs(q - self.predicted), starts)
        return {"leak_max": float(outside.max()), "leak_mean": float(outside.mean()),
                "composition_max": float(np.nanmax(tv)), "composition_mean": float(np.nanmean(tv)),
                "loss": ev.loss}


def _composition(stats: WindowStats, in_top: np.ndarray, fin_scores: np.ndarray) -> np.ndarray:
    """softmax over top-SCC entries of log c + e_a^T W^fin e_k (0 outside the top SCC)."""
    starts = stats.indptr[:-1]
    rows = stats.rows()
    z = np.where(in_top, stats.entry_logc + fin_scores, -np.inf)
    peak = np.maximum.reduceat(z, starts)
    w = np.where(in_top, np.exp(z - peak[rows]), 0.0)
    return w / np.add.reduceat(w, starts)[rows]


def training_windows(pred) -> WindowSet:
    """The training windows with O_i = positions in the label's SCC (THEORY §4.2)."""
    in_top = pred.graphs.label_scc_entries(pred.corpus)
    fin = pred.score_map.scores(pred.W_fin)[pred.stats.entry_pair]
    return WindowSet(pred.stats, pred.score_map, in_top, _composition(pred.stats, in_top, fin))


def window_set_from_multisets(pred, windows: list[dict[int, int]], queries: list[int]) -> WindowSet:
    """Held-out windows given as token-count dicts (query included) and their query tokens."""
    automaton = pred.automaton()
    kept_rows: list[tuple[list[int], list[int], set[int]]] = []
    skipped = 0
    for counts, k in zip(windows, queries):
        tokens = sorted(counts)
        j = automaton.dominant_scc([t for t in tokens if t != k] + [k])
        if j is None:
            skipped += 1
            continue
        top = set(automaton.queries[k]["scc_indices"][j])
        kept_rows.append((tokens, [counts[t] for t in tokens], top, k))
    if not kept_rows:
        empty = WindowStats(0, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0))
        return WindowSet(empty, ScoreMap(pred.corpus.E, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)),
                         np.zeros(0, bool), np.zeros(0), skipped)
    K = pred.corpus.K
    keys = np.array([k * K + t for tokens, _, _, k in kept_rows for t in tokens], dtype=np.int64)
    pair_keys, entry_pair = np.unique(keys, return_inverse=True)
    lengths = np.array([len(r[0]) for r in kept_rows])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    logc = np.log(np.array([c for r in kept_rows for c in r[1]], dtype=np.float64))
    in_top = np.array([t in r[2] for r in kept_rows for t in r[0]])
    stats = WindowStats(pair_keys.size, indptr, entry_pair, logc, indptr[:-1].copy(),
                        np.full(len(kept_rows), 1.0 / len(kept_rows)))
    score_map = ScoreMap(pred.corpus.E, pair_keys % K, pair_keys // K)
    fin = score_map.scores(pred.W_fin)[entry_pair]
    return WindowSet(stats, score_map, in_top, _composition(stats, in_top, fin), skipped)


def probe_windows(pred, count: int, rng: np.random.Generator, max_size: int = 5) -> tuple[list[dict], list[int]]:
    """Random new windows (THEORY §5.5 [measured]): a multiset of <= max_size tokens seen
    with a query k, plus k itself as the last token."""
    g = pred.graphs
    queries = g.queries
    windows, qs = [], []
    for _ in range(count):
        k = int(queries[rng.integers(queries.size)])
        nodes = g.pair_token[g.query_pairs(k)]
        size = int(rng.integers(1, max_size + 1))
        counts: dict[int, int] = {k: 1}
        for t in rng.choice(nodes, size=size, replace=True):
            counts[int(t)] = counts.get(int(t), 0) + 1
        windows.append(counts)
        qs.append(k)
    return windows, qs


def corpus_windows(corpus) -> tuple[list[dict], list[int]]:
    """Windows of a corpus as token-count dicts (labels are not needed for P14)."""
    out = []
    for i in range(corpus.n):
        lo, hi = corpus.counts.indptr[i], corpus.counts.indptr[i + 1]
        out.append(dict(zip(corpus.counts.indices[lo:hi].tolist(), corpus.counts.data[lo:hi].tolist())))
    return out, corpus.last.tolist()


class TrajectoryMetrics:
    """metrics(W) at a checkpoint; ``target`` is the direction the run should approach."""

    def __init__(self, pred, target: np.ndarray | None = None, heldout: WindowSet | None = None):
        self.pred = pred
        self.target = pred.W_svm if target is None else target
        self.train = training_windows(pred)
        self.heldout = heldout
        self.fin_coords = pred.subspace.coords(pred.W_fin)
        self.loss_infimum = pred.finite.loss
        cross = ~pred.graphs.edge_same_scc
        self.cross_src = pred.graphs.edge_src[cross]
        self.cross_dst = pred.graphs.edge_dst[cross]
        self.target_sq = float(np.sum(self.target * self.target))
        self._previous_orthogonal: np.ndarray | None = None

    def __call__(self, W: np.ndarray) -> dict:
        pred = self.pred
        m = pred.score_map.scores(W)
        train = self.train.errors(W, scores=m)
        proj = pred.subspace.project(W)
        orthogonal = W - proj
        # direction in which the diverging part moved since the previous checkpoint: it
        # approaches the limit direction much faster than W/||W|| (the offset cancels)
        increment = None
        if self._previous_orthogonal is not None:
            increment = frobenius_cos(orthogonal - self._previous_orthogonal, self.target)
        self._previous_orthogonal = orthogonal
        out = {
            "loss": train.pop("loss"),
            "loss_gap": None,
            "norm": float(np.linalg.norm(W)),
            "cos_svm": frobenius_cos(W, self.target),
            "cos_svm_orthogonal_part": frobenius_cos(orthogonal, self.target),
            "cos_svm_increment": increment,
            "fin_distance": float(np.linalg.norm(pred.subspace.coords(W) - self.fin_coords)),
            "R_hat": float(np.sum((W - pred.W_fin) * self.target) / self.target_sq) if self.target_sq > 0 else 0.0,
            "min_cross_margin": float((m[self.cross_src] - m[self.cross_dst]).min()) if self.cross_src.size else None,
            **{f"train_{k}": v for k, v in train.items()},
        }
        out["loss_gap"] = out["loss"] - self.loss_infimum
        if self.heldout is not None and self.heldout.size:
            held = self.heldout.errors(W)
            held.pop("loss")
            out.update({f"heldout_{k}": v for k, v in held.items()})
        return out
