"""The paper's synthetic sequence classes (THEORY-scansnap.md §1.2, §4.1-§4.2).

Layout of the vocabulary (the authors' ``Dataset2``, §4.1 [code]): ``common`` global
common tokens c0.. (weight ``common_weight`` in every class), ``distinct`` distinct
tokens per class d<n>_0.. with weights linspace(``distinct_low``, ``distinct_high``),
``cross`` tokens x0.. shared by the *first* class of every query (globally common,
locally distinct: the residual variant of §3.8 treats them as distinct), then the
query tokens q0.. and the next tokens n0..  Class n has query psi(n) = n // (K / queries).
Contexts of T-1 tokens are drawn i.i.d. from P(.|n) (multinomial counts, as the code
draws with replacement); the window stored in the Corpus is context + query.

Syn-Small (Fig. 6 layout, M = 33): K=2, queries=1, common=10, distinct=10, T=128.
Syn-Medium: K=6, queries=3 (M = 79).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from theorycheck.corpus.types import Corpus
from theorycheck.errors import InputError

# per class; 2048 keeps the Hoeffding radius of P-hat(l|n) at T=128 below 0.003
DEFAULT_PER_CLASS = 2048


def class_distributions(K: int, queries: int, common: int, distinct: int, cross: int,
                        common_weight: float = 1.0, distinct_low: float = 0.1,
                        distinct_high: float = 1.0) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(vocab, P (K×M), query id of each class, next-token id of each class)."""
    if K < 1 or queries < 1 or K % queries:
        raise InputError(f"scansnap spec needs K a positive multiple of queries (got K={K}, queries={queries})")
    if common < 0 or distinct < 0 or cross < 0 or common + distinct + cross == 0:
        raise InputError("scansnap spec needs common, distinct, cross >= 0 and at least one context token")
    if not (common_weight > 0 and 0 < distinct_low <= distinct_high):
        raise InputError("scansnap weights must be positive with distinct_low <= distinct_high")
    vocab = ([f"c{i}" for i in range(common)]
             + [f"d{n}_{k}" for n in range(K) for k in range(distinct)]
             + [f"x{i}" for i in range(cross)]
             + [f"q{m}" for m in range(queries)]
             + [f"n{n}" for n in range(K)])
    M = len(vocab)
    per_query = K // queries
    query_of_class = common + K * distinct + cross + np.arange(K) // per_query
    next_of_class = common + K * distinct + cross + queries + np.arange(K)
    weights = np.zeros((K, M))
    weights[:, :common] = common_weight
    ramp = np.linspace(distinct_low, distinct_high, distinct)
    for n in range(K):
        weights[n, common + n * distinct: common + (n + 1) * distinct] = ramp
        if n % per_query == 0:
            weights[n, common + K * distinct: common + K * distinct + cross] = common_weight
    P = weights / weights.sum(axis=1, keepdims=True)
    return tuple(vocab), P, query_of_class, next_of_class


def scansnap_synthetic(K: int = 2, queries: int = 1, common: int = 10, distinct: int = 10,
                       cross: int = 0, T: int = 128, n: int = DEFAULT_PER_CLASS, seed: int = 0,
                       common_weight: float = 1.0, distinct_low: float = 0.1,
                       distinct_high: float = 1.0) -> Corpus:
    """``n`` samples per class of length T (T-1 context tokens + the query)."""
    if T < 2 or n < 1:
        raise InputError(f"scansnap spec needs T >= 2 and n >= 1 (got T={T}, n={n})")
    check_scansnap_size(K, n, common + K * distinct + cross + K + queries)
    vocab, P, query_of_class, next_of_class = class_distributions(
        K, queries, common, distinct, cross, common_weight, distinct_low, distinct_high)
    M = len(vocab)
    rng = np.random.default_rng(seed)
    context = np.concatenate([rng.multinomial(T - 1, P[c], size=n) for c in range(K)])
    cls = np.repeat(np.arange(K), n)
    last = query_of_class[cls]
    counts = context.copy()
    counts[np.arange(counts.shape[0]), last] += 1
    source = (f"scansnap(K={K}, queries={queries}, common={common}, distinct={distinct}, cross={cross}, "
              f"T={T}, n={n}, seed={seed})")
    return Corpus(
        vocab=vocab, E=np.eye(M), last=last.astype(np.int64), label=next_of_class[cls].astype(np.int64),
        counts=sp.csr_matrix(counts.astype(np.int64)), embedding_kind="one-hot", source=source,
        stats={"windows_read": int(K * n), "generator": "scansnap", "window": T},
    )


BYTES_PER_CELL = 24  # the dense K·n × M count matrix (int64), its copy and the CSR built from it
BYTES_PER_TOKEN = 200  # a vocabulary string and its share of the per-token arrays


def check_scansnap_size(K: int, n: int, M: int) -> None:
    """Refuse (exit 2) a spec whose samples cannot fit in memory, before drawing anything."""
    from theorycheck.corpus.readers import physical_memory

    need = BYTES_PER_CELL * K * n * M + BYTES_PER_TOKEN * M
    total = physical_memory()
    if total is not None and need > 0.5 * total:
        raise InputError(f"scansnap corpus K={K}, n={n} per class over M={M} tokens needs about {need / 2**30:.1f} GiB "
                         f"but this machine has {total / 2**30:.1f} GiB; lower n (samples per class), K or the token "
                         "counts")


SPEC_KEYS = {"K": int, "queries": int, "common": int, "distinct": int, "cross": int, "T": int,
             "n": int, "seed": int, "common_weight": float, "distinct_low": float, "distinct_high": float}


def parse_scansnap_spec(spec: str) -> dict:
    """``scansnap:K=2,queries=1,common=10,distinct=10,T=128,n=2048,seed=1`` -> kwargs."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    out: dict = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        if "=" not in part:
            raise InputError(f"scansnap spec part {part!r} is not key=value; e.g. scansnap:K=2,T=128,seed=1")
        key, value = (x.strip() for x in part.split("=", 1))
        if key not in SPEC_KEYS:
            raise InputError(f"unknown scansnap key {key!r}; use {', '.join(SPEC_KEYS)}")
        try:
            out[key] = SPEC_KEYS[key](value)
        except ValueError:
            raise InputError(f"scansnap key {key} needs a {SPEC_KEYS[key].__name__}, got {value!r}") from None
    return out
