"""Token-priority graphs (TPGs), their SCCs, condensations and priority order.

THEORY.md §2.1: for every last token k, G^(k) has the edge y_i -> tau_it for every
window i with k_i = k and every token tau_it != y_i of that window.  The union of
all G^(k) is stored as one graph whose nodes are the *pairs* (token a, query k)
that occur (tokens that never occur with query k are isolated singletons and play
no role).  SCCs of the union are computed in one call to scipy's strong-components
routine (graphs of different queries share no edge, so they never merge); the
networkx view of each G^(k) is available through :meth:`TokenPriorityGraphs.digraph`
and the tests check both against each other and against a transitive closure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from theorycheck.corpus.types import Corpus
from theorycheck.runtime import paused_gc


@dataclass(frozen=True, eq=False)
class TokenPriorityGraphs:
    """All TPGs of a (realizable) corpus.

    Pair nodes p = 0..P-1 are sorted by (query, token).
    Attributes
    ----------
    K : vocabulary size.
    pair_query, pair_token : (P,) query k and token a of each pair node.
    entry_pair : (nnz,) pair node of every stored entry of ``corpus.counts`` (CSR order).
    label_pair : (n,) pair node (k_i, y_i) of every window.
    edge_src, edge_dst : deduplicated TPG edges as pair nodes (src = label).
    scc : (P,) SCC id of each pair node; SCCs never mix queries.
    scc_size, scc_query : per SCC.
    scc_level : longest-path depth in the condensation DAG (0 = highest priority).
    cond_src, cond_dst : deduplicated condensation (cross-SCC) edges.
    """

    K: int
    pair_query: np.ndarray
    pair_token: np.ndarray
    entry_pair: np.ndarray
    label_pair: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    scc: np.ndarray
    scc_size: np.ndarray
    scc_query: np.ndarray
    scc_level: np.ndarray
    cond_src: np.ndarray
    cond_dst: np.ndarray

    # -- derived views -----------------------------------------------------
    @property
    def n_pairs(self) -> int:
        return int(self.pair_query.size)

    @property
    def n_sccs(self) -> int:
        return int(self.scc_size.size)

    @cached_property
    def queries(self) -> np.ndarray:
        return np.unique(self.pair_query)

    @cached_property
    def edge_same_scc(self) -> np.ndarray:
        return self.scc[self.edge_src] == self.scc[self.edge_dst]

    @cached_property
    def pair_cyclic(self) -> np.ndarray:
        """True for pairs (a, k) whose SCC in G^(k) has >= 2 tokens."""
        return self.scc_size[self.scc] >= 2

    def pair_lookup(self, query: int, token: int) -> int:
        """Pair node of (token, query), or -1 when the token never occurs with that query."""
        key = query * self.K + token
        keys = self.pair_query * self.K + self.pair_token
        pos = int(np.searchsorted(keys, key))
        return pos if pos < keys.size and keys[pos] == key else -1

    def query_pairs(self, query: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.pair_query, [query, query + 1])
        return np.arange(lo, hi)

    def sccs_of_query(self, query: int) -> list[np.ndarray]:
        """Token sets of the SCCs of G^(query), in priority order (level, then smallest token)."""
        detail = self.query_details((), only=[query])
        return [np.array(c) for c in detail[0]["scc_indices"]] if detail else []

    def digraph(self, query: int) -> nx.DiGraph:
        """G^(query) as a networkx DiGraph on token ids (only tokens seen with that query)."""
        g = nx.DiGraph()
        pairs = self.query_pairs(query)
        g.add_nodes_from(self.pair_token[pairs].tolist())
        lo, hi = pairs[0] if pairs.size else 0, pairs[-1] + 1 if pairs.size else 0
        mask = (self.edge_src >= lo) & (self.edge_src < hi)
        g.add_edges_from(
            zip(self.pair_token[self.edge_src[mask]].tolist(), self.pair_token[self.edge_dst[mask]].tolist())
        )
        return g

    def condensation(self, query: int) -> nx.DiGraph:
        """Condensation DAG of G^(query); node attribute 'members' = token ids (networkx)."""
        return nx.condensation(self.digraph(query))

    def summary(self) -> dict:
        cyclic_scc = self.scc_size >= 2
        queries_with_cycle = np.unique(self.scc_query[cyclic_scc])
        return {
            "graphs": int(self.queries.size),
            "edges": int(self.edge_src.size),
            "cross_scc_edges": int((~self.edge_same_scc).sum()),
            "intra_scc_edges": int(self.edge_same_scc.sum()),
            "sccs": self.n_sccs,
            "cyclic_sccs": int(cyclic_scc.sum()),
            "acyclic_graphs": int(self.queries.size - queries_with_cycle.size),
            "cyclic_graphs": int(queries_with_cycle.size),
            "largest_scc": int(self.scc_size.max()) if self.n_sccs else 0,
            "max_priority_depth": int(self.scc_level.max()) + 1 if self.n_sccs else 0,
        }

    def query_details(self, vocab: tuple[str, ...], only: list[int] | None = None) -> list[dict]:
        """Per query (in the order of ``only``, default all; queries without pairs are left
        out): its SCCs in priority order (level, then smallest token id), each SCC's tokens in
        pair order, their levels, condensation edges (as indices into that SCC list, sorted)
        and edge counts.  Sorted once over all selected pairs; Python only builds the lists."""
        queries = self.queries if only is None else np.asarray(only, dtype=np.int64).reshape(-1)
        pair_lo = np.searchsorted(self.pair_query, queries)
        pair_hi = np.searchsorted(self.pair_query, queries, side="right")
        keep = pair_hi > pair_lo
        queries, pair_lo, pair_hi = queries[keep], pair_lo[keep], pair_hi[keep]
        if queries.size == 0:
            return []
        edge_lo, edge_hi = np.searchsorted(self.edge_src, pair_lo), np.searchsorted(self.edge_src, pair_hi)
        slot, pairs = _concatenated_ranges(pair_lo, pair_hi)  # slot: the query's place in the output
        scc, tokens = self.scc[pairs], self.pair_token[pairs]
        first_token = np.full(self.n_sccs, np.iinfo(np.int64).max)
        np.minimum.at(first_token, scc, tokens)
        order = np.lexsort((pairs, first_token[scc], self.scc_level[scc], slot))
        slot, scc, tokens = slot[order], scc[order], tokens[order]
        group_start = np.flatnonzero(np.r_[True, (slot[1:] != slot[:-1]) | (scc[1:] != scc[:-1])])
        group_slot, group_scc = slot[group_start], scc[group_start]
        query_groups = np.searchsorted(group_slot, np.arange(queries.size + 1))
        position = np.full(self.n_sccs, -1, dtype=np.int64)  # an SCC's index in its query's list
        position[group_scc] = np.arange(group_scc.size) - query_groups[group_slot]

        cond_query = self.scc_query[self.cond_src]
        cond_order = np.argsort(cond_query, kind="stable")
        sorted_cq = cond_query[cond_order]
        cond_slot, cond = _concatenated_ranges(np.searchsorted(sorted_cq, queries),
                                               np.searchsorted(sorted_cq, queries, side="right"))
        cond = cond_order[cond]
        cs, cd = position[self.cond_src[cond]], position[self.cond_dst[cond]]
        cond_sorted = np.lexsort((cd, cs, cond_slot))
        cond_edges = np.column_stack((cs[cond_sorted], cd[cond_sorted]))
        query_cond = np.searchsorted(cond_slot[cond_sorted], np.arange(queries.size + 1))

        with paused_gc():  # millions of small lists (runtime.paused_gc)
            bounds = np.r_[group_start, tokens.size].tolist()
            token_list = tokens.tolist()
            groups = [token_list[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            if vocab:
                name_list = np.asarray(vocab, dtype=object)[tokens].tolist()
                names = [name_list[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            levels = self.scc_level[group_scc].tolist()
            cond_edges = cond_edges.tolist()
            return [{
                "query": vocab[q] if vocab else str(q),
                "query_index": q,
                "tokens": hi - lo,
                "edges": ehi - elo,
                "sccs": names[g_lo:g_hi] if vocab else None,
                "scc_indices": groups[g_lo:g_hi],
                "levels": levels[g_lo:g_hi],
                "condensation_edges": cond_edges[c_lo:c_hi],
                "acyclic": g_hi - g_lo == hi - lo,
            } for q, lo, hi, elo, ehi, g_lo, g_hi, c_lo, c_hi in zip(
                queries.tolist(), pair_lo.tolist(), pair_hi.tolist(), edge_lo.tolist(), edge_hi.tolist(),
                query_groups[:-1].tolist(), query_groups[1:].tolist(), query_cond[:-1].tolist(),
                query_cond[1:].tolist())]

    # -- reduced dataset (THEORY.md §4.2) -----------------------------------
    def label_scc_entries(self, corpus: Corpus) -> np.ndarray:
        """Mask over stored entries: token shares the label's SCC (the set O_i)."""
        rows = np.repeat(np.arange(corpus.n), np.diff(corpus.counts.indptr))
        return self.scc[self.entry_pair] == self.scc[self.label_pair[rows]]


def _concatenated_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(range number, value) of every value in the ranges [lo_i, hi_i), range by range."""
    counts = hi - lo
    which = np.repeat(np.arange(lo.size), counts)
    starts = np.cumsum(counts) - counts
    return which, np.arange(int(counts.sum())) - starts[which] + lo[which]


def scc_generators(graphs: TokenPriorityGraphs) -> tuple[np.ndarray, np.ndarray]:
    """(member pair, root pair) for every non-root member of every cyclic SCC.

    The root is the member with the smallest token id; the |C|-1 differences
    member - root span every intra-SCC difference (THEORY.md §3.1, §4.1).
    """
    pairs = np.flatnonzero(graphs.pair_cyclic)
    if pairs.size == 0:
        return pairs, pairs
    scc = graphs.scc[pairs]
    order = np.lexsort((graphs.pair_token[pairs], scc))
    pairs, scc = pairs[order], scc[order]
    first = np.r_[True, scc[1:] != scc[:-1]]
    root = pairs[np.maximum.accumulate(np.where(first, np.arange(pairs.size), 0))]
    return pairs[~first], root[~first]


def entry_rows(corpus: Corpus) -> np.ndarray:
    """Window index of every stored entry of ``corpus.counts`` (CSR order)."""
    return np.repeat(np.arange(corpus.n), np.diff(corpus.counts.indptr))


DENSE_KEY_LIMIT = 1 << 26  # key spaces up to this size are deduplicated by a bitmap, not a sort


def _unique_inverse(keys: np.ndarray, key_space: int, inverse: bool = True):
    """np.unique(keys, return_inverse=inverse) for non-negative integer keys below key_space:
    a bitmap and a running count (O(keys + key_space)) where the key space is small enough,
    else a sort (numpy 2.4's np.unique hashes: 3.7 s for 4.2 M int64 keys, against 0.3 s
    for np.sort)."""
    if key_space > DENSE_KEY_LIMIT:
        if inverse:
            order = np.argsort(keys, kind="stable")
            ordered = keys[order]
            new = np.r_[True, ordered[1:] != ordered[:-1]] if keys.size else np.zeros(0, dtype=bool)
            inv = np.empty(keys.size, dtype=np.int64)
            inv[order] = np.cumsum(new) - 1
            return ordered[new], inv
        ordered = np.sort(keys)
        return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if keys.size else ordered
    present = np.zeros(key_space, dtype=bool)
    present[keys] = True
    unique = np.flatnonzero(present)
    if not inverse:
        return unique
    rank = np.cumsum(present, dtype=np.int64) - 1
    return unique, rank[keys]


def build_graphs(corpus: Corpus) -> TokenPriorityGraphs:
    """Build every G^(k) of a realizable corpus (THEORY.md §2.1)."""
    K = corpus.K
    counts = corpus.counts
    rows = entry_rows(corpus)
    tokens = counts.indices.astype(np.int64)
    entry_key = corpus.last[rows] * K + tokens
    pair_keys, entry_pair = _unique_inverse(entry_key, K * K)
    pair_query, pair_token = pair_keys // K, pair_keys % K
    label_key = corpus.last * K + corpus.label
    label_pair = np.searchsorted(pair_keys, label_key)
    if corpus.n and not np.array_equal(pair_keys[np.minimum(label_pair, pair_keys.size - 1)], label_key):
        raise ValueError("build_graphs needs a realizable corpus: call corpus.realizable() first")
    P = pair_keys.size
    # edges label -> every other token of the window, deduplicated
    src = label_pair[rows]
    keep = src != entry_pair
    edge_key = _unique_inverse(src[keep] * P + entry_pair[keep], P * P, inverse=False)
    edge_src, edge_dst = edge_key // P, edge_key % P
    adjacency = sp.csr_matrix((np.ones(edge_src.size, dtype=np.int8), (edge_src, edge_dst)), shape=(P, P))
    n_scc, scc = connected_components(adjacency, directed=True, connection="strong")
    scc = scc.astype(np.int64)
    scc_size = np.bincount(scc, minlength=n_scc)
    scc_query = np.zeros(n_scc, dtype=np.int64)
    scc_query[scc] = pair_query
    cross = scc[edge_src] != scc[edge_dst]
    cond_key = _unique_inverse(scc[edge_src[cross]] * n_scc + scc[edge_dst[cross]], n_scc * n_scc, inverse=False)
    cond_src, cond_dst = cond_key // n_scc, cond_key % n_scc
    scc_level = longest_path_levels(n_scc, cond_src, cond_dst)
    return TokenPriorityGraphs(
        K=K, pair_query=pair_query, pair_token=pair_token, entry_pair=entry_pair,
        label_pair=label_pair, edge_src=edge_src, edge_dst=edge_dst, scc=scc,
        scc_size=scc_size, scc_query=scc_query, scc_level=scc_level,
        cond_src=cond_src, cond_dst=cond_dst,
    )


def longest_path_levels(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Depth of every node of a DAG: 0 for sources, else 1 + max depth of its parents.

    Kahn's algorithm, one vectorised frontier per level; ``src`` must be sorted.
    """
    level = np.zeros(n_nodes, dtype=np.int64)
    indegree = np.bincount(dst, minlength=n_nodes)
    starts = np.searchsorted(src, np.arange(n_nodes + 1))
    frontier = np.flatnonzero(indegree == 0)
    depth = 0
    seen = 0
    while frontier.size:
        level[frontier] = depth
        seen += frontier.size
        lengths = starts[frontier + 1] - starts[frontier]
        if lengths.sum() == 0:
            break
        first = np.repeat(starts[frontier], lengths)
        offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        children = dst[first + offset]
        uniq, hits = np.unique(children, return_counts=True)
        indegree[uniq] -= hits
        frontier = uniq[indegree[uniq] == 0]
        depth += 1
    if seen != n_nodes:
        raise ValueError("condensation has a cycle; this cannot happen for SCC condensations")
    return level
