"""Independent reference implementations for the tests, written from THEORY.md, not from the library.

Everything here works on explicit windows (lists of token ids, the last one the query) and
per-position softmaxes, the way the theory is stated, instead of the library's pair space
and sufficient statistics.
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx
import numpy as np


def windows_of(corpus) -> tuple[list[list[int]], list[int]]:
    """Expand a Corpus back into position lists (order within a window is irrelevant, query last)."""
    windows = []
    c = corpus.counts
    for i in range(corpus.n):
        lo, hi = c.indptr[i], c.indptr[i + 1]
        tokens = np.repeat(c.indices[lo:hi], c.data[lo:hi]).tolist()
        tokens.remove(int(corpus.last[i]))
        windows.append(tokens + [int(corpus.last[i])])
    return windows, corpus.label.tolist()


def definition_edges(windows, labels) -> tuple[dict[int, set], dict[int, set]]:
    """THEORY.md §2.1 literally: per query k, the edges y_i -> tau_it (tau_it != y_i), and the tokens seen."""
    edges, nodes = defaultdict(set), defaultdict(set)
    for w, y in zip(windows, labels, strict=True):
        k = w[-1]
        nodes[k].update(w)
        edges[k].update((y, t) for t in w if t != y)
    return edges, nodes


def scc_maps(windows, labels) -> dict[int, dict[int, frozenset]]:
    """Per query k: token -> its SCC in G^(k) (networkx on the definition edges)."""
    edges, nodes = definition_edges(windows, labels)
    out = {}
    for k in nodes:
        g = nx.DiGraph()
        g.add_nodes_from(nodes[k])
        g.add_edges_from(edges[k])
        out[k] = {t: frozenset(c) for c in nx.strongly_connected_components(g) for t in c}
    return out


def cyclic_basis(E: np.ndarray, sccs: dict[int, dict[int, frozenset]]) -> np.ndarray:
    """Orthonormal basis (columns, row-major vec of d×d) of S_fin = span{(e_a - e_b) e_k^T : a ~ b in G^(k)}
    from every same-SCC pair (THEORY §4.1), by SVD with rank tolerance 1e-10."""
    d = E.shape[1]
    gens = [np.outer(E[a] - E[b], E[k]).ravel()
            for k, scc in sccs.items() for a, members in scc.items() for b in members if a < b]
    if not gens:
        return np.zeros((d * d, 0))
    U, s, _ = np.linalg.svd(np.array(gens).T, full_matrices=False)
    return U[:, s > 1e-10 * max(1.0, s[0])]


def position_loss(W: np.ndarray, E: np.ndarray, windows, labels, sccs=None) -> tuple[float, np.ndarray]:
    """Log-loss and its gradient over W, one softmax over the positions of each window.

    Full loss (§1.3-§1.5): L(W) = (1/n) sum_i -log sum_{t: tau_t = y_i} softmax(s_i)_t, s_it = e_tau^T W e_k.
    With ``sccs`` the reduced loss of §4.3: only positions t in O_i (tau_t in the label's SCC).
    d l / d s_t = a_t - 1[tau_t = y] a_t / p_y.
    """
    n = len(windows)
    loss, grad = 0.0, np.zeros_like(W)
    for w, y in zip(windows, labels, strict=True):
        k = w[-1]
        keep = [t for t in w if sccs is None or t in sccs[k][y]]
        X = E[keep]
        s = X @ W @ E[k]
        a = np.exp(s - s.max())
        a /= a.sum()
        is_label = np.array([t == y for t in keep])
        p = a[is_label].sum()
        loss -= np.log(p)
        grad += np.outer(X.T @ (a - is_label * a / p), E[k])
    return loss / n, grad / n


def unit_rows(rng: np.random.Generator, K: int, d: int) -> np.ndarray:
    E = rng.standard_normal((K, d))
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def random_windows(rng: np.random.Generator, n: int, T: int, K: int) -> tuple[list[list[int]], list[int]]:
    """Windows of T tokens drawn with replacement; the label is a uniformly chosen position's token."""
    windows = [rng.integers(0, K, size=T).tolist() for _ in range(n)]
    labels = [int(w[rng.integers(0, T)]) for w in windows]
    return windows, labels


def write_object_npy(path) -> None:
    """A .npy whose dtype is object (what a pickled array looks like to a loader), written without
    pickling: the header declares '|O' and the payload is junk, so only a loader that refuses
    object arrays before reading the payload passes."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        fh.write(b"\x80not a pickle")
