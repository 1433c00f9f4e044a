"""Corpus statistics of Tian et al. against hand-computed cases (exact fractions)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from theorycheck.corpus.types import corpus_from_windows
from theorycheck.errors import InputError
from theorycheck.scansnap.stats import (
    assumption2,
    context_counts,
    corpus_statistics,
    population_attention,
)
from theorycheck.scansnap.synthetic import (
    class_distributions,
    parse_scansnap_spec,
    scansnap_synthetic,
)

VOCAB = ("q", "r", "a", "b", "c", "x", "y", "z", "w")
IX = {t: i for i, t in enumerate(VOCAB)}


def toy(extra=()):
    """(q,a): [x x y], [x y y y]; (q,b): [z z y]; (r,c): [x w]  (the query is the last token)."""
    windows = [["x", "x", "y", "q"], ["x", "y", "y", "y", "q"], ["z", "z", "y", "q"], ["x", "w", "r"], *extra]
    labels = ["a", "a", "b", "c"] + [lab for lab in ("c",) * len(extra)]
    return corpus_from_windows([[IX[t] for t in w] for w in windows], [IX[t] for t in labels], VOCAB)


def row(stats, q, n):
    return int(np.flatnonzero((stats.class_query == IX[q]) & (stats.class_next == IX[n]))[0])


def test_context_excludes_the_query_position():
    corpus = toy()
    ctx = context_counts(corpus).toarray()
    assert ctx[0, IX["q"]] == 0 and ctx[0, IX["x"]] == 2 and ctx[0].sum() == 3
    assert corpus.counts.toarray()[0, IX["q"]] == 1  # the Corpus keeps it (Li's keys include it)


def test_cooccurrence_estimates_match_hand_fractions():
    st = corpus_statistics(toy(), support_factor=0.0, min_expected=1.0)
    qa, qb, rc = row(st, "q", "a"), row(st, "q", "b"), row(st, "r", "c")
    expect = {
        (qa, "x"): (Fraction(2, 3) + Fraction(1, 4)) / 2, (qa, "y"): (Fraction(1, 3) + Fraction(3, 4)) / 2,
        (qb, "z"): Fraction(2, 3), (qb, "y"): Fraction(1, 3), (rc, "x"): Fraction(1, 2), (rc, "w"): Fraction(1, 2),
    }
    P = np.zeros_like(st.P)
    for (c, t), v in expect.items():
        P[c, IX[t]] = float(v)
    np.testing.assert_allclose(st.P, P, rtol=0, atol=1e-15)
    assert st.class_size[qa] == 2 and st.class_context_len[qa] == 3.5
    assert st.psi_holds and st.C == 3


def test_distinct_and_common_global_and_local():
    st = corpus_statistics(toy(), support_factor=0.0, min_expected=1.0)
    qa, qb, rc = row(st, "q", "a"), row(st, "q", "b"), row(st, "r", "c")

    def names(mask):
        return sorted(VOCAB[t] for t in np.flatnonzero(mask))

    # global: x in (q,a) and (r,c); y in (q,a) and (q,b) -> common; z, w distinct
    assert names(st.distinct[qa]) == [] and names(st.common[qa]) == ["x", "y"]
    assert names(st.distinct[qb]) == ["z"] and names(st.common[qb]) == ["y"]
    assert names(st.distinct[rc]) == ["w"] and names(st.common[rc]) == ["x"]
    # local (within the query's classes): x is distinct for q, y stays common
    assert names(st.local_distinct[qa]) == ["x"] and names(st.local_common[qa]) == ["y"]
    assert names(st.local_distinct[rc]) == ["w", "x"]
    assert sorted(VOCAB[t] for t in st.common_tokens) == ["x", "y"]
    assert st.overlap()[qa, qb] and st.overlap()[qa, rc] and not st.overlap()[qb, rc]


def test_eligibility_is_expected_count_at_least_threshold():
    st = corpus_statistics(toy(), support_factor=0.0, min_expected=1.7)
    qa, qb = row(st, "q", "a"), row(st, "q", "b")
    # (q,a): 3.5 * 11/24 = 1.604 < 1.7 <= 3.5 * 13/24 = 1.896;  (q,b): 3 * 2/3 = 2, 3 * 1/3 = 1
    assert not st.eligible[qa, IX["x"]] and st.eligible[qa, IX["y"]]
    assert st.eligible[qb, IX["z"]] and not st.eligible[qb, IX["y"]]


def test_support_threshold_uses_the_hoeffding_radius():
    st = corpus_statistics(toy(), support_factor=1.0)
    qa = row(st, "q", "a")
    radius = math.sqrt(math.log(2 / 0.05) / (2 * 3.5 * 2))
    assert st.radius[qa] == pytest.approx(radius, rel=1e-14)
    assert np.array_equal(st.support[qa], st.P[qa] > radius)


def test_psi_violation_and_query_only_windows():
    corpus = toy(extra=(["w", "q"], ["q"]))  # c now also follows q; a window with no context
    st = corpus_statistics(corpus, support_factor=0.0)
    assert not st.psi_holds
    assert st.psi_violations() == [("c", ["q", "r"])]
    assert st.dropped_empty == 1 and st.N == 5


def test_no_context_at_all_is_bad_input():
    corpus = corpus_from_windows([[IX["q"]]], [IX["a"]], VOCAB)
    with pytest.raises(InputError):
        corpus_statistics(corpus)


def test_population_attention_eq5_by_hand():
    P = np.array([[0.5, 0.25, 0.25, 0.0]])
    Zq = np.array([[0.0, math.log(2.0), 0.0, 5.0]])
    # c~ = P e^z = (0.5, 0.5, 0.25, 0) -> c = (0.4, 0.4, 0.2, 0)
    np.testing.assert_allclose(population_attention(P, Zq), [[0.4, 0.4, 0.2, 0.0]], atol=1e-15)


def test_assumption2_eigenvalues_by_hand():
    c = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]) / 2
    a2 = assumption2(c)  # f1.f2 = 1/2 -> E = [[0, 1/2], [1/2, 0]], eigenvalues -1/2, 1/2
    np.testing.assert_allclose(a2["eigenvalues"], [-0.5, 0.5], atol=1e-15)
    assert a2["max_abs_eigenvalue"] == pytest.approx(0.5) and a2["bound_1_over_K"] == 0.5
    assert not a2["holds"]  # |lambda_1| < 1/K fails at equality
    a2 = assumption2(np.array([[1.0, 0.0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                               [0.0, 0.9] + [0.1 / 23] * 23]))
    assert a2["max_abs_eigenvalue"] < 0.5  # nearly orthogonal; still fails sqrt(6/M) from below
    assert a2["min_abs_eigenvalue"] < a2["bound_sqrt_6_over_M"] and not a2["holds"]


def test_syn_small_layout_matches_the_authors_dataset():
    vocab, P, query, nxt = class_distributions(2, 1, 10, 10, 0)
    assert len(vocab) == 33 and vocab[30] == "q0" and vocab[31:] == ("n0", "n1")
    np.testing.assert_allclose(P[:, :10], 1 / 15.5, rtol=1e-14)  # common weight 1 / 15.5
    np.testing.assert_allclose(P[0, 10:20], np.arange(1, 11) / 155, rtol=1e-14)
    np.testing.assert_allclose(P[1, 20:30], np.arange(1, 11) / 155, rtol=1e-14)
    assert np.all(P[0, 20:] == 0) and np.all(query == 30) and list(nxt) == [31, 32]
    assert len(class_distributions(6, 3, 10, 10, 0)[0]) == 79  # Syn-Medium, 3 queries


def test_generator_samples_and_statistics():
    corpus = scansnap_synthetic(K=2, T=128, n=2048, seed=3)
    st = corpus_statistics(corpus)
    assert st.psi_holds and st.M == 33 and st.C == 2 and np.all(st.context_len == 127)
    _, P, _, _ = class_distributions(2, 1, 10, 10, 0)
    # Hoeffding: each P-hat within its class radius (delta = 0.05 per token, a loose bound)
    assert np.all(np.abs(st.P - P) <= st.radius[:, None])
    assert st.common_tokens.tolist() == list(range(10))
    assert st.distinct.sum(axis=1).tolist() == [10, 10]
    # expected count 127 k / 155 >= 5 for k >= 7 (4 of the 10 distinct tokens of each class)
    assert (st.distinct & st.eligible).sum(axis=1).tolist() == [4, 4]


def test_cross_tokens_are_globally_common_and_locally_distinct():
    st = corpus_statistics(scansnap_synthetic(K=4, queries=2, cross=2, n=512, seed=0))
    x0 = st.vocab.index("x0")
    holders = np.flatnonzero(st.support[:, x0])
    assert len(holders) == 2 and len(set(st.class_query[holders])) == 2
    assert st.common[holders, x0].all() and st.local_distinct[holders, x0].all()


@pytest.mark.parametrize("spec", ["scansnap:K=3,queries=2", "scansnap:foo=1", "scansnap:K=two", "scansnap:K"])
def test_bad_specs_are_input_errors(spec):
    with pytest.raises(InputError):
        scansnap_synthetic(**parse_scansnap_spec(spec))
