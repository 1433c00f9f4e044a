"""The Y/Z model against independent facts: finite differences, the conservation law,
the closed-form decoder dynamics (Lemmas 5-7) and the kappa invariant (Eq. 11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from theorycheck.scansnap.checks import coefficient_of_variation, p5_kappa
from theorycheck.scansnap.model import (
    TrainConfig,
    closed_form_alpha,
    crossing_time,
    decoder_closed_form,
    loss_and_grad,
    population_alpha,
    train,
)
from theorycheck.scansnap.stats import corpus_statistics
from theorycheck.scansnap.synthetic import scansnap_synthetic


@pytest.fixture(scope="module")
def small_stats():
    return corpus_statistics(scansnap_synthetic(K=2, n=256, seed=5))


def _batch(stats, rng, B=6):
    idx = rng.integers(0, stats.N, size=B)
    return stats.context[idx].toarray(), stats.query[idx], stats.next[idx]


@pytest.mark.parametrize("residual", [False, True])
def test_gradient_matches_central_differences(small_stats, residual):
    rng = np.random.default_rng(1)
    M = small_stats.M
    Y, Z = rng.normal(size=(M, M)), rng.normal(size=(M, M))
    ctx, q, n = _batch(small_stats, rng)
    _, gY, gZ, _ = loss_and_grad(Y, Z, ctx, q, n, residual)
    for _ in range(3):
        dY, dZ = rng.normal(size=(M, M)), rng.normal(size=(M, M))
        h = 1e-5
        plus = loss_and_grad(Y + h * dY, Z + h * dZ, ctx, q, n, residual)[0]
        minus = loss_and_grad(Y - h * dY, Z - h * dZ, ctx, q, n, residual)[0]
        fd = (plus - minus) / (2 * h)
        assert (gY * dY).sum() + (gZ * dZ).sum() == pytest.approx(fd, rel=1e-7, abs=1e-9)


def test_gradient_matches_lemma1_formula(small_stats):
    """dL/dz_m = -diag(s) P^perp_s / ||s|| Y (e_n - alpha) for a single sample (Eq. 4)."""
    rng = np.random.default_rng(2)
    M = small_stats.M
    Y, Z = rng.normal(size=(M, M)), rng.normal(size=(M, M))
    ctx, q, n = _batch(small_stats, rng, B=1)
    _, gY, gZ, info = loss_and_grad(Y, Z, ctx, q, n)
    s = info["s"][0]
    v = s / np.linalg.norm(s)
    logits = Y.T @ v
    alpha = np.exp(logits - logits.max())
    alpha /= alpha.sum()
    e = np.zeros(M)
    e[n[0]] = 1.0
    P_perp = np.eye(M) - np.outer(s, s) / (s @ s)
    expected = -np.diag(s) @ P_perp @ Y @ (e - alpha) / np.linalg.norm(s)
    np.testing.assert_allclose(gZ[q[0]], expected, atol=1e-12)
    np.testing.assert_allclose(gY, -np.outer(v, e - alpha), atol=1e-12)  # Eq. 3


def test_query_does_not_attend_to_itself(small_stats):
    """Raising z_mm (the query's own logit) changes nothing: the query is not a key."""
    rng = np.random.default_rng(3)
    M = small_stats.M
    Y, Z = rng.normal(size=(M, M)), rng.normal(size=(M, M))
    ctx, q, n = _batch(small_stats, rng)
    Z2 = Z.copy()
    Z2[q, q] += 7.0
    assert loss_and_grad(Y, Z, ctx, q, n)[0] == loss_and_grad(Y, Z2, ctx, q, n)[0]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_row_sums_are_conserved_to_1e12(small_stats, momentum):
    cfg = TrainConfig(eta_y=2.0, eta_z=1.0, steps=300, momentum=momentum, init="random", seed=4)
    traj = train(small_stats, cfg)
    assert np.abs(traj.Y.sum(axis=1) - traj.Y0.sum(axis=1)).max() < 1e-12
    assert np.abs(traj.Z.sum(axis=1) - traj.Z0.sum(axis=1)).max() < 1e-12
    assert np.abs(traj.Z - traj.Z0).max() > 0.1  # it did train
    assert traj.rowsum_drift_Z.max() < 1e-12 and traj.rowsum_drift_Y.max() < 1e-12


@pytest.mark.parametrize("change", [{"weight_decay": 0.01}, {"optimizer": "adam"}])
def test_weight_decay_and_adam_break_conservation(small_stats, change):
    cfg = TrainConfig(eta_y=0.5, eta_z=0.2, steps=100, init="random", seed=4, **change)
    traj = train(small_stats, cfg)
    drift = max(np.abs(traj.Y.sum(axis=1) - traj.Y0.sum(axis=1)).max(),
                np.abs(traj.Z.sum(axis=1) - traj.Z0.sum(axis=1)).max())
    assert drift > 1e-6


def test_decoder_only_dynamics_follow_lemma5_closed_form():
    """Frozen attention, disjoint class supports (E = 0), batch of one class per step:
    alpha_nn after s updates of class n equals e^{Mh*(s)} / ((M-1) + e^{Mh*(s)})."""
    M, eta = 9, 0.7
    # class 0 context: tokens 0,1 (counts 3,1); class 1: tokens 2,3,4 (2,2,1); query 5; next 6, 7
    ctx = np.zeros((2, M))
    ctx[0, [0, 1]] = [3, 1]
    ctx[1, [2, 3, 4]] = [2, 2, 1]
    query, nxt = np.array([5, 5]), np.array([6, 7])
    Y, Z = np.zeros((M, M)), np.zeros((M, M))
    updates = [0, 0]
    schedule = [0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1] * 3
    h = decoder_closed_form(M, eta, len(schedule))
    for c in schedule:
        _, gY, _, _ = loss_and_grad(Y, Z, ctx[[c]], query[[c]], nxt[[c]])
        Y -= eta * gY  # eta_Z = 0: attention frozen (Assumption 1(c) taken to the limit)
        updates[c] += 1
        for k in (0, 1):
            f = ctx[k] / np.linalg.norm(ctx[k])
            logits = Y.T @ f
            alpha = np.exp(logits - logits.max())
            alpha /= alpha.sum()
            assert alpha[nxt[k]] == pytest.approx(closed_form_alpha(M, h[updates[k]]), rel=1e-12)


def lemma6_residual(h: float, M: int, eta: float, s: int) -> float:
    return math.exp(M * h) + (M - 1) * M * h - M * eta * s - 1


def test_lemma6_and_lemma7_continuous_solution_brackets_the_recursion():
    """e^{Mh} + (M-1) M h = M eta s + 1 (Lemma 6) and 0 <= h*(s) - h(s) <= 2 eta / M (Lemma 7)."""
    for M, eta in ((50, 0.5), (1000, 0.1), (33, 1.0)):
        h_star = decoder_closed_form(M, eta, 400)
        for s in (1, 10, 100, 400):
            upper = math.log(M * eta * s + 1) / M  # e^{Mh} <= M eta s + 1
            h = brentq(lemma6_residual, 0.0, upper, args=(M, eta, s), xtol=1e-15)
            assert -1e-12 <= h_star[s] - h <= 2 * eta / M


def test_kappa_invariant_holds_in_the_population_limit():
    """Eq. 11 integrated: (e^{-2z(0)} - e^{-2z(t)}) / P(l|n)^2 is the same for every distinct token.
    With the exact population (one sample per class, counts ∝ P) it is exact as eta_Z/eta_Y -> 0:
    the spread shrinks in proportion to eta_Z, and the wrong exponent P^1 is far from invariant."""
    M = 13
    ctx = np.zeros((2, M))
    ctx[:, 0], ctx[:, 1] = 30, 20  # two common tokens
    ctx[0, 2:6] = [10, 20, 30, 40]  # distinct tokens of class 0
    ctx[1, 6:10] = [10, 20, 30, 40]
    query, nxt = np.array([10, 10]), np.array([11, 12])
    P = ctx[0] / ctx[0].sum()
    cvs = {}
    for eta_z in (0.001, 0.01):
        Y, Z = np.zeros((M, M)), np.zeros((M, M))
        for _ in range(1500):
            _, gY, gZ, _ = loss_and_grad(Y, Z, ctx, query, nxt)
            Y -= gY
            Z -= eta_z * gZ
        kappa = p5_kappa(0.0, Z[10, 2:6], P[2:6])
        assert kappa.min() > 0  # distinct tokens rose (Theorem 2(a))
        assert np.all(Z[10, :2] < 0)  # common tokens fell (Corollary 2)
        cvs[eta_z] = coefficient_of_variation(kappa)
        wrong = (1 - np.exp(-2 * Z[10, 2:6])) / P[2:6]
        assert coefficient_of_variation(wrong) > 0.3
    assert cvs[0.001] < 0.005
    assert 5 < cvs[0.01] / cvs[0.001] < 20  # first-order in eta_Z


def test_population_alpha_is_the_model_at_infinite_length(small_stats):
    """A sample whose counts are exactly ∝ P-hat has the population's alpha (Lemma 2)."""
    rng = np.random.default_rng(6)
    M = small_stats.M
    Y, Z = rng.normal(size=(M, M)), rng.normal(size=(M, M))
    c, f, alpha = population_alpha(Y, Z[small_stats.class_query], small_stats)
    ctx = small_stats.P * 1e6
    _, _, _, info = loss_and_grad(Y, Z, ctx, small_stats.class_query, small_stats.class_next)
    np.testing.assert_allclose(info["s"], c, atol=1e-12)
    np.testing.assert_allclose(info["p_correct"], alpha[np.arange(small_stats.C), small_stats.class_next],
                               atol=1e-12)


def test_crossing_time_interpolates():
    assert crossing_time(np.array([0.1, 0.3, 0.7, 0.9])) == pytest.approx(1.5)
    assert crossing_time(np.array([0.6])) == 0.0
    assert crossing_time(np.array([0.1, 0.2])) == math.inf


def test_training_is_deterministic_in_the_seed(small_stats):
    cfg = TrainConfig(eta_y=1.0, eta_z=0.3, steps=50, init="random", seed=11)
    a, b = train(small_stats, cfg), train(small_stats, cfg)
    assert np.array_equal(a.Z, b.Z) and np.array_equal(a.Y, b.Y)
    c = train(small_stats, TrainConfig(eta_y=1.0, eta_z=0.3, steps=50, init="random", seed=12))
    assert not np.array_equal(a.Z, c.Z)
