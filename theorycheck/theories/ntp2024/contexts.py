"""Distinct contexts of a corpus for the NTP-SVM theory (THEORY-ntp.md §1).

A context j has an embedding h_j in R^d, a frequency pi_j (its share of the windows) and an
empirical next-token distribution p_j over the vocabulary [V] with support S_j.  Two ways a
window becomes a context:

* ``last``: the window's last token k, h_j = e_k (the bigram case);
* ``window-mean``: the window's multiset of tokens, h_j = the mean of their embeddings.

The label is the window's next token; it need not occur in the window.

Computations run in the coordinates of the contexts' span: with B (d×r) an orthonormal basis
of span{h_j}, every gradient of L lies in {C B^T}, so W(t) = W(0)(I - B B^T) + C(t) B^T and
the logits are C Hr^T with Hr = H B (m×r).  When the h_j are orthonormal (one-hot or
orthonormal embeddings with ``last``), B = H^T and Hr = I: each context is one column of C,
independent of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from theorycheck.corpus.types import Corpus, embedding_scale
from theorycheck.errors import AssumptionViolated, InputError

CONTEXT_KINDS = ("last", "window-mean")
ORTHONORMAL_TOL = 1e-10
RANK_TOL = 1e-10  # relative singular-value cut for the span of the contexts


@dataclass(frozen=True, eq=False)
class Contexts:
    """The m distinct contexts of a corpus.

    H: m×d context embeddings (rows h_j); pi: (m,) frequencies; P: m×V CSR of the empirical
    next-token distributions p_j (its sparsity pattern is the supports S_j); names: a short
    and members the tokens that make each context; basis: d×r orthonormal basis B of span{h_j}; Hr = H B.
    """

    kind: str
    vocab: tuple[str, ...]
    H: np.ndarray
    pi: np.ndarray
    P: sp.csr_matrix
    members: sp.csr_matrix  # m×K token counts of each context (its last token for ``last``)
    basis: np.ndarray
    Hr: np.ndarray
    independent: bool  # Hr = I: the problem splits into one column per context
    windows: int

    @property
    def m(self) -> int:
        return int(self.H.shape[0])

    @property
    def V(self) -> int:
        return len(self.vocab)

    @property
    def d(self) -> int:
        return int(self.H.shape[1])

    @property
    def r(self) -> int:
        return int(self.basis.shape[1])

    @cached_property
    def support_sizes(self) -> np.ndarray:
        return np.diff(self.P.indptr)

    @cached_property
    def log_p(self) -> sp.csr_matrix:
        """log p_{j,z} on the supports (same pattern as P)."""
        out = self.P.copy()
        out.data = np.log(out.data)
        return out

    @cached_property
    def entropy(self) -> float:
        """H = sum_j pi_j H(p_j), the infimum of L (THEORY-ntp §1)."""
        per_context = -np.asarray(self.P.multiply(self.log_p).sum(axis=1)).ravel()
        return float(self.pi @ per_context)

    @property
    def full_support(self) -> np.ndarray:
        """Contexts whose support is the whole vocabulary (no inequality, W^mm column 0)."""
        return self.support_sizes == self.V

    def name(self, j: int) -> str:
        """The tokens of context j, e.g. 'the' or 'of×2 the' (window-mean)."""
        row = self.members[j]
        return " ".join(self.vocab[int(t)] + (f"×{int(c)}" if c > 1 else "") for t, c in zip(row.indices, row.data))

    def to_coords(self, W: np.ndarray) -> np.ndarray:
        """C = W B: the part of a V×d matrix that the logits see."""
        return W @ self.basis

    def to_matrix(self, C: np.ndarray) -> np.ndarray:
        """W = C B^T (V×d, logits = W h)."""
        return C @ self.basis.T

    def logits(self, C: np.ndarray) -> np.ndarray:
        """V×m logits (W h_j in column j) from coordinates C."""
        return C if self.independent else C @ self.Hr.T

    def unit_scale(self) -> tuple[Contexts, float]:
        """(the contexts H / s, s): s = ``embedding_scale(Hr)``, a power of two, so the division is
        exact; logits C Hr^T are linear in Hr, so C on H / s is s C on H (1 for orthonormal contexts)."""
        scale = 1.0 if self.independent else embedding_scale(self.Hr)
        return (self if scale == 1.0 else replace(self, H=self.H / scale, Hr=self.Hr / scale)), scale

    def summary(self) -> dict:
        s = self.support_sizes
        return {"kind": self.kind, "contexts": self.m, "vocabulary": self.V, "dimension": self.d,
                "span_rank": self.r, "windows": self.windows, "independent": self.independent,
                "support_size_min": int(s.min()) if s.size else 0, "support_size_max": int(s.max()) if s.size else 0,
                "support_size_mean": float(s.mean()) if s.size else 0.0,
                "full_support_contexts": int(self.full_support.sum()), "entropy": self.entropy}


def _group_rows(keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(context index of each window, first window of each context), contexts in first-seen order."""
    index: dict[bytes, int] = {}
    of_window = np.empty(len(keys), dtype=np.int64)
    first = []
    for i, key in enumerate(keys):
        j = index.get(key)
        if j is None:
            j = index[key] = len(first)
            first.append(i)
        of_window[i] = j
    return of_window, np.asarray(first, dtype=np.int64)


def build_contexts(corpus: Corpus, kind: str = "last") -> Contexts:
    """Group the windows of ``corpus`` into distinct contexts (THEORY-ntp §1)."""
    if kind not in CONTEXT_KINDS:
        raise InputError(f"unknown context {kind!r}; use one of {', '.join(CONTEXT_KINDS)}")
    if corpus.n == 0:
        raise AssumptionViolated("the corpus has no window, so there is no context to learn from; "
                                 "use a longer text or a shorter --window")
    E = corpus.E
    vocab = corpus.vocab
    if kind == "last":
        tokens, of_window = np.unique(corpus.last, return_inverse=True)
        H = E[tokens]
        members = sp.csr_matrix((np.ones(tokens.size), (np.arange(tokens.size), tokens)), shape=(tokens.size, corpus.K))
    else:
        counts = corpus.counts.tocsr()
        counts.sort_indices()
        keys = [counts.indices[a:b].tobytes() + b"|" + counts.data[a:b].tobytes()
                for a, b in zip(counts.indptr[:-1], counts.indptr[1:])]
        of_window, first = _group_rows(keys)
        rows = counts[first].astype(np.float64)
        lengths = np.asarray(rows.sum(axis=1)).ravel()
        H = np.asarray((sp.diags(1.0 / lengths) @ rows) @ E)
        members = rows.tocsr()
    m = H.shape[0]
    n = corpus.n
    table = sp.csr_matrix((np.ones(n), (of_window, corpus.label)), shape=(m, corpus.K))
    table.sum_duplicates()
    totals = np.asarray(table.sum(axis=1)).ravel()
    P = sp.csr_matrix(sp.diags(1.0 / totals) @ table)
    P.sort_indices()
    pi = totals / n
    if kind == "last" and corpus.orthonormal:  # distinct rows of an orthonormal E: no Gram matrix to form
        basis, Hr, independent = H.T.copy(), np.eye(m), True
    else:
        basis, Hr, independent = context_basis(H)
    return Contexts(kind, vocab, np.ascontiguousarray(H, dtype=np.float64), pi, P, members, basis, Hr, independent, n)


def context_basis(H: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(B, Hr = H B, independent): B = H^T when the rows of H are orthonormal, else an
    orthonormal basis of the row space of H from its SVD (rank cut RANK_TOL·sigma_max)."""
    m, d = H.shape
    if m <= d and np.abs(H @ H.T - np.eye(m)).max(initial=0.0) <= ORTHONORMAL_TOL:  # m > d rows cannot be
        return H.T.copy(), np.eye(m), True
    _, sigma, Vt = np.linalg.svd(H, full_matrices=False)
    if not sigma.size or sigma[0] == 0:
        raise InputError("every context embedding is zero; give non-zero embeddings")
    rank = int(np.sum(sigma > RANK_TOL * sigma[0]))
    B = Vt[:rank].T
    return B, H @ B, False
