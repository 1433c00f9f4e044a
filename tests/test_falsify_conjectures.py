"""Built-in conjectures on hand-solved datasets (one training run each)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from theorycheck.falsify import get_conjecture, make_candidate
from theorycheck.falsify.conjectures import (
    analyze_candidate,
    generalised_graph_svm,
    solve_graph_svm_linf,
)
from theorycheck.falsify.evidence import DISCARDED, HOLDS, VIOLATED
from theorycheck.path import frobenius_cos
from theorycheck.svm import solve_graph_svm_nuclear

# One window "t2 t3 t1 t0 -> t3" (query t0): G^(t0) has t3 -> t0, t1, t2.  Frobenius Graph-SVM
# (THEORY §3.2): sigma = (-1/4, -1/4, -1/4, 3/4) in column t0, ||W^svm||^2 = 3/4.
ONE_WINDOW = make_candidate([[2, 3, 1, 0]], [3], np.eye(4), "one-hot", 0)
# Two windows "t1 t2 -> t1" (query t2) and "t1 t0 -> t1" (query t0): one edge per query.
#   W_F = (e1 - e2) e2^T / 2 + (e1 - e0) e0^T / 2, singular values sqrt(3)/2 and 1/2.
#   Nuclear-norm Graph-SVM: W_N = u v^T, u = (-1/3, 2/3, -1/3), v = e0 + e2, ||W_N||_* = 2/sqrt(3);
#   optimal because lambda = 1/sqrt(3) on both constraints is dual feasible,
#   ||lambda (A1 + A2)||_op = lambda ||2 W_F||_op = 1, with the same value 2 lambda = 2/sqrt(3).
#   cos(W_F, W_N) = <W_F, W_N> / (||W_F|| ||W_N||_F) = 1 / (1 * 2/sqrt(3)) = sqrt(3)/2.
TWO_QUERIES = make_candidate([[1, 2], [1, 0]], [1, 1], np.eye(3), "one-hot", 0)
SQRT3_2 = np.sqrt(3) / 2


def test_frobenius_and_nuclear_targets_by_hand():
    pred, _ = analyze_candidate(TWO_QUERIES)
    W_F = np.zeros((3, 3))
    W_F[[1, 0], 0] = [0.5, -0.5]
    W_F[[1, 2], 2] = [0.5, -0.5]
    W_N = np.outer([-1 / 3, 2 / 3, -1 / 3], [1, 0, 1])
    assert np.allclose(pred.W_svm, W_F, atol=1e-9)
    assert np.allclose(solve_graph_svm_nuclear(pred.corpus.E, pred.graphs).W, W_N, atol=1e-5)
    assert frobenius_cos(W_F, W_N) == pytest.approx(SQRT3_2, abs=1e-12)


def test_linf_graph_svm_by_hand():
    """min max|sigma| s.t. sigma_3 - sigma_b >= 1 (b = 0, 1, 2): t* = 1/2 forces sigma_3 = 1/2 and
    sigma_b = -1/2; every other entry of W is 0 at the least Frobenius norm."""
    pred, _ = analyze_candidate(ONE_WINDOW)
    expected = np.zeros((4, 4))
    expected[:, 0] = [-0.5, -0.5, -0.5, 0.5]
    assert np.allclose(solve_graph_svm_linf(pred.corpus.E, pred.graphs), expected, atol=1e-6)


def test_kq_frobenius_violated_on_the_two_query_example():
    out = get_conjecture("kq-frobenius").evaluate(TWO_QUERIES)
    assert out.status == VIOLATED and out.criterion == "direction"
    f = out.headline
    ev = f.evidence
    assert ev["alternative_angle_deg"] <= 8.0  # the run heads for W_N (cos >= 0.99)
    # spherical triangle inequality: angle(u, W_F) >= angle(W_N, W_F) - angle(u, W_N), angle(W_N, W_F) = 30°
    assert f.value >= 30.0 - ev["alternative_angle_deg"] - 1e-6
    assert ev["limit_lower_bound_deg"] > f.tolerance  # the run's whole limit interval is off W_F


def test_adam_frobenius_violated_along_the_sign_direction():
    """Adam is invariant to a constant rescaling of each coordinate's gradient history; on one
    window the non-label coordinates of column t0 share the profile of p_b(t) and the label's
    is their sum, so every step moves W along s = (-1, -1, -1, +1) in column t0:
    cos(s, W^svm) = 2 sqrt(m - 1)/m = sqrt(3)/2 for m = 4 tokens."""
    out = get_conjecture("adam-frobenius").evaluate(ONE_WINDOW)
    assert out.status == VIOLATED
    ev = out.headline.evidence
    assert ev["angle_deg"] == pytest.approx(30.0, abs=1e-3)  # arccos(sqrt(3)/2)
    assert ev["turn_bound_deg"] <= 1e-3  # a fixed heading: it does not turn
    assert ev["alternative_angle_deg"] <= 1e-3  # the l_inf Graph-SVM is the sign direction here
    assert "direction" in out.details["verify"]["failed"]  # the verify stage fails the same criterion
    assert out.details["verify"]["direction_value"] == out.headline.value


@pytest.mark.parametrize("m", [2, 3, 5])
def test_adam_heading_on_one_window_of_m_tokens(m):
    """The same sign-pattern argument for m tokens: heading cos 2 sqrt(m - 1)/m with W^svm
    (1 for m = 2, where the sign pattern is the Frobenius direction: never a violation)."""
    window = list(range(1, m)) + [0]
    out = get_conjecture("adam-frobenius").evaluate(make_candidate([window], [m - 1], np.eye(m), "one-hot", 1))
    expected = np.degrees(np.arccos(2 * np.sqrt(m - 1) / m))
    assert out.headline.evidence["angle_deg"] == pytest.approx(expected, abs=1e-3)
    assert out.status == (HOLDS if m == 2 else VIOLATED)


@pytest.mark.parametrize("cand", [ONE_WINDOW, TWO_QUERIES], ids=["one-window", "two-queries"])
def test_li2024_holds_on_the_same_data(cand):
    out = get_conjecture("li2024").evaluate(cand)
    assert out.status == HOLDS
    assert out.headline is not None and out.details["verify"]["verdict"] == "HOLDS"
    direction = next(f for f in out.findings if f.id == "direction")
    assert direction.value + direction.evidence["turn_bound_deg"] <= direction.tolerance


def test_generalised_graph_svm_by_hand():
    """Window t0 t1 t2 (query t2) with selected set {t0, t1}: t0, t1 share an SCC (equal scores
    v) above t2 (score w): min 2 v^2 + w^2 s.t. v - w >= 1 gives v = 1/3, w = -2/3."""
    cand = make_candidate([[0, 1, 2]], [0], np.eye(3))
    graphs, W = generalised_graph_svm(cand, [(0, 1)])
    expected = np.zeros((3, 3))
    expected[:, 2] = [1 / 3, 1 / 3, -2 / 3]
    assert np.allclose(W, expected, atol=1e-9)
    assert graphs.scc_size.max() == 2


def test_tarzanagh_identity_log_selects_the_label_and_recovers_li_svm():
    out = get_conjecture("tarzanagh2023").evaluate(replace(ONE_WINDOW, options=(("head", "iden"), ("loss", "log"))))
    assert out.details["selected_sets"] == [[3]]  # only the label keeps attention
    assert out.details["svm_gen_norm"] == pytest.approx(np.sqrt(0.75), abs=1e-9)  # = ||W^svm|| above
    assert out.status == HOLDS and out.headline.value <= out.headline.tolerance


@pytest.mark.parametrize("name,cand,reason", [
    ("li2024", make_candidate([[0, 1]], [2], np.eye(3)), "realizable labels"),
    ("kq-frobenius", make_candidate([[0, 1], [1, 2]], [1, 0], np.eye(3)), "realizable labels"),
    ("li2024", make_candidate([[0, 1, 2]], [0], np.array([[1.0, 0], [0, 1], [0.6, 0.8]])), "linearly independent"),
    ("li2024", make_candidate([[0, 1], [0, 1]], [0, 1], np.eye(2)), "W^svm != 0"),
    ("nonorthogonal-global", ONE_WINDOW, "equi-correlated"),
    ("tarzanagh2023", make_candidate([[0, 1, 2]], [0], np.ones((3, 2)) / np.sqrt(2)), "linearly independent"),
])
def test_assumption_breaking_candidates_are_discarded(name, cand, reason):
    out = get_conjecture(name).evaluate(cand)
    assert out.status == DISCARDED and out.headline is None
    assert any(reason in r for r in out.reasons), out.reasons
