"""The Corpus type: windows stored as sufficient statistics.

With no positional encoding a window enters the loss only through
(last token k, label y, token counts c), THEORY.md §1.3-§1.5, so that is how
samples are stored: ``counts`` is a sparse n×K matrix whose row i counts every
position of window i, the last position included (it is also a key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from theorycheck.errors import InputError


@dataclass(frozen=True)
class Corpus:
    """A training set of windows over a vocabulary with embeddings.

    Attributes
    ----------
    vocab : token strings in matrix index order (row i of ``E`` embeds ``vocab[i]``).
    E : K×d float64 embeddings, rows are e_k^T.
    last : (n,) int, the query token k_i of each window.
    label : (n,) int, the next token y_i.
    counts : n×K CSR int matrix, token counts over all T_i positions.
    embedding_kind : "one-hot", "orthonormal", "unit-norm", "equi-correlated", "file", ...
    source : human-readable description of where the data came from.
    stats : reader statistics (windows read, tokens dropped, ...).
    """

    vocab: tuple[str, ...]
    E: np.ndarray
    last: np.ndarray
    label: np.ndarray
    counts: sp.csr_matrix
    embedding_kind: str = "one-hot"
    source: str = ""
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        K = len(self.vocab)
        if self.E.ndim != 2 or self.E.shape[0] != K:
            raise InputError(
                f"embeddings have shape {self.E.shape} but the vocabulary has {K} tokens; "
                "give one vector per token"
            )
        if not np.all(np.isfinite(self.E)):
            raise InputError("embeddings contain NaN or infinite values; give finite vectors")
        n = self.last.shape[0]
        if self.label.shape != (n,) or self.counts.shape != (n, K):
            raise InputError("corpus arrays disagree in length; this is a bug in the reader")
        for arr in (self.E, self.last, self.label):
            arr.setflags(write=False)

    # -- sizes -------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.last.shape[0])

    @property
    def K(self) -> int:
        return len(self.vocab)

    @property
    def d(self) -> int:
        return int(self.E.shape[1])

    # -- realizability (THEORY.md §1.2) ---------------------------------------
    def realizable_mask(self) -> np.ndarray:
        """True where the label occurs in its own window (p_W(y|X) can be > 0)."""
        return np.asarray(self.counts[np.arange(self.n), self.label]).ravel() > 0

    def subset(self, mask: np.ndarray, note: str | None = None) -> Corpus:
        mask = np.asarray(mask, dtype=bool)
        stats = dict(self.stats)
        if note:
            stats[note] = int((~mask).sum())
        return Corpus(
            vocab=self.vocab,
            E=self.E,
            last=self.last[mask].copy(),
            label=self.label[mask].copy(),
            counts=self.counts[mask].tocsr(),
            embedding_kind=self.embedding_kind,
            source=self.source,
            stats=stats,
        )

    def realizable(self, strict: bool = False) -> Corpus:
        """Drop (and count) windows whose label is absent; ``strict`` makes that an error."""
        mask = self.realizable_mask()
        dropped = int((~mask).sum())
        if dropped and strict:
            first = int(np.flatnonzero(~mask)[0])
            raise InputError(
                f"{dropped} of {self.n} windows have a label that does not occur in the window "
                f"(first: window {first}, label {self.vocab[self.label[first]]!r}); the model can only "
                "predict tokens in its window. Drop --strict to skip such windows"
            )
        out = self.subset(mask, note="unrealizable_dropped")
        out.stats["windows_before_realizability"] = self.n
        return out

    def token_ids(self, tokens: list[str]) -> list[int]:
        index = {t: i for i, t in enumerate(self.vocab)}
        missing = [t for t in tokens if t not in index]
        if missing:
            raise InputError(
                f"token(s) {missing[:5]} are not in the vocabulary; use tokens from results.json "
                "'vocabulary'"
            )
        return [index[t] for t in tokens]

    def gram(self) -> np.ndarray:
        """G = E E^T (K×K)."""
        return self.E @ self.E.T

    @cached_property
    def one_hot(self) -> bool:
        return is_one_hot(self.E)

    @cached_property
    def orthonormal(self) -> bool:
        return self.one_hot or is_orthonormal(self.E)

    @cached_property
    def embedding_rank(self) -> int:
        """Numerical rank of E (relative tolerance 1e-10: the same for E at every scale)."""
        if self.orthonormal:
            return self.K
        s = np.linalg.svd(self.E, compute_uv=False)
        return int((s > 1e-10 * (s[0] if s.size else 0.0)).sum())

    def summary(self) -> dict:
        return {
            "windows": self.n,
            "vocabulary": self.K,
            "dimension": self.d,
            "embeddings": self.embedding_kind,
            "queries": int(np.unique(self.last).size) if self.n else 0,
            "mean_window_length": float(self.counts.sum() / self.n) if self.n else 0.0,
            **{k: v for k, v in self.stats.items()},
        }


def embedding_scale(E: np.ndarray) -> float:
    """The power of two nearest the largest row norm of E (1.0 for E = 0).

    The predictions see E only through x_a^T W x_k, bilinear in E: W^svm and W^fin for E are
    those for E / s divided by s^2, and with s a power of two both divisions are exact.  The
    solvers run on E / s (largest row norm in [0.71, 1.41]), so that their absolute tolerances
    mean the same for embeddings of every magnitude (at 1e-3 or 1e3 the Frobenius solvers had
    returned wrong answers as "optimal", and W^fin had stopped 11 % short at 1e-3)."""
    peak = float(np.abs(E).max(initial=0.0)) if E.size else 0.0
    if not (peak > 0 and np.isfinite(peak)):
        return 1.0
    if 1e-150 < peak < 1e150:  # squares stay in range: no copy of E (200 MB one-hot at V = 5,000)
        top = float(np.sqrt(np.einsum("ij,ij->i", E, E).max()))
    else:  # squares of entries near 1e-200 would underflow to a norm of 0
        unit = E / peak
        top = peak * float(np.sqrt(np.einsum("ij,ij->i", unit, unit).max()))
    return float(2.0 ** np.round(np.log2(top)))


def is_one_hot(E: np.ndarray) -> bool:
    """E = I exactly (one-hot embeddings), tested without forming the K×K identity (200 MB at
    K = 5,000, half a second of the Graph-SVM there)."""
    K, d = E.shape
    return d == K and int(np.count_nonzero(E)) == K and bool(np.all(np.diagonal(E) == 1.0))


def is_orthonormal(E: np.ndarray, tol: float = 1e-10) -> bool:
    """E E^T = I (rows orthonormal), entrywise within ``tol``."""
    K, d = E.shape
    if is_one_hot(E):
        return True
    return bool(np.allclose(E @ E.T, np.eye(K), atol=tol, rtol=0))


def _equal_length_counts(windows: np.ndarray, K: int) -> sp.csr_matrix:
    """Token counts per window (rows) in canonical CSR (sorted, no duplicates), from windows of
    one length: a row sort and run lengths instead of a COO sum (0.3 s against 1.2 s for
    490,000 windows of 32)."""
    n, T = windows.shape
    if windows.size and (windows.min() < 0 or windows.max() >= K):
        raise ValueError(f"token ids must lie in [0, {K})")
    ordered = np.sort(windows, axis=1)
    starts = np.ones((n, T), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    flat_starts = np.flatnonzero(starts)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(starts.sum(axis=1), out=indptr[1:])
    data = np.diff(np.r_[flat_starts, n * T])  # each row begins a run, so runs never cross rows
    return sp.csr_matrix((data, ordered.ravel()[flat_starts], indptr), shape=(n, K))


def corpus_from_windows(
    windows: list[list[int]] | list[np.ndarray],
    labels: list[int] | np.ndarray,
    vocab: tuple[str, ...],
    E: np.ndarray | None = None,
    embedding_kind: str = "one-hot",
    source: str = "",
    stats: dict | None = None,
) -> Corpus:
    """Build a Corpus from token-id windows (a list, or a 2-D array of equal-length windows as
    rows); the last id of each window is the query."""
    K = len(vocab)
    n = len(windows)
    if n == 0:
        raise InputError("the corpus has no windows; give at least one sample")
    if isinstance(windows, np.ndarray) and windows.ndim == 2:
        if windows.shape[1] < 1:
            raise InputError("a window is empty; every sample needs at least the query token")
        counts = _equal_length_counts(windows.astype(np.int64, copy=False), K)
        last = windows[:, -1]
    else:
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=n)
        if lengths.min() < 1:
            raise InputError("a window is empty; every sample needs at least the query token")
        flat = np.concatenate([np.asarray(w, dtype=np.int64) for w in windows])
        rows = np.repeat(np.arange(n), lengths)
        counts = sp.csr_matrix((np.ones_like(flat), (rows, flat)), shape=(n, K), dtype=np.int64)
        counts.sum_duplicates()
        last = flat[np.cumsum(lengths) - 1]
    if E is None:
        E = np.eye(K)
    st = {"windows_read": n}
    st.update(stats or {})
    return Corpus(
        vocab=tuple(vocab),
        E=np.asarray(E, dtype=np.float64),
        last=last.astype(np.int64),
        label=np.asarray(labels, dtype=np.int64),
        counts=counts,
        embedding_kind=embedding_kind,
        source=source,
        stats=st,
    )
