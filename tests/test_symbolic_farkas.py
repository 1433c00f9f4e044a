"""Exact Farkas certificates of Graph-SVM infeasibility.

Independent fact: with e_c = (e_a + e_b)/2 and c the label of windows holding a and b
(query q), the constraints (e_c - e_a)^T W e_q >= 1 and (e_c - e_b)^T W e_q >= 1 sum to
0 >= 2, so y = (1/2, 1/2) on those two rows is a certificate.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from theorycheck.corpus.types import corpus_from_windows
from theorycheck.graphs import build_graphs
from theorycheck.predictions import analyze
from theorycheck.symbolic.exact import independent_rows, to_fractions
from theorycheck.symbolic.farkas import (
    COMBINATION,
    GENUINE,
    NONNEGATIVE,
    NORMALISED,
    certify_infeasibility,
    verify_farkas,
)

A, B, C, Q = range(4)
VOCAB = ("a", "b", "c", "q")


def midpoint_corpus(E):
    return corpus_from_windows([[A, C, Q], [B, C, Q]], [C, C], VOCAB, E=E, embedding_kind="file")


@pytest.fixture(scope="module")
def infeasible():
    E = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    corpus = midpoint_corpus(E)
    return corpus, build_graphs(corpus)


def test_midpoint_instance_has_the_hand_certificate(infeasible):
    corpus, graphs = infeasible
    cert = certify_infeasibility(corpus.E, graphs)
    assert cert.certified, cert.conditions
    assert sorted(cert.inequalities) == [(C, A, Q, Fraction(1, 2)), (C, B, Q, Fraction(1, 2))]
    assert cert.equalities == ()
    # independent re-check by hand: sum y (e_c - e_x) e_q^T = 0
    E = [[Fraction(x) for x in row] for row in corpus.E]
    total = [[sum(y * (E[a][i] - E[b][i]) * E[k][j] for a, b, k, y in cert.inequalities) for j in range(3)]
             for i in range(3)]
    assert all(x == 0 for row in total for x in row)


def test_certificate_attached_by_analyze_verifies_exactly(infeasible):
    corpus, graphs = infeasible
    pred = analyze(corpus, radii=None)
    assert pred.svm is None and pred.infeasibility
    cert = certify_infeasibility(corpus.E, graphs, pred.infeasibility)
    assert cert.certified
    data = cert.to_json(corpus.vocab)
    assert {(r["a"], r["b"], r["y"]) for r in data["inequalities"]} == {("c", "a", "1/2"), ("c", "b", "1/2")}


def failed(corpus, graphs, ineq, eq=()):
    return [c.name for c in verify_farkas(corpus.E, graphs, ineq, eq) if not c.holds]


def test_tampered_certificates_are_rejected(infeasible):
    corpus, graphs = infeasible
    half = Fraction(1, 2)
    assert failed(corpus, graphs, [(C, A, Q, half), (C, B, Q, half)]) == []
    moved = [(C, A, Q, half + Fraction(1, 1000)), (C, B, Q, half - Fraction(1, 1000))]
    assert failed(corpus, graphs, moved) == [COMBINATION]
    assert failed(corpus, graphs, [(C, A, Q, 1), (C, B, Q, 1)]) == [NORMALISED]
    assert NONNEGATIVE in failed(corpus, graphs, [(C, A, Q, -half), (C, B, Q, -half)])
    # a row that is no constraint of the graphs (q -> c is not an edge: the edge is c -> q)
    assert GENUINE in failed(corpus, graphs, [(C, A, Q, half), (C, B, Q, half), (Q, C, Q, Fraction(0))])


def test_feasible_data_have_no_certificate():
    corpus = corpus_from_windows([[A, B, Q], [B, C, Q]], [A, B], VOCAB)
    cert = certify_infeasibility(corpus.E, build_graphs(corpus))
    assert cert.status == "no certificate"


def test_rounding_that_breaks_exact_infeasibility_is_not_certified():
    X = np.random.default_rng(1).standard_normal((3, 3))
    E = np.vstack([X[0], X[1], (X[0] + X[1]) / 2, X[2]])
    exact_midpoint = all(Fraction(E[C, i]) == (Fraction(E[A, i]) + Fraction(E[B, i])) / 2 for i in range(3))
    assert not exact_midpoint  # float64 rounded the midpoint
    # the three constraint rows (e_c - e_x) e_q^T, x in {a, b, q}, are then exactly independent, so no
    # combination of them vanishes: by Farkas' lemma the stored data are feasible
    differences = to_fractions(E[C])[None, :] - to_fractions(E[[A, B, Q]])
    assert independent_rows(differences) == [0, 1, 2]
    corpus = midpoint_corpus(E)
    cert = certify_infeasibility(corpus.E, build_graphs(corpus))
    assert cert.status in ("rejected", "no certificate")
    assert not cert.certified
