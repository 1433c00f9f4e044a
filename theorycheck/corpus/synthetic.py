"""Synthetic corpora with the knobs of the papers' experiments (THEORY.md §1.1, §6).

Windows of T tokens, distinct when T <= K (sampled without replacement, as in the
official experiments); the last token is the query.  The label is uniform over the
vocabulary and, when absent from the window, replaced by the token at a uniformly
random position (so every window is realizable).  ``graphs="acyclic"`` redraws the
dataset until every TPG is acyclic, ``"cyclic"`` until some TPG has a cyclic SCC.

Embeddings: ``one-hot`` (d = K), ``orthonormal`` (first K rows of the Q factor of a
Gaussian d×d matrix, K <= d), ``unit-norm`` (Gaussian rows scaled to norm 1),
``equi-correlated`` (e_i = sqrt(rho) c_0 + sqrt(1-rho) c_i with orthonormal c, K < d).
"""

from __future__ import annotations

import numpy as np

from theorycheck.corpus.types import Corpus, corpus_from_windows
from theorycheck.errors import InputError

EMBEDDING_KINDS = ("one-hot", "orthonormal", "unit-norm", "equi-correlated")
GRAPH_FILTERS = ("any", "acyclic", "cyclic")


def make_embeddings(kind: str, K: int, d: int, rng: np.random.Generator, rho: float = 0.5) -> np.ndarray:
    if kind == "one-hot":
        return np.eye(K)
    if kind == "orthonormal":
        if K > d:
            raise InputError(f"orthonormal embeddings need K <= d (got K={K}, d={d}); raise d")
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        return Q[:K].copy()
    if kind == "unit-norm":
        E = rng.standard_normal((K, d))
        return E / np.linalg.norm(E, axis=1, keepdims=True)
    if kind == "equi-correlated":
        if K + 1 > d:
            raise InputError(f"equi-correlated embeddings need K < d (got K={K}, d={d}); raise d")
        if not 0.0 <= rho < 1.0:
            raise InputError(f"rho must lie in [0, 1) (got {rho})")
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        return np.sqrt(rho) * Q[0][None, :] + np.sqrt(1.0 - rho) * Q[1 : K + 1]
    raise InputError(f"unknown embeddings {kind!r}; use one of {', '.join(EMBEDDING_KINDS)}")


def _draw(n: int, T: int, K: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    if T <= K:
        windows = [rng.permutation(K)[:T] for _ in range(n)]
    else:
        windows = [rng.integers(0, K, size=T) for _ in range(n)]
    labels = rng.integers(0, K, size=n)
    for i, w in enumerate(windows):
        if labels[i] not in w:
            labels[i] = w[rng.integers(0, T)]
    return windows, labels


# Rough costs of one draw (measured on the 2-core development machine, with margin): a Python
# loop over the windows, a permutation of the vocabulary per window when T <= K.
DRAW_BUDGET_S = 10.0  # graphs=acyclic/cyclic redraws stop after about this long
MAX_DRAW_S = 120.0  # one draw longer than this is refused up front
BYTES_PER_WINDOW = 300  # Python and numpy object overhead per window
BYTES_PER_POSITION = 80  # int64 ids, counts, CSR construction and the graph edges, per token position


def draw_seconds(n: int, T: int, K: int) -> float:
    return 5e-4 + n * (7e-6 + 1e-9 * (K if T <= K else T))


def check_size(n: int, T: int, K: int, d: int) -> None:
    """Refuse (exit 2) synthetic sizes that cannot fit in memory or would run for many minutes."""
    from theorycheck.corpus.readers import check_memory, physical_memory

    check_memory(K, d)
    need = n * (BYTES_PER_WINDOW + BYTES_PER_POSITION * T)
    total = physical_memory()
    if total is not None and need > 0.5 * total:
        raise InputError(f"synthetic corpus n={n}, T={T} needs about {need / 2**30:.1f} GiB but this machine "
                         f"has {total / 2**30:.1f} GiB; lower n or T")
    seconds = draw_seconds(n, T, K)
    if seconds > MAX_DRAW_S:
        raise InputError(f"synthetic corpus n={n}, T={T}, K={K} would take about {seconds / 60:.0f} minutes "
                         "to generate; lower n (or K)")


def synthetic(
    n: int = 6,
    T: int = 4,
    K: int = 6,
    d: int | None = None,
    embeddings: str = "one-hot",
    rho: float = 0.5,
    graphs: str = "any",
    seed: int = 0,
    max_tries: int = 10_000,
) -> Corpus:
    """A seeded synthetic corpus; see the module docstring for the knobs."""
    from theorycheck.graphs import build_graphs

    if n < 1 or T < 2 or K < 2:
        raise InputError(f"synthetic corpus needs n >= 1, T >= 2, K >= 2 (got n={n}, T={T}, K={K})")
    if d is not None and d < 1:
        raise InputError(f"synthetic corpus needs a dimension d >= 1 (got d={d}); e.g. d={K}")
    if seed < 0:
        raise InputError(f"synthetic seed must be a non-negative integer (got seed={seed})")
    if graphs not in GRAPH_FILTERS:
        raise InputError(f"unknown graph filter {graphs!r}; use one of {', '.join(GRAPH_FILTERS)}")
    if embeddings not in EMBEDDING_KINDS:
        raise InputError(f"unknown embeddings {embeddings!r}; use one of {', '.join(EMBEDDING_KINDS)}")
    d = K if d is None or embeddings == "one-hot" else d
    check_size(n, T, K, d)
    rng = np.random.default_rng(seed)
    E = make_embeddings(embeddings, K, d, rng, rho)
    vocab = tuple(f"t{i}" for i in range(K))
    tries = max_tries if graphs == "any" else min(max_tries, max(20, int(DRAW_BUDGET_S / draw_seconds(n, T, K))))
    for _ in range(tries):
        windows, labels = _draw(n, T, K, rng)
        corpus = corpus_from_windows(windows, labels, vocab, E=E, embedding_kind=embeddings,
                                     source=f"synthetic(n={n}, T={T}, K={K}, d={d}, embeddings={embeddings}, "
                                            f"graphs={graphs}, seed={seed})")
        if graphs == "any":
            return corpus
        cyclic = bool((build_graphs(corpus).scc_size >= 2).any())
        if cyclic == (graphs == "cyclic"):
            return corpus
    raise InputError(f"no {graphs} dataset found in {tries} draws; change n, T or K (or graphs=any)")


SPEC_KEYS = {"n": int, "T": int, "K": int, "d": int, "embeddings": str, "rho": float, "graphs": str, "seed": int}


def parse_spec(spec: str) -> dict:
    """``synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1`` -> kwargs."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    out: dict = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        if "=" not in part:
            raise InputError(f"synthetic spec part {part!r} is not key=value; e.g. synthetic:n=6,T=4,K=6")
        key, value = (x.strip() for x in part.split("=", 1))
        if key not in SPEC_KEYS:
            raise InputError(f"unknown synthetic key {key!r}; use {', '.join(SPEC_KEYS)}")
        if key in out:
            raise InputError(f"synthetic key {key} is given twice; give each key once")
        try:
            out[key] = SPEC_KEYS[key](value)
        except ValueError:
            raise InputError(f"synthetic key {key} needs a {SPEC_KEYS[key].__name__}, got {value!r}") from None
    return out
