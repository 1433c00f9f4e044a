"""Candidate datasets for counterexample search: generation, mutation and shrinking.

A candidate is everything one trial needs to be reproduced exactly: the windows (token
ids, the last id is the query), their labels, the embeddings E (K×d, rows e_k^T as in
THEORY.md), the training seed, and conjecture-specific options (e.g. the prediction head).
It is plain data (JSON round-trips exactly: floats are written with ``repr`` precision), so
campaign logs hold the candidates themselves and any trial can be replayed.

All randomness comes from a ``numpy.random.Generator`` passed in by the caller; the search
seeds it from (campaign seed, candidate index) only, so candidates do not depend on the
number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from theorycheck.corpus.synthetic import make_embeddings
from theorycheck.corpus.types import Corpus, corpus_from_windows, is_one_hot, is_orthonormal
from theorycheck.errors import InputError

TOKEN_PREFIX = "t"


@dataclass(frozen=True)
class Candidate:
    """One small dataset plus the training seed (see the module docstring)."""

    windows: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]
    E: tuple[tuple[float, ...], ...]
    embedding_kind: str = "one-hot"
    train_seed: int = 0
    options: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    # -- sizes ---------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.windows)

    @property
    def K(self) -> int:
        return len(self.E)

    @property
    def d(self) -> int:
        return len(self.E[0]) if self.E else 0

    @property
    def positions(self) -> int:
        return sum(len(w) for w in self.windows)

    def size_key(self) -> tuple[int, int, int, int]:
        """Smaller is simpler: (samples, tokens, dimension, positions)."""
        return (self.n, self.K, self.d, self.positions)

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    @property
    def embeddings(self) -> np.ndarray:
        return np.array(self.E, dtype=np.float64).reshape(self.K, self.d)

    @property
    def vocab(self) -> tuple[str, ...]:
        return tuple(f"{TOKEN_PREFIX}{i}" for i in range(self.K))

    # -- conversions -----------------------------------------------------------
    def corpus(self) -> Corpus:
        """The candidate as a Corpus (windows kept as they are; no realizability filter)."""
        return corpus_from_windows([list(w) for w in self.windows], list(self.labels), self.vocab,
                                   E=self.embeddings, embedding_kind=self.embedding_kind,
                                   source="theorycheck falsify candidate")

    def unrealizable_windows(self) -> list[int]:
        return [i for i, (w, y) in enumerate(zip(self.windows, self.labels, strict=True)) if y not in w]

    def to_json(self) -> dict:
        return {"windows": [list(w) for w in self.windows], "labels": list(self.labels),
                "E": [list(r) for r in self.E], "embedding_kind": self.embedding_kind,
                "train_seed": self.train_seed, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: dict) -> Candidate:
        return make_candidate(data["windows"], data["labels"], np.asarray(data["E"], dtype=np.float64),
                              data.get("embedding_kind", "file"), int(data.get("train_seed", 0)),
                              data.get("options", {}))

    @classmethod
    def from_corpus(cls, corpus: Corpus, train_seed: int, options: dict | None = None) -> Candidate:
        """Rebuild the windows of a Corpus read back from files (positions are not stored in a
        Corpus, only token counts; the order inside a window does not matter to the model,
        THEORY.md §1.3, and the query is put last)."""
        windows = []
        counts = corpus.counts
        for i in range(corpus.n):
            lo, hi = counts.indptr[i], counts.indptr[i + 1]
            tokens = []
            q = int(corpus.last[i])
            for t, c in zip(counts.indices[lo:hi].tolist(), counts.data[lo:hi].tolist(), strict=True):
                tokens += [int(t)] * (int(c) - (1 if t == q else 0))
            windows.append(tokens + [q])
        return make_candidate(windows, corpus.label.tolist(), corpus.E, corpus.embedding_kind, train_seed, options or {})


def make_candidate(windows, labels, E: np.ndarray, embedding_kind: str = "file", train_seed: int = 0,
                   options: dict | None = None) -> Candidate:
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] < 1:
        raise InputError("candidate embeddings must be a non-empty K×d matrix")
    K = E.shape[0]
    windows = tuple(tuple(int(t) for t in w) for w in windows)
    labels = tuple(int(y) for y in labels)
    if len(windows) != len(labels) or not windows:
        raise InputError("a candidate needs as many labels as windows, and at least one window")
    if any(len(w) < 2 for w in windows):
        raise InputError("every candidate window needs a query and at least one other token")
    if any(not 0 <= t < K for w in windows for t in w) or any(not 0 <= y < K for y in labels):
        raise InputError("candidate token ids must lie in [0, K)")
    return Candidate(windows, labels, tuple(tuple(float(v) for v in row) for row in E), embedding_kind,
                     int(train_seed), tuple(sorted((str(k), str(v)) for k, v in (options or {}).items())))


# --------------------------------------------------------------------------- generation
def draw_window(rng: np.random.Generator, T: int, K: int) -> tuple[list[int], int]:
    """A window as in the official generator (THEORY.md §7.12): distinct tokens when T <= K,
    label uniform over [K], replaced by the token at a uniformly random position if absent."""
    window = rng.permutation(K)[:T].tolist() if T <= K else rng.integers(0, K, size=T).tolist()
    label = int(rng.integers(K))
    if label not in window:
        label = int(window[rng.integers(T)])
    return [int(t) for t in window], label


def random_candidate(
    rng: np.random.Generator,
    n: tuple[int, int] = (2, 8),
    T: tuple[int, int] = (2, 5),
    K: tuple[int, int] = (3, 6),
    embeddings: tuple[str, ...] = ("one-hot", "orthonormal"),
    extra_dims: tuple[int, int] = (0, 2),
    rho: tuple[float, float] = (0.5, 0.5),
    options: dict | None = None,
) -> Candidate:
    """A small random dataset; every range is inclusive.  ``extra_dims`` is d - K for
    orthonormal and unit-norm embeddings (equi-correlated ones need d >= K + 1)."""
    k = int(rng.integers(K[0], K[1] + 1))
    t = int(rng.integers(T[0], T[1] + 1))
    count = int(rng.integers(n[0], n[1] + 1))
    kind = embeddings[int(rng.integers(len(embeddings)))]
    extra = int(rng.integers(extra_dims[0], extra_dims[1] + 1))
    d = k if kind == "one-hot" else k + extra + (1 if kind == "equi-correlated" else 0)
    r = float(rng.uniform(rho[0], rho[1]))
    E = make_embeddings(kind, k, d, rng, r)
    pairs = [draw_window(rng, t, k) for _ in range(count)]
    seed = int(rng.integers(2**31 - 1))
    opts = dict(options or {})
    if kind == "equi-correlated":
        opts["rho"] = repr(r)
    return make_candidate([w for w, _ in pairs], [y for _, y in pairs], E, kind, seed, opts)


# --------------------------------------------------------------------------- mutation
MUTATIONS = ("relabel", "retoken", "requery", "add", "drop", "reseed")


def mutate(c: Candidate, rng: np.random.Generator) -> tuple[str, Candidate]:
    """One random local change (targeted search).  ``retoken`` may remove a window's label
    from it: such children break realizability and are discarded by the assumption check."""
    op = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    windows = [list(w) for w in c.windows]
    labels = list(c.labels)
    i = int(rng.integers(c.n))
    if op == "relabel":
        labels[i] = int(windows[i][rng.integers(len(windows[i]))])
    elif op == "retoken":
        windows[i][int(rng.integers(len(windows[i]) - 1))] = int(rng.integers(c.K))
    elif op == "requery":
        windows[i][-1] = int(rng.integers(c.K))
        if labels[i] not in windows[i]:
            labels[i] = int(windows[i][-1])
    elif op == "add":
        w, y = draw_window(rng, len(windows[i]), c.K)
        windows.append(w)
        labels.append(y)
    elif op == "drop" and c.n > 1:
        del windows[i], labels[i]
    else:
        op = "reseed"
        return op, replace(c, train_seed=int(rng.integers(2**31 - 1)))
    return op, make_candidate(windows, labels, c.embeddings, c.embedding_kind, c.train_seed, dict(c.options))


# --------------------------------------------------------------------------- shrinking
def remove_token(c: Candidate, v: int) -> Candidate | None:
    """Delete token v from the vocabulary: windows whose query or label is v go, v's other
    positions go, ids above v shift down; one-hot embeddings lose a dimension too."""
    if c.K <= 2:
        return None
    windows, labels = [], []
    for w, y in zip(c.windows, c.labels, strict=True):
        if w[-1] == v or y == v:
            continue
        kept = [t - (t > v) for t in w if t != v]
        if len(kept) >= 2:
            windows.append(kept)
            labels.append(y - (y > v))
    if not windows:
        return None
    one_hot = is_one_hot(c.embeddings)
    E = np.eye(c.K - 1) if one_hot else np.delete(c.embeddings, v, axis=0)
    return make_candidate(windows, labels, E, c.embedding_kind, c.train_seed, dict(c.options))


def compress_dimension(c: Candidate) -> Candidate | None:
    """Rotate E onto its row space: E' = E V_r (E = U S V^T, r = rank E).  E'E'^T = EE^T, so
    every Gram-invariant quantity (Graph-SVM margins, losses) is unchanged while d drops to r."""
    E = c.embeddings
    if is_one_hot(E):
        return None
    _, s, Vt = np.linalg.svd(E, full_matrices=False)
    r = int((s > 1e-10 * max(1.0, s[0])).sum())
    if r >= c.d:
        return None
    return make_candidate(c.windows, c.labels, E @ Vt[:r].T, c.embedding_kind, c.train_seed, dict(c.options))


def shrink_steps(c: Candidate) -> Iterator[tuple[str, Candidate]]:
    """Simplifications of ``c`` in a fixed order (the shrinker takes the first that still
    violates): drop a window, drop a token, one-hot embeddings, compress d, drop a position."""
    if c.n > 1:
        for i in range(c.n):
            yield f"drop window {i}", make_candidate(c.windows[:i] + c.windows[i + 1:], c.labels[:i] + c.labels[i + 1:],
                                                     c.embeddings, c.embedding_kind, c.train_seed, dict(c.options))
    for v in reversed(range(c.K)):
        smaller = remove_token(c, v)
        if smaller is not None:
            yield f"drop token t{v}", smaller
    if not is_one_hot(c.embeddings):
        yield "one-hot embeddings", make_candidate(c.windows, c.labels, np.eye(c.K), "one-hot", c.train_seed,
                                                   {k: v for k, v in c.options if k != "rho"})
    compressed = compress_dimension(c)
    if compressed is not None:
        yield f"compress d {c.d} -> {compressed.d}", compressed
    for i, w in enumerate(c.windows):
        if len(w) <= 2:
            continue
        for t in range(len(w) - 1):
            shorter = w[:t] + w[t + 1:]
            if c.labels[i] in shorter:
                windows = c.windows[:i] + (shorter,) + c.windows[i + 1:]
                yield f"drop position {t} of window {i}", make_candidate(windows, c.labels, c.embeddings,
                                                                         c.embedding_kind, c.train_seed, dict(c.options))


def embeddings_independent(c: Candidate) -> bool:
    """rank E = K (relative tolerance 1e-10, as Corpus.embedding_rank)."""
    E = c.embeddings
    if c.K > c.d:
        return False
    if is_orthonormal(E):
        return True
    s = np.linalg.svd(E, compute_uv=False)
    return bool((s > 1e-10 * max(1.0, s[0])).sum() == c.K)
