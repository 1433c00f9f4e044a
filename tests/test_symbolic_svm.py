"""Exact KKT certificates of W^svm: hand-solved toys, paper-style synthetic data, rejections.

Independent facts used: the chain and cycle toys are solved by hand (derivations in the
comments); the two certificate forms (SCC values with potentials and flows, and dense
Gram elimination on the d×d problem) are different algorithms and must agree exactly on
one-hot data; tampered certificates must fail the exact verifiers.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from theorycheck.corpus.synthetic import synthetic
from theorycheck.graphs import build_graphs
from theorycheck.svm import check_constraints, constraint_rows, solve_graph_svm
from theorycheck.symbolic.exact import to_fractions
from theorycheck.symbolic.svm_certificate import (
    AGREEMENT,
    DUAL,
    PRIMAL,
    SLACKNESS,
    STATIONARITY,
    certify_general,
    certify_scc,
    certify_svm,
    verify_general_kkt,
    verify_scc_kkt,
)

A, B, C, Q = range(4)
F = Fraction


@pytest.fixture(scope="module")
def chain(request):
    """["a","b","q"] -> a, ["b","c","q"] -> b (one-hot). G^(q): a->b, a->q, b->c, b->q, acyclic.

    min ||v||^2 s.t. v_a - v_b >= 1, v_a - v_q >= 1, v_b - v_c >= 1, v_b - v_q >= 1.  With
    a->b, b->c, b->q active: v = (t+1, t, t-1, t-1), sum minimised at t = 1/4, so
    v = (5/4, 1/4, -3/4, -3/4) (a->q has slack 1); 2v = sum lambda (e_src - e_dst) gives
    lambda_ab = 5/2, lambda_bc = lambda_bq = 3/2 >= 0.
    """
    from theorycheck.corpus.types import corpus_from_windows

    corpus = corpus_from_windows([[A, B, Q], [B, C, Q]], [A, B], ("a", "b", "c", "q"))
    graphs = build_graphs(corpus)
    return corpus, graphs, solve_graph_svm(corpus.E, graphs)


@pytest.fixture(scope="module")
def cycle():
    """[a,b,q] -> a, [a,b,q] -> b, [a,c,q] -> a (one-hot): SCC {a, b} above c and q in G^(q).

    min 2 v_ab^2 + v_c^2 + v_q^2 s.t. v_ab - v_c >= 1, v_ab - v_q >= 1: by symmetry
    v_c = v_q = v_ab - 1 and 4 v + 4 (v - 1) = 0, so v_ab = 1/2, v_c = v_q = -1/2,
    ||W||^2 = 1; stationarity 2|C| v_C = outflow - inflow gives lambda = 1 on both edges.
    """
    from theorycheck.corpus.types import corpus_from_windows

    corpus = corpus_from_windows([[A, B, Q], [A, B, Q], [A, C, Q]], [A, B, A], ("a", "b", "c", "q"))
    graphs = build_graphs(corpus)
    return corpus, graphs, solve_graph_svm(corpus.E, graphs)


def multipliers_by_tokens(cert):
    return {(a, b): lam for a, b, _, lam in cert.inequality_multipliers}


@pytest.mark.parametrize("form", ["scc", "general"])
def test_chain_certificate_is_the_hand_solution(chain, form):
    corpus, graphs, svm = chain
    cert = certify_svm(corpus.E, graphs, svm.W, form=form)
    assert cert.certified, cert.conditions
    assert cert.W[:, Q].tolist() == [F(5, 4), F(1, 4), F(-3, 4), F(-3, 4)]
    assert all(x == 0 for x in cert.W[:, :Q].reshape(-1))
    assert multipliers_by_tokens(cert) == {(A, B): F(5, 2), (B, C): F(3, 2), (B, Q): F(3, 2)}
    assert cert.norm_squared == F(11, 4)


@pytest.mark.parametrize("form", ["scc", "general"])
def test_cycle_certificate_is_the_hand_solution(cycle, form):
    corpus, graphs, svm = cycle
    cert = certify_svm(corpus.E, graphs, svm.W, form=form)
    assert cert.certified, cert.conditions
    assert cert.W[:, Q].tolist() == [F(1, 2), F(1, 2), F(-1, 2), F(-1, 2)]
    assert cert.norm_squared == 1
    if form == "scc":  # one multiplier per condensation edge: {a,b} -> c and {a,b} -> q
        assert sorted(lam for *_, lam in cert.inequality_multipliers) == [1, 1]
    else:  # rows are TPG edges and an equality; multipliers are not unique, the identity is
        ga, gb, gk, ea, eb, ek = constraint_rows(graphs)
        assert verify_general_kkt(to_fractions(corpus.E), cert.W, (ga, gb, gk),
                                  _full(cert.inequality_multipliers, ga, gb, gk),
                                  (ea, eb, ek), _full(cert.equality_multipliers, ea, eb, ek))[2].holds


def _full(listed, a, b, k):
    values = {(x, y, z): v for x, y, z, v in listed}
    return [values.get((int(x), int(y), int(z)), F(0)) for x, y, z in zip(a, b, k, strict=True)]


@pytest.mark.parametrize("entry", [(A, Q), (B, Q), (C, Q), (Q, Q), (C, A), (Q, B)])
@pytest.mark.parametrize("step", [1e-3, -1e-3])
def test_a_perturbed_solution_is_rejected_with_the_failing_condition_named(chain, entry, step):
    corpus, graphs, svm = chain
    W = svm.W.copy()
    W[entry] += step
    cert = certify_svm(corpus.E, graphs, W)
    assert cert.status == "rejected"
    assert cert.failed == [AGREEMENT]  # the exact optimum is still found and certified
    assert "1.00e-03" in next(c.detail for c in cert.conditions if c.name == AGREEMENT)
    assert cert.norm_squared == F(11, 4)


def test_without_refinement_the_perturbed_active_set_fails_primal_feasibility(chain):
    corpus, graphs, svm = chain
    W = svm.W.copy()
    W[A, Q] += 1e-3  # a->b now has slack 1e-3 > tolerance: dropped from the active set
    cert = certify_scc(corpus.E, graphs, W, max_refinements=0)
    assert cert.status == "rejected"
    assert PRIMAL in cert.failed
    assert "below margin 1" in next(c.detail for c in cert.conditions if c.name == PRIMAL)


def _scc_data(graphs, cert):
    value = {}
    for p in range(graphs.n_pairs):
        c = int(graphs.scc[p])
        if c in set(graphs.cond_src.tolist()) | set(graphs.cond_dst.tolist()):
            value[c] = cert.W[graphs.pair_token[p], graphs.pair_query[p]]
    lam_of = multipliers_by_tokens(cert)
    lam = []
    for s, d in zip(graphs.cond_src, graphs.cond_dst, strict=True):
        a = int(graphs.pair_token[graphs.scc == s][0])
        b = int(graphs.pair_token[graphs.scc == d][0])
        lam.append(lam_of.get((a, b), F(0)))
    return value, lam


def test_scc_verifier_rejects_tampered_certificates(chain):
    corpus, graphs, svm = chain
    cert = certify_scc(corpus.E, graphs, svm.W)
    value, lam = _scc_data(graphs, cert)
    assert all(c.holds for c in verify_scc_kkt(graphs, value, lam))
    bumped = list(lam)
    bumped[int(np.flatnonzero([x != 0 for x in lam])[0])] += F(1, 1000)
    failed = [c.name for c in verify_scc_kkt(graphs, value, bumped) if not c.holds]
    assert failed == [STATIONARITY]
    # a multiplier on the inactive edge a->q: stationarity and complementary slackness break
    moved = list(lam)
    moved[int(np.flatnonzero([x == 0 for x in lam])[0])] += F(1, 1000)
    assert {STATIONARITY, SLACKNESS} <= {c.name for c in verify_scc_kkt(graphs, value, moved) if not c.holds}
    negative = [-x for x in lam]
    assert DUAL in [c.name for c in verify_scc_kkt(graphs, value, negative) if not c.holds]
    shifted = {c: v - F(1, 1000) if v == F(5, 4) else v for c, v in value.items()}
    assert PRIMAL in [c.name for c in verify_scc_kkt(graphs, shifted, lam) if not c.holds]


def test_general_verifier_rejects_a_matrix_moved_by_one_thousandth(chain):
    corpus, graphs, svm = chain
    cert = certify_general(corpus.E, graphs, svm.W)
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs)
    lam, mu = _full(cert.inequality_multipliers, ga, gb, gk), _full(cert.equality_multipliers, ea, eb, ek)
    E = to_fractions(corpus.E)
    assert all(c.holds for c in verify_general_kkt(E, cert.W, (ga, gb, gk), lam, (ea, eb, ek), mu))
    W = cert.W.copy()
    W[C, A] += F(1, 1000)  # off every constraint: only stationarity can notice
    failed = [c.name for c in verify_general_kkt(E, W, (ga, gb, gk), lam, (ea, eb, ek), mu) if not c.holds]
    assert failed == [STATIONARITY]


def paper_corpus(embeddings, seed):
    return synthetic(n=6, T=4, K=6, d=8, embeddings=embeddings, graphs="cyclic", seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_style_orthonormal_data_certify_in_both_forms(seed):
    corpus = paper_corpus("orthonormal", seed)
    graphs = build_graphs(corpus)
    svm = solve_graph_svm(corpus.E, graphs)
    scc = certify_svm(corpus.E, graphs, svm.W, form="scc")
    general = certify_svm(corpus.E, graphs, svm.W, form="general")
    assert scc.certified and general.certified, (scc.conditions, general.conditions)
    assert scc.assumes  # exact for the score-space problem, E E^T = I only to float precision
    # different algorithms, different exactness (E E^T = I vs E as stored): agree to float precision
    assert float(abs(scc.norm_squared - general.norm_squared)) <= 1e-12 * float(general.norm_squared)
    W_exact = np.array([[float(x) for x in row] for row in general.W])
    margin, violation = check_constraints(W_exact, corpus.E, graphs)
    assert violation <= 1e-12 and abs(margin - 1) <= 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_style_unit_norm_data_certify_exactly(seed):
    corpus = paper_corpus("unit-norm", seed)
    graphs = build_graphs(corpus)
    svm = solve_graph_svm(corpus.E, graphs)
    cert = certify_svm(corpus.E, graphs, svm.W)
    assert cert.form.startswith("general") and cert.certified, cert.conditions
    assert cert.distance <= 1e-6 * np.sqrt(float(cert.norm_squared))
    W = svm.W.copy()
    W[0, 0] += 1e-3
    assert certify_svm(corpus.E, graphs, W).failed == [AGREEMENT]


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_agreement_is_relative_at_every_scale_of_the_embeddings(scale):
    # W* scales as 1 / c^2: at c = 1e3, ||W*|| ~ 1e-6 and the old floor max(1, ||W*||) accepted any W
    corpus = paper_corpus("unit-norm", 0)
    graphs = build_graphs(corpus)
    E = corpus.E * scale
    svm = solve_graph_svm(E, graphs)
    cert = certify_svm(E, graphs, svm.W)
    assert cert.certified, cert.conditions
    assert cert.distance <= 1e-9 * np.sqrt(float(cert.norm_squared))
    assert certify_svm(E, graphs, svm.W * (1 + 1e-4)).failed == [AGREEMENT]  # 1e-4 relative off: rejected


def test_size_limits_report_too_large(chain):
    corpus, graphs, svm = chain
    assert certify_scc(corpus.E, graphs, svm.W, max_edges=1).status == "too large"
    too_big = certify_general(corpus.E, graphs, svm.W, max_rows=1)
    assert too_big.status == "too large" and "limit 1" in too_big.message


def test_json_is_serialisable_and_exact(chain):
    corpus, graphs, svm = chain
    data = json.loads(json.dumps(certify_svm(corpus.E, graphs, svm.W).to_json(corpus.vocab)))
    assert data["status"] == "certified" and data["norm_squared"] == "11/4"
    values = {tuple(v["tokens"]): Fraction(v["value"]) for v in data["scc_values"]}
    assert values[("a",)] == F(5, 4) and values[("q",)] == F(-3, 4)
    assert {(m["a"], m["b"]): Fraction(m["lambda"]) for m in data["inequality_multipliers"]} == {
        ("a", "b"): F(5, 2), ("b", "c"): F(3, 2), ("b", "q"): F(3, 2)}
