"""Checks P0-P14 on the paper's synthetic setting, on corpora that break a precondition, and on
deliberately wrong data (each check must be able to fail)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from theorycheck.scansnap.checks import (
    HOLDS,
    NOT_APPLICABLE,
    P0_TOL,
    VIOLATED,
    ScanSnapOptions,
    base_preconditions,
    check_p8,
    check_p10_p11,
    check_p14,
    evaluate_checks,
    loglog_slope,
    main_config,
    p6_monotone_fraction,
    p7_regression,
    run_scansnap,
)
from theorycheck.scansnap.stats import corpus_statistics
from theorycheck.scansnap.synthetic import scansnap_synthetic

FAST = dict(workers=0, sweeps=False, snap=False, compare=False)


@pytest.fixture(scope="module")
def syn_small():
    """The default pipeline on Syn-Small (K=2, M=33, T=128), serial campaign."""
    return run_scansnap(scansnap_synthetic(seed=1), ScanSnapOptions(workers=0, seed=1, compare=False))


def test_syn_small_every_theory_check_holds(syn_small):
    checks = syn_small.results["checks"]
    assert list(checks) == [f"P{i}" for i in range(15)]
    for cid in [f"P{i}" for i in range(13)]:
        c = checks[cid]
        assert c["outcome"] == HOLDS, (cid, c["statistic"], c["reason"])
        assert c["preconditions_held"] and c["eligible"] > 0
    # P13 needs the residual model, P14 real text
    assert checks["P13"]["outcome"] == NOT_APPLICABLE and not checks["P13"]["preconditions"]["residual_model"]["holds"]
    assert checks["P14"]["outcome"] == NOT_APPLICABLE
    assert syn_small.exit_code == 0 and syn_small.results["verdict"]["outcome"] == HOLDS
    # Assumption 2 fails on Syn-Small (every f_n.f_n' = 0.72 at t = 0, §2) and is reported, not required
    a2 = syn_small.results["preconditions"]["weak_correlations_A2"]
    assert not a2["holds"] and not a2["required"]
    assert syn_small.results["assumption2"]["t0"]["max_offdiagonal"] == pytest.approx(0.72, abs=0.01)


def test_p8_transition_time_scales_as_one_over_eta_y(syn_small):
    d = syn_small.results["checks"]["P8"]["details"]
    eta, t_half = np.array(d["eta_y"]), np.array(d["t_half"])
    assert eta.max() / eta.min() >= 16 and len(eta) >= 4
    slope = np.polyfit(np.log(eta), np.log(t_half), 1)[0]  # independent of the check's own fit
    assert -1.15 <= slope <= -0.85
    # eta_Z has no effect (x50 range at eta_Y = 1) and the level is 2 K ln M / eta_Y within x2
    tz = np.array(d["t_half_vs_eta_z"])
    assert max(d["eta_z_range"]) / min(d["eta_z_range"]) >= 50
    assert (tz.max() - tz.min()) / np.median(tz) <= 0.10
    level = t_half * eta / (2 * 2 * math.log(33))
    assert np.all((level >= 0.5) & (level <= 2.0))


def test_p9_snap_decelerates(syn_small):
    d = syn_small.results["checks"]["P9"]["details"]
    for cl in d["per_class"]:
        slopes = cl["slopes"]
        assert slopes[0] == max(slopes) and slopes[-1] <= 0.7 * slopes[0]  # peak in [t0, 4 t0], then decay
        assert cl["entropy_end"] > 0.5 and cl["max_attention_end"] < 0.95


def test_p10_p11_reproduce_the_direction_of_fig6(syn_small):
    d = syn_small.results["checks"]["P10"]["details"]
    H = np.array(d["mean_entropy"])  # rows eta_Z ascending, columns ratio ascending
    assert np.all(np.diff(H, axis=0) < 0)  # sparser with eta_Z at every ratio
    assert np.all(H[:, -1] > H[:, 0])  # denser with the ratio at every eta_Z
    # Fig. 6 (K=2, eta_Z = 0.5 and 1; 10 seeds): 2.007/2.066/2.092 and 1.937/2.022/2.053 (std <= .05)
    np.testing.assert_allclose(H[1:], [[2.007, 2.066, 2.092], [1.937, 2.022, 2.053]], atol=0.05)


def test_p3_variant_follows_the_common_token_structure(syn_small):
    """Syn-Small meets Corollary 2's symmetry (strict: every common Delta z < 0); with two queries
    the weak relations apply (median_CT < median_DT per query, common mass falls per class)."""
    strict = syn_small.results["checks"]["P3"]
    assert strict["details"]["variant"] == "strict" and strict["details"]["max_common_delta_z"] < 0
    corpus = scansnap_synthetic(K=4, queries=2, n=256, seed=2)
    res = run_scansnap(corpus, ScanSnapOptions(steps=400, **FAST))
    weak = res.results["checks"]["P3"]
    assert weak["details"]["variant"] == "weak" and weak["outcome"] == HOLDS
    assert weak["eligible"] == 2 + 4  # one median relation per query, one mass relation per class
    assert all(e < s for s, e in zip(weak["details"]["common_mass_t0"], weak["details"]["common_mass_end"]))


def test_inverted_attention_is_detected(syn_small):
    """Feed the checks a trajectory whose attention moved the opposite way: P2-P4 must fail."""
    traj = syn_small.trajectory
    stats = syn_small.stats
    flipped = replace(traj, Zq=2 * traj.Zq[0][None] - traj.Zq)
    opt = ScanSnapOptions(workers=0, seed=1)
    cfg = main_config(stats, opt)
    checks = evaluate_checks(stats, flipped, cfg, opt, [])
    for cid in ("P2", "P3", "P4"):
        assert checks[cid]["outcome"] == VIOLATED, cid
    assert checks["P5"]["outcome"] == VIOLATED  # kappa < 0 when distinct tokens fall


def test_p1_detects_attention_that_is_not_co_occurrence(syn_small):
    """P1 runs the model's forward pass at Z(0): a Z(0) that is not 0 (here: the attention of the
    trained model) no longer averages to P-hat, and the check says so."""
    from theorycheck.scansnap.checks import check_p1

    stats, traj = syn_small.stats, syn_small.trajectory
    assert check_p1(stats, traj, True)["outcome"] == HOLDS
    trained = replace(traj, Z0=traj.Z)
    assert check_p1(stats, trained, True)["outcome"] == VIOLATED


def test_p6_and_p7_statistics_by_hand():
    z_dom = np.array([0.0, 0.1, 0.3, 0.6])
    assert p6_monotone_fraction(z_dom, np.array([[0.0], [0.05], [0.1], [0.2]])) == 1.0
    # the other token overtakes once (gap 0.1 -> 0.05) and the dominant one dips once
    assert p6_monotone_fraction(np.array([0.0, 0.1, 0.3, 0.2]), np.array([[0.0], [0.0], [0.25], [0.0]])) \
        == pytest.approx(4 / 6)
    F = np.eye(4)[:, :2]
    coef, resid = p7_regression(np.array([2.0, -1.0, 0.0, 0.0]), F)
    np.testing.assert_allclose(coef, [2.0, -1.0], atol=1e-15)
    assert resid == pytest.approx(0.0, abs=1e-15)
    assert p7_regression(np.array([0.0, 0.0, 1.0, 0.0]), F)[1] == pytest.approx(1.0)


def _p8_runs(t_of):
    runs = []
    for ey in (0.125, 0.25, 0.5, 1.0, 2.0):
        runs.append(({"kind": "p8", "eta_y": ey, "eta_z": 0.02}, {"t_half": t_of(ey, 0.02)}))
    for ez in (0.002, 0.02, 0.1):
        runs.append(({"kind": "p8", "eta_y": 1.0, "eta_z": ez}, {"t_half": t_of(1.0, ez)}))
    return runs


def test_p8_detects_wrong_scaling():
    stats = corpus_statistics(scansnap_synthetic(n=64, seed=0))
    opt = ScanSnapOptions()
    pre = base_preconditions(stats, main_config(stats, opt))
    level = 2 * 2 * math.log(33)
    assert check_p8(stats, opt, _p8_runs(lambda ey, ez: level / ey), pre)["outcome"] == HOLDS
    wrong = check_p8(stats, opt, _p8_runs(lambda ey, ez: level / ey**2), pre)
    assert wrong["outcome"] == VIOLATED and wrong["statistic"] == pytest.approx(-2.0)
    assert check_p8(stats, opt, _p8_runs(lambda ey, ez: level / ey * (1 + 3 * ez)), pre)["outcome"] == VIOLATED
    assert check_p8(stats, opt, _p8_runs(lambda ey, ez: 5 * level / ey), pre)["outcome"] == VIOLATED
    assert check_p8(stats, opt, _p8_runs(lambda ey, ez: math.inf), pre)["outcome"] == VIOLATED


def test_p10_p11_detect_reversed_sparsity():
    stats = corpus_statistics(scansnap_synthetic(n=64, seed=0))
    opt = ScanSnapOptions()
    pre = base_preconditions(stats, main_config(stats, opt))

    def runs(H):
        return [({"kind": "p10", "eta_z": ez, "ratio": q, "seed": s}, {"entropy": H(ez, q)})
                for ez in (0.25, 0.5, 1.0) for q in (2.0, 5.0, 10.0) for s in range(5)]

    good10, good11 = check_p10_p11(stats, opt, runs(lambda ez, q: 2.0 - ez + 0.01 * q), pre)
    assert good10["outcome"] == HOLDS and good11["outcome"] == HOLDS
    bad10, bad11 = check_p10_p11(stats, opt, runs(lambda ez, q: 2.0 + ez - 0.01 * q), pre)
    assert bad10["outcome"] == VIOLATED and bad11["outcome"] == VIOLATED


def test_p14_detects_entropy_that_never_plateaus():
    corpus = scansnap_synthetic(n=32, seed=0)
    stats = corpus_statistics(corpus)
    stats = replace(stats, class_next=np.zeros_like(stats.class_next))  # pretend psi fails (real text)
    opt = ScanSnapOptions()
    pre = base_preconditions(stats, main_config(stats, opt))

    def runs(late):
        return [({"kind": "p14", "eta": eta, "seed": s, "config": {"steps": 10_000}},
                 {"entropy": 3 - eta - late, "entropy_t0": 3.2, "entropy_10pct": 3.1 - eta, "entropy_50pct": 3 - eta})
                for eta in (1.0, 2.0, 4.0) for s in range(3)]

    ZqT = np.zeros((stats.C, stats.M))
    assert check_p14(stats, opt, runs(0.01), pre, ZqT)["outcome"] == HOLDS
    assert check_p14(stats, opt, runs(0.5), pre, ZqT)["outcome"] == VIOLATED


@pytest.mark.parametrize("change,failed", [({"optimizer": "adam"}, "plain_sgd"),
                                           ({"weight_decay": 1e-3}, "no_weight_decay")])
def test_adam_and_weight_decay_make_the_sgd_checks_not_applicable(change, failed):
    corpus = scansnap_synthetic(n=256, seed=2)
    res = run_scansnap(corpus, ScanSnapOptions(steps=200, **FAST, **change))
    checks = res.results["checks"]
    for cid in ["P0"] + [f"P{i}" for i in range(2, 13)]:
        assert checks[cid]["outcome"] == NOT_APPLICABLE, cid
        assert not checks[cid]["preconditions"][failed]["holds"]
    assert checks["P1"]["outcome"] == HOLDS  # Lemma 2 at Z = 0 does not involve the optimizer
    if failed == "plain_sgd":  # Adam moved the row sums: P0 would fail if it applied
        assert checks["P0"]["statistic"] > P0_TOL
    else:  # weight decay shrinks every row sum towards 0, so sums that start at 0 (Y = Z = 0) stay there
        assert checks["P0"]["statistic"] < P0_TOL


def test_several_queries_per_next_token_is_not_applicable():
    corpus = scansnap_synthetic(K=4, queries=2, n=256, seed=3)
    n0 = corpus.vocab.index("n0")
    label = corpus.label.copy()
    label[corpus.label == corpus.vocab.index("n2")] = n0  # n0 now follows q0 and q1
    corpus = replace(corpus, label=label)
    res = run_scansnap(corpus, ScanSnapOptions(steps=200, **FAST))
    checks = res.results["checks"]
    for cid in [f"P{i}" for i in range(2, 14)]:
        assert checks[cid]["outcome"] == NOT_APPLICABLE, cid
        assert not checks[cid]["preconditions"]["next_token_determines_query"]["holds"]
    assert checks["P0"]["outcome"] == HOLDS and checks["P1"]["outcome"] == HOLDS


def test_random_init_makes_p1_not_applicable_and_no_check_gives_exit_3():
    corpus = scansnap_synthetic(n=128, seed=4)
    res = run_scansnap(corpus, ScanSnapOptions(steps=100, init="random", optimizer="adam", **FAST))
    assert res.results["checks"]["P1"]["outcome"] == NOT_APPLICABLE
    assert res.results["verdict"]["applicable"] == [] and res.exit_code == 3


def test_p13_residual_variant_prefers_local_labels():
    """Cross tokens (one class of every query) are globally common but locally distinct; with the
    residual (§3.8) they behave as distinct."""
    corpus = scansnap_synthetic(K=4, queries=2, cross=2, n=512, seed=5)
    res = run_scansnap(corpus, ScanSnapOptions(steps=1000, residual=True, **FAST))
    p13 = res.results["checks"]["P13"]
    assert p13["outcome"] == HOLDS and p13["details"]["tokens_whose_label_differs"]
    assert p13["details"]["pass_rate_local"] > p13["details"]["pass_rate_global"]
    for cid in ("P2", "P3", "P7"):  # the no-residual theory does not cover this model
        assert res.results["checks"][cid]["outcome"] == NOT_APPLICABLE
    plain = run_scansnap(corpus, ScanSnapOptions(steps=50, **FAST))
    assert plain.results["checks"]["P13"]["outcome"] == NOT_APPLICABLE


def test_p14_runs_on_general_next_token_data():
    """Li-style data (psi fails): the unified-rate campaign runs and larger rates give sparser
    attention (P14(b))."""
    from theorycheck.corpus.synthetic import synthetic

    corpus = synthetic(n=200, T=12, K=6, seed=1)
    res = run_scansnap(corpus, ScanSnapOptions(steps=400, workers=0, compare=False, snap=False))
    p14 = res.results["checks"]["P14"]
    assert p14["preconditions_held"], p14["reason"]
    assert p14["details"]["rate_sweep"]["spearman"] <= -0.8
    assert p14["eligible"] == 9


def test_results_json_schema(syn_small):
    r = syn_small.results
    for key in ("schema_version", "corpus", "options", "training", "preconditions", "assumption2", "checks",
                "verdict", "figures"):
        assert key in r
    for c in r["checks"].values():
        assert set(c) >= {"id", "statistic", "threshold", "eligible", "preconditions", "outcome"}
        assert c["outcome"] in (HOLDS, VIOLATED, NOT_APPLICABLE)
        for p in c["preconditions"].values():
            assert set(p) == {"holds", "required", "detail"}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5, 6])
def test_syn_small_holds_across_seeds(seed):
    res = run_scansnap(scansnap_synthetic(seed=seed), ScanSnapOptions(workers=0, seed=seed, compare=False))
    bad = {k: c["statistic"] for k, c in res.results["checks"].items() if c["outcome"] == VIOLATED}
    assert not bad and res.exit_code == 0


@pytest.mark.slow
def test_syn_medium_holds():
    res = run_scansnap(scansnap_synthetic(K=6, queries=3, seed=1), ScanSnapOptions(seed=1, compare=False))
    bad = {k: c["statistic"] for k, c in res.results["checks"].items() if c["outcome"] == VIOLATED}
    assert not bad and res.exit_code == 0


@pytest.mark.slow
def test_p8_level_grows_with_k_ln_m():
    """t_1/2 eta_Y grows with K ln M within a factor 2 across (K, M) (P8, §3.7)."""
    levels = []
    for K, queries in ((2, 1), (6, 3), (10, 5)):
        corpus = scansnap_synthetic(K=K, queries=queries, n=1024, seed=7)
        res = run_scansnap(corpus, ScanSnapOptions(workers=0, compare=False, snap=False, sweep_seeds=1,
                                                   sweep_eta_z=(0.25,), sweep_ratios=(2.0,), p12_eta_z=(0.05,)))
        d = res.results["checks"]["P8"]["details"]
        M = res.stats.M
        t_eta = float(np.mean(np.array(d["t_half"]) * np.array(d["eta_y"])))
        levels.append((K * math.log(M), t_eta))
        assert -1.15 <= loglog_slope(d["eta_y"], d["t_half"]) <= -0.85
    for (x1, y1), (x2, y2) in zip(levels, levels[1:]):
        assert y2 > y1
        assert 0.5 <= (y2 / y1) / (x2 / x1) <= 2.0
