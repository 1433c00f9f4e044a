"""Token-priority graphs and their SCCs (THEORY.md §2, prediction P1).

The library's SCCs (scipy strong components on the union of pair graphs) are checked
against hand-drawn graphs, against networkx on both its own digraph view and on edges
rebuilt here straight from the definition of §2.1, and against a brute-force transitive
closure (a ~ b iff each reaches the other).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import definition_edges

from theorycheck.corpus import corpus_from_windows
from theorycheck.graphs import build_graphs, longest_path_levels, scc_generators

# --------------------------------------------------------------------------- references


def closure_partition(nodes: set, edges: set) -> set[frozenset]:
    """SCCs by brute force: Warshall's transitive closure, a ~ b iff a ->* b and b ->* a."""
    order = sorted(nodes)
    pos = {t: i for i, t in enumerate(order)}
    reach = np.eye(len(order), dtype=bool)
    for a, b in edges:
        reach[pos[a], pos[b]] = True
    for m in range(len(order)):
        reach |= reach[:, [m]] & reach[[m], :]
    mutual = reach & reach.T
    return {frozenset(order[j] for j in np.flatnonzero(mutual[i])) for i in range(len(order))}


def library_partition(graphs, k: int) -> set[frozenset]:
    return {frozenset(c.tolist()) for c in graphs.sccs_of_query(k)}


def reference_levels(nodes: set, edges: set) -> dict[int, int]:
    """Longest-path depth of each token's SCC in the condensation (networkx)."""
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    cond = nx.condensation(g)
    depth = {}
    for c in nx.topological_sort(cond):
        depth[c] = max((depth[p] + 1 for p in cond.predecessors(c)), default=0)
    return {t: depth[cond.graph["mapping"][t]] for t in nodes}


@st.composite
def random_windows(draw, max_vocab: int = 6, max_windows: int = 14):
    """Realizable windows over a small vocabulary (small K makes cycles frequent)."""
    K = draw(st.integers(2, max_vocab))
    n = draw(st.integers(1, max_windows))
    windows = [draw(st.lists(st.integers(0, K - 1), min_size=2, max_size=5)) for _ in range(n)]
    labels = [draw(st.sampled_from(w)) for w in windows]
    return K, windows, labels


def corpus_of(K, windows, labels):
    return corpus_from_windows(windows, labels, tuple(f"t{i}" for i in range(K)))


# --------------------------------------------------------------------------- hand-drawn graphs


def test_chain_graph_by_hand(example):
    # windows [a b q] -> a and [b c q] -> b: G^(q) = {a->b, a->q, b->c, b->q}, all SCCs singletons;
    # longest paths from the source a: a 0, b 1, c 2 (a->b->c), q 2 (a->b->q).
    corpus = example("chain")
    a, b, c, q = (corpus.vocab.index(t) for t in "abcq")
    graphs = build_graphs(corpus)
    assert set(graphs.digraph(q).edges) == {(a, b), (a, q), (b, c), (b, q)}
    assert library_partition(graphs, q) == {frozenset({t}) for t in (a, b, c, q)}
    levels = {int(graphs.pair_token[p]): int(graphs.scc_level[graphs.scc[p]]) for p in graphs.query_pairs(q)}
    assert levels == {a: 0, b: 1, c: 2, q: 2}
    assert graphs.summary()["cyclic_sccs"] == 0


def test_cycle_graph_by_hand(example):
    # [a b q] labelled a (twice) and b: edges a->b, a->q, b->a, b->q; SCC {a, b} above {q};
    # c never occurs with query q, so it is no node of G^(q).
    corpus = example("cycle")
    a, b, c, q = (corpus.vocab.index(t) for t in "abcq")
    graphs = build_graphs(corpus)
    assert set(graphs.digraph(q).edges) == {(a, b), (a, q), (b, a), (b, q)}
    assert graphs.sccs_of_query(q)[0].tolist() == [a, b]
    assert graphs.sccs_of_query(q)[1].tolist() == [q]
    assert graphs.pair_lookup(q, c) == -1
    member, root = scc_generators(graphs)
    assert graphs.pair_token[member].tolist() == [b] and graphs.pair_token[root].tolist() == [a]


def test_mix_summary_and_reduced_sets(example):
    # mix: G^(q) from [a a b q]->b, [a b c q]->a, [c d q]->c: b->a, b->q, a->b, a->c, a->q, c->d, c->q
    # (7 edges, 2 inside {a,b}); G^(r) from [d r]->d: d->r.  SCCs: {a,b}, c, d, q | d, r  -> 6, one cyclic;
    # depth of G^(q): {a,b} 0, c 1, d and q 2 -> 3 levels.
    corpus = example("mix")
    graphs = build_graphs(corpus)
    assert graphs.summary() == {
        "graphs": 2, "edges": 8, "cross_scc_edges": 6, "intra_scc_edges": 2, "sccs": 6, "cyclic_sccs": 1,
        "acyclic_graphs": 1, "cyclic_graphs": 1, "largest_scc": 2, "max_priority_depth": 3,
    }
    # O_i (THEORY §4.2): tokens sharing the label's SCC, per window
    in_O = graphs.label_scc_entries(corpus)
    counts = corpus.counts
    reduced_sets = [{corpus.vocab[t] for t, keep in zip(counts.indices[lo:hi], in_O[lo:hi], strict=True) if keep}
                    for lo, hi in zip(counts.indptr[:-1], counts.indptr[1:], strict=True)]
    assert reduced_sets == [{"a", "b"}, {"a", "b"}, {"c"}, {"d"}]


def test_query_details_lists_sccs_in_priority_order(example):
    corpus = example("mix")
    details = {q["query"]: q for q in build_graphs(corpus).query_details(corpus.vocab)}
    assert details["q"]["sccs"] == [["a", "b"], ["c"], ["d"], ["q"]]
    assert details["q"]["levels"] == [0, 1, 2, 2]
    # condensation edges {a,b}->c, {a,b}->q, c->d, c->q as indices into that list
    assert sorted(map(tuple, details["q"]["condensation_edges"])) == [(0, 1), (0, 3), (1, 2), (1, 3)]
    assert details["r"]["sccs"] == [["d"], ["r"]] and not details["q"]["acyclic"] and details["r"]["acyclic"]


@settings(max_examples=40, derandomize=True, database=None, deadline=None)
@given(random_windows(), st.randoms(use_true_random=False))
def test_query_details_agree_with_the_graph_per_query(data, rnd):
    # each query's SCC list partitions its tokens in priority order (levels non-decreasing, ties
    # by smallest token), its condensation edges join different SCCs and point down in level,
    # and a selection (shuffled, repeated, with absent queries) gives the same entries in its order
    K, windows, labels = data
    graphs = build_graphs(corpus_of(K, windows, labels))
    details = graphs.query_details(())
    assert [d["query_index"] for d in details] == graphs.queries.tolist()
    for d in details:
        k = d["query_index"]
        assert {frozenset(g) for g in d["scc_indices"]} == library_partition(graphs, k)
        assert d["tokens"] == sum(map(len, d["scc_indices"])) == len(graphs.query_pairs(k))
        assert d["edges"] == graphs.digraph(k).number_of_edges()
        keys = [(level, min(g)) for level, g in zip(d["levels"], d["scc_indices"], strict=True)]
        assert keys == sorted(keys)
        assert all(d["levels"][a] < d["levels"][b] for a, b in d["condensation_edges"])
        assert d["condensation_edges"] == sorted(d["condensation_edges"])
        assert d["acyclic"] == all(len(g) == 1 for g in d["scc_indices"])
    absent = sorted(set(range(K)) - set(graphs.queries.tolist()))  # tokens that are no window's query
    chosen = [int(q) for q in graphs.queries] * 2 + absent
    rnd.shuffle(chosen)
    by_query = {d["query_index"]: d for d in details}
    assert graphs.query_details((), only=chosen) == [by_query[q] for q in chosen if q in by_query]


def test_unrealizable_corpus_is_refused():
    corpus = corpus_from_windows([[0, 1]], [2], ("a", "b", "c"))
    with pytest.raises(ValueError, match="realizable"):
        build_graphs(corpus)
    assert build_graphs(corpus_from_windows([[0, 1], [0, 1]], [2, 0], ("a", "b", "c")).realizable()).n_pairs == 2


# --------------------------------------------------------------------------- P1 on random corpora


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(random_windows())
def test_sccs_match_networkx_and_transitive_closure(data):
    K, windows, labels = data
    graphs = build_graphs(corpus_of(K, windows, labels))
    edges, nodes = definition_edges(windows, labels)
    assert set(graphs.queries.tolist()) == set(edges) | set(nodes)
    for k in nodes:
        view = graphs.digraph(k)
        assert set(view.nodes) == nodes[k]
        assert set(view.edges) == edges[k]
        mine = library_partition(graphs, k)
        assert mine == {frozenset(c) for c in nx.strongly_connected_components(view)}
        assert mine == closure_partition(nodes[k], edges[k])
        levels = reference_levels(nodes[k], edges[k])
        for p in graphs.query_pairs(k):
            assert graphs.scc_level[graphs.scc[p]] == levels[int(graphs.pair_token[p])]


@settings(max_examples=25, derandomize=True, database=None, deadline=None)
@given(random_windows(), st.randoms(use_true_random=False))
def test_graphs_depend_only_on_query_label_token_sets(data, rnd):
    # §2.1: duplicating windows, permuting the non-query positions and repeating tokens change nothing
    K, windows, labels = data
    base = build_graphs(corpus_of(K, windows, labels))
    new_windows, new_labels = [], []
    for w, y in zip(windows, labels, strict=True):
        body = list(w[:-1]) + [rnd.choice(w)]
        rnd.shuffle(body)
        for _ in range(rnd.randint(1, 3)):
            new_windows.append(body + [w[-1]])
            new_labels.append(y)
    other = build_graphs(corpus_of(K, new_windows, new_labels))
    for k in base.queries:
        assert set(base.digraph(k).edges) == set(other.digraph(k).edges)
        assert library_partition(base, k) == library_partition(other, k)


def test_longest_path_levels_on_a_diamond_with_a_tail():
    # 0 -> 1 -> 3, 0 -> 2 -> 3, 0 -> 3, 3 -> 4: depths 0, 1, 1, 2, 3
    src, dst = np.array([0, 0, 0, 1, 2, 3]), np.array([1, 2, 3, 3, 3, 4])
    assert longest_path_levels(5, src, dst).tolist() == [0, 1, 1, 2, 3]


def test_deep_chain_has_no_recursion_limit():
    # THEORY §2.2: the official recursive Tarjan fails on chains deeper than ~1000 nodes.
    K = 3000
    windows = [[i, i + 1, K - 1] for i in range(K - 2)]
    corpus = corpus_of(K, windows, [i for i in range(K - 2)])
    graphs = build_graphs(corpus)
    assert graphs.summary()["max_priority_depth"] == K - 1
    assert graphs.summary()["cyclic_sccs"] == 0
