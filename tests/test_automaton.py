"""The automaton of THEORY.md §5.5: hard retrieval of the dominant SCC, soft composition by W^fin.

Expected distributions follow from the closed forms of W^fin derived in test_finite.py;
one check compares the automaton with the attention of a far point of the
regularization path, computed per position (the limit the automaton describes).
"""

from __future__ import annotations

import numpy as np
import pytest

from theorycheck.errors import InputError
from theorycheck.path import PenalisedLoss, solve_radius
from theorycheck.predictions import analyze

SQRT2 = np.sqrt(2.0)


@pytest.fixture(scope="module")
def cycle(example):
    return analyze(example("cycle"), radii=())


@pytest.fixture(scope="module")
def mix(example):
    return analyze(example("mix"), radii=())


def test_cycle_retrieves_the_scc_with_two_to_one_weights(cycle):
    # W^fin[a,q] - W^fin[b,q] = ln 2 -> softmax over {a, b} = (2/3, 1/3); q lies below {a, b}.
    r = cycle.automaton().predict(["a", "b", "q"])
    assert r.status == "determined" and r.retrieved == ("a", "b")
    assert r.distribution == pytest.approx({"a": 2 / 3, "b": 1 / 3}, abs=1e-12)


def test_mix_soft_composition_uses_token_counts(mix):
    # W^fin[a,q] - W^fin[b,q] = -ln(2)/2, i.e. weight ratio a : b = 1 : sqrt 2 per occurrence.
    # [a b c q]:   (1, sqrt 2)/(1 + sqrt 2)  = (sqrt 2 - 1, 2 - sqrt 2)
    # [a a b q]:   (2, sqrt 2)/(2 + sqrt 2)  = (2 - sqrt 2, sqrt 2 - 1)   (the training window labelled b:
    #              p(b) = sqrt 2 - 1, as in the loss infimum of test_finite)
    auto = mix.automaton()
    r = auto.predict(["a", "b", "c", "q"])
    assert r.retrieved == ("a", "b")
    assert r.distribution == pytest.approx({"a": SQRT2 - 1, "b": 2 - SQRT2}, abs=1e-12)
    r = auto.predict(["a", "a", "b", "q"])
    assert r.distribution == pytest.approx({"a": 2 - SQRT2, "b": SQRT2 - 1}, abs=1e-12)


def test_mix_acyclic_parts_retrieve_a_single_token(mix):
    auto = mix.automaton()
    assert auto.predict(["c", "d", "q"]).distribution == {"c": 1.0}  # c -> d, c -> q in G^(q)
    assert auto.predict(["d", "r"]).distribution == {"d": 1.0}  # d -> r in G^(r)
    assert auto.predict(["b", "d", "q"]).distribution == pytest.approx({"b": 1.0})  # {a,b} reaches d via c


def test_windows_without_a_dominant_scc_are_reported(mix):
    auto = mix.automaton()
    # d and q are both sinks of G^(q): neither reaches the other
    r = auto.predict(["d", "q"])
    assert r.status == "no dominant SCC" and r.retrieved == () and r.distribution == {}
    # r never occurs with query q: an isolated node of G^(q)
    assert auto.predict(["r", "c", "q"]).status == "no dominant SCC"


def test_unseen_query_and_bad_tokens(mix):
    auto = mix.automaton()
    r = auto.predict(["a", "c"])  # c is never the last token of a training window
    assert r.status == "unseen query" and r.distribution == {}
    with pytest.raises(InputError, match="not in the vocabulary"):
        auto.predict(["a", "zebra", "q"])
    with pytest.raises(InputError, match="empty"):
        auto.predict([])


def test_automaton_is_the_limit_of_attention_along_the_path(mix):
    # §5.5: at large R the attention of W_R concentrates on the dominant SCC with weights softmax(W^fin).
    # At R = 20 the cross-SCC gaps are about R/||W^svm|| ~ 9.4 and ||Pi W_R - W^fin|| ~ 1e-5 (test_path),
    # so the attention must match the automaton to about e^-9.4 ~ 1e-4.
    problem = PenalisedLoss(mix.stats, mix.score_map, in_pair_space=True)
    x, _, _ = solve_radius(problem, 20.0, np.zeros(problem.size()), 1.0)
    W = problem.to_matrix(x)
    vocab = mix.corpus.vocab
    E = mix.corpus.E
    auto = mix.automaton()
    for window in (["a", "b", "c", "q"], ["a", "a", "b", "d", "q"], ["c", "d", "q"], ["b", "c", "q"]):
        ids = [vocab.index(t) for t in window]
        s = E[ids] @ W @ E[ids[-1]]
        attention = np.exp(s - s.max())
        attention /= attention.sum()
        mass = {t: float(attention[[w == t for w in window]].sum()) for t in set(window)}
        predicted = auto.predict(window).distribution
        for t in mass:
            assert mass[t] == pytest.approx(predicted.get(t, 0.0), abs=1e-3)
