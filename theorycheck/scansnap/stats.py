"""Corpus statistics of Tian et al. (THEORY-scansnap.md §1.2, §1.6, §2, §5.1).

A sample is (context multiset, query m, next token n).  Tian's query does not attend
to itself, so the context counts are the Corpus' window counts minus one at the last
(query) position.  The label need not occur in the window, so the full corpus is used
(not ``Corpus.realizable()``).

* sequence classes: the distinct pairs (m, n); psi is well defined when every next
  token n has exactly one query m.
* P-hat(l|m,n) = mean over the class' samples of count_i(l) / (T_i - 1)   (§5.1).
* Hoeffding radius of a class mean: r_{m,n} = sqrt(ln(2/delta) / (2 (T-1) N_{m,n})).
* support(m,n) = {l : P-hat(l|m,n) > support_factor * r_{m,n}};  Omega(l) = classes whose
  support holds l.  Distinct token of n: |Omega(l)| = 1; common: |Omega(l)| > 1 (global);
  the local variant restricts Omega to the classes of the same query (§1.2, §3.8).
* eligible (per-token checks): expected context count (T-1) P-hat(l|m,n) >= 5 (§5.1).
* Assumption 2: F = [f_1..f_K], f_n = c_n / ||c_n||, c_n ∝ P-hat(.|n) e^{z_m}  (Eq. 5);
  E = F^T F - I with eigenvalue conditions |lambda_1| < 1/K, min |lambda_i| >= sqrt(6/M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from theorycheck.corpus.types import Corpus
from theorycheck.errors import InputError

DELTA = 0.05
SUPPORT_FACTOR = 2.0
MIN_EXPECTED_COUNT = 5.0
# refuse class × vocabulary tables larger than this (dense float64, ~160 MB)
MAX_TABLE_ENTRIES = 20_000_000


@dataclass(frozen=True, eq=False)
class ScanSnapStats:
    """Sequence classes of a corpus and their co-occurrence statistics.

    Arrays over classes c = 0..C-1 (sorted by (query, next)) and tokens l = 0..M-1.
    """

    vocab: tuple[str, ...]
    context: sp.csr_matrix        # N×M context counts (query position removed), float64
    context_len: np.ndarray       # (N,) T_i - 1
    query: np.ndarray             # (N,) m of each sample
    next: np.ndarray              # (N,) n of each sample
    sample_class: np.ndarray      # (N,) class index
    class_query: np.ndarray       # (C,)
    class_next: np.ndarray        # (C,)
    class_size: np.ndarray        # (C,) N_{m,n}
    class_context_len: np.ndarray  # (C,) mean T-1 of the class
    P: np.ndarray                 # (C, M) P-hat(l | m, n)
    radius: np.ndarray            # (C,) Hoeffding radius of P-hat
    support: np.ndarray           # (C, M) bool
    omega: np.ndarray             # (M,) number of classes whose support holds l
    distinct: np.ndarray          # (C, M) bool, l in G_DT(n) (global)
    common: np.ndarray            # (C, M) bool, l in supp(n) and in G_CT (global)
    local_distinct: np.ndarray    # (C, M) bool, distinct within psi^{-1}(m)
    local_common: np.ndarray      # (C, M) bool
    eligible: np.ndarray          # (C, M) bool, (T-1) P-hat >= min_expected
    delta: float
    support_factor: float
    min_expected: float
    dropped_empty: int            # windows with no context token (query only)

    @property
    def M(self) -> int:
        return len(self.vocab)

    @property
    def C(self) -> int:
        return int(self.class_query.size)

    @property
    def N(self) -> int:
        return int(self.query.size)

    @property
    def queries(self) -> np.ndarray:
        return np.unique(self.class_query)

    def queries_of_next(self) -> dict[int, list[int]]:
        """Next token n -> sorted queries m it follows (psi needs exactly one)."""
        out: dict[int, list[int]] = {}
        for m, n in zip(self.class_query.tolist(), self.class_next.tolist()):
            out.setdefault(n, []).append(m)
        return out

    @property
    def psi_holds(self) -> bool:
        """Every next token follows exactly one query (§1.2: the next token determines the query)."""
        return np.unique(self.class_next).size == self.C

    def psi_violations(self) -> list[tuple[str, list[str]]]:
        return [(self.vocab[n], [self.vocab[m] for m in ms])
                for n, ms in self.queries_of_next().items() if len(ms) > 1]

    def classes_of_query(self, m: int) -> np.ndarray:
        return np.flatnonzero(self.class_query == m)

    def overlap(self) -> np.ndarray:
        """(C, C) bool: supports intersect (classes n, n' overlap, §1.2)."""
        s = self.support.astype(np.float64)
        return (s @ s.T) > 0

    @property
    def common_tokens(self) -> np.ndarray:
        """Global G_CT as token ids."""
        return np.flatnonzero(self.omega > 1)

    def hoeffding_radius_sample(self, c: int) -> float:
        """Per-sample radius sqrt(ln(2/delta) / (2 (T-1))) of Lemma 18."""
        return math.sqrt(math.log(2.0 / self.delta) / (2.0 * self.class_context_len[c]))

    def class_label(self, c: int) -> str:
        return f"({self.vocab[self.class_query[c]]} -> {self.vocab[self.class_next[c]]})"

    def summary(self) -> dict:
        ct = self.common_tokens
        return {
            "samples": self.N,
            "vocabulary_M": self.M,
            "classes_K": self.C,
            "queries": int(self.queries.size),
            "dropped_windows_without_context": self.dropped_empty,
            "mean_context_length": float(self.context_len.mean()),
            "min_class_size": int(self.class_size.min()),
            "max_class_size": int(self.class_size.max()),
            "psi_holds": self.psi_holds,
            "psi_violations": [{"next": n, "queries": ms} for n, ms in self.psi_violations()[:20]],
            "common_tokens": [self.vocab[t] for t in ct[:50]],
            "n_common_tokens": int(ct.size),
            "distinct_per_class": self.distinct.sum(axis=1).tolist() if self.C <= 200 else None,
            "eligible_distinct": int((self.distinct & self.eligible).sum()),
            "eligible_common": int((self.common & self.eligible).sum()),
            "support_threshold": {"delta": self.delta, "factor": self.support_factor,
                                  "max_radius": float(self.radius.max())},
            "eligibility_min_expected_count": self.min_expected,
        }


def context_counts(corpus: Corpus) -> sp.csr_matrix:
    """Window counts minus the query position: Tian's keys are x_1..x_{T-1} (§1.3)."""
    n = corpus.n
    query_one = sp.csr_matrix((np.ones(n), (np.arange(n), corpus.last)), shape=corpus.counts.shape)
    ctx = (corpus.counts.astype(np.float64) - query_one).tocsr()
    ctx.eliminate_zeros()
    return ctx


def corpus_statistics(corpus: Corpus, delta: float = DELTA, support_factor: float = SUPPORT_FACTOR,
                      min_expected: float = MIN_EXPECTED_COUNT) -> ScanSnapStats:
    """Sequence classes and co-occurrence statistics of ``corpus`` (see the module docstring)."""
    if not 0 < delta < 1:
        raise InputError(f"delta must lie in (0, 1) (got {delta})")
    M = corpus.K
    ctx = context_counts(corpus)
    length = np.asarray(ctx.sum(axis=1)).ravel()
    keep = length > 0
    dropped = int((~keep).sum())
    if not keep.any():
        raise InputError("no window has a context token besides the query; use windows of length 2 or more")
    if dropped:
        ctx = ctx[keep]
        length = length[keep]
    query = corpus.last[keep].astype(np.int64)
    nxt = corpus.label[keep].astype(np.int64)
    keys, sample_class = np.unique(query * M + nxt, return_inverse=True)
    sample_class = sample_class.ravel()
    C = keys.size
    if C * M > MAX_TABLE_ENTRIES:
        raise InputError(f"{C} (query, next) classes × {M} tokens is too large a table; lower --vocab or --window")
    class_query, class_next = keys // M, keys % M
    N = query.size
    class_size = np.bincount(sample_class, minlength=C)
    member = sp.csr_matrix((np.ones(N), (sample_class, np.arange(N))), shape=(C, N))
    freq = sp.diags(1.0 / length) @ ctx
    P = np.asarray((member @ freq).todense()) / class_size[:, None]
    class_len = np.bincount(sample_class, weights=length, minlength=C) / class_size
    radius = np.sqrt(np.log(2.0 / delta) / (2.0 * class_len * class_size))
    support = P > support_factor * radius[:, None]
    omega = support.sum(axis=0)
    distinct = support & (omega == 1)[None, :]
    common = support & (omega > 1)[None, :]
    # local variant: Omega restricted to the classes of the same query
    local_omega = np.zeros_like(P, dtype=np.int64)
    for m in np.unique(class_query):
        rows = class_query == m
        local_omega[rows] = support[rows].sum(axis=0)[None, :]
    local_distinct = support & (local_omega == 1)
    local_common = support & (local_omega > 1)
    eligible = class_len[:, None] * P >= min_expected
    return ScanSnapStats(
        vocab=corpus.vocab, context=ctx.tocsr(), context_len=length, query=query, next=nxt,
        sample_class=sample_class, class_query=class_query, class_next=class_next,
        class_size=class_size, class_context_len=class_len, P=P, radius=radius, support=support,
        omega=omega, distinct=distinct, common=common, local_distinct=local_distinct,
        local_common=local_common, eligible=eligible, delta=delta, support_factor=support_factor,
        min_expected=min_expected, dropped_empty=dropped,
    )


def population_attention(P: np.ndarray, Zq: np.ndarray) -> np.ndarray:
    """c_{l|m,n} = P(l|m,n) e^{z_ml} / sum_l' P(l'|m,n) e^{z_ml'}   (Eq. 5, Lemma 2).

    ``Zq`` holds the query row z_m of every class (C×M).  Tokens with P = 0 get 0.
    """
    present = P > 0
    logits = np.where(present, Zq, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    w = P * np.exp(logits - top)  # exp(-inf) = 0 for absent tokens, no overflow
    return w / w.sum(axis=1, keepdims=True)


def assumption2(c: np.ndarray) -> dict:
    """Assumption 2 from the class attention vectors c (C×M): E = F^T F - I, f_n = c_n/||c_n||."""
    C, M = c.shape
    F = (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    E = F.T @ F - np.eye(C)
    lam = np.linalg.eigvalsh((E + E.T) / 2)
    abs_lam = np.abs(lam)
    lam1 = float(abs_lam.max()) if C else 0.0
    lam_min = float(abs_lam.min()) if C else 0.0
    upper = lam1 < 1.0 / C
    lower = lam_min >= math.sqrt(6.0 / M)
    return {
        "holds": bool(upper and lower),
        "max_abs_eigenvalue": lam1,
        "bound_1_over_K": 1.0 / C,
        "min_abs_eigenvalue": lam_min,
        "bound_sqrt_6_over_M": math.sqrt(6.0 / M),
        "M_over_K_squared": M / C**2,
        "max_offdiagonal": float((E - np.diag(np.diag(E))).max()) if C > 1 else 0.0,
        "eigenvalues": lam.tolist() if C <= 50 else None,
    }
