"""Power: every slightly wrong prediction is refuted, or left open only where the run's stated
resolution is coarser than the error; the true prediction is never refuted.  The full table over
>= 100 datasets is benchmarks/bench_power.py (marked slow here)."""

from __future__ import annotations

import numpy as np
import pytest

import theorycheck
from theorycheck.corpus.synthetic import synthetic
from theorycheck.power import FAMILIES, judge_families, wrong_predictions
from theorycheck.train import TrainConfig
from theorycheck.verify import HOLDS, VIOLATED, _angle, build_heldout, finite_scale

DATASETS = {
    "unit-norm n=6": dict(n=6, T=4, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=1),
    "orthonormal n=50": dict(n=50, T=8, K=20, d=20, embeddings="orthonormal", graphs="cyclic", seed=3),
    "unit-norm n=100": dict(n=100, T=8, K=30, d=30, embeddings="unit-norm", graphs="cyclic", seed=4),
}


def family_error(pred, family, W_svm, W_fin, tol):
    """The size of a family's error in the unit its resolution is stated in."""
    if W_svm is not None:
        return np.degrees(_angle(W_svm, pred.W_svm)), "direction_deg"
    c, c_true = pred.subspace.coords(W_fin), pred.subspace.coords(pred.W_fin)
    return float(np.linalg.norm(c - c_true)) / finite_scale(c_true, tol), "finite_relative"


@pytest.fixture(scope="module", params=list(DATASETS))
def judged(request):
    pred = theorycheck.analyze(synthetic(**DATASETS[request.param]), radii=None)
    config = TrainConfig()
    return pred, judge_families(pred, config, heldout=build_heldout(pred, probes=100))


def test_families_apply(judged):
    pred, results = judged
    assert set(results) - {"truth"} == set(FAMILIES)  # every dataset has two SCCs and W^fin != 0


def test_true_prediction_is_not_violated(judged):
    _, results = judged
    assert results["truth"].verdict.verdict != VIOLATED


def test_wrong_predictions_never_hold_and_are_refuted_within_the_resolution(judged):
    pred, results = judged
    truth = results["truth"].verdict
    wrong = wrong_predictions(pred)
    for family, judgement in results.items():
        if family == "truth":
            continue
        v = judgement.verdict
        assert v.verdict != HOLDS, family
        if v.verdict != VIOLATED:
            error, key = family_error(pred, family, *wrong[family], _tolerances(truth))
            resolution = truth.resolution.get(key)
            assert resolution is None or resolution > error, (family, error, resolution)


def _tolerances(verdict):
    from theorycheck.verify import Tolerances

    return Tolerances(**verdict.tolerances)


def test_priority_swaps_and_zero_finite_part_are_always_violated(judged):
    _, results = judged
    assert results["swap"].verdict.verdict == VIOLATED
    assert results["fin_zero"].verdict.verdict == VIOLATED


@pytest.mark.slow
def test_power_table_over_many_datasets():
    """The benchmark's table (benchmarks/bench_power.py) at the default budget of docs/verify.md
    (96,000 steps): 0 false alarms at both budgets, 0 wrong HOLD, >= 90 % of the wrong predictions
    VIOLATED."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))  # spawned workers inherit sys.path
    import bench_power as bench
    table = bench.run(bench.datasets(100), TrainConfig(steps=max(TrainConfig().steps, 96_000)), workers=2)
    assert table["false_alarms"] == 0 and table["false_alarms_paper"] == 0
    assert table["wrong_held"] == 0
    assert not table["open_beyond_resolution"]  # every open wrong prediction is finer than the run resolves
    assert table["detected_fraction"] >= 0.9, table["detected_fraction"]
    detected = {}
    for key, counts in table["table"].items():
        family = key.split(" | ")[0]
        v, n = detected.get(family, (0, 0))
        detected[family] = (v + counts.get("VIOLATED", 0), n + sum(counts.values()))
    for family, (v, n) in detected.items():
        # the 90 % target per family; a 5 % W^svm error (about 2.9°) is finer than the direction
        # resolution on unit-norm cyclic data (median 3.6°, measured 32 % there, 77 % over all), so that
        # family is held to its resolution only
        if family != "svm_5pct":
            assert v / n >= 0.9, (family, v, n)
