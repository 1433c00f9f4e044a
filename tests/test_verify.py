"""verify: paper-style data HOLDS, broken assumptions are NOT APPLICABLE, wrong predictions are VIOLATED."""

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import theorycheck
from theorycheck.cli import app
from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.train import TrainConfig
from theorycheck.verify import build_heldout, verify

NGD = TrainConfig(optimizer="ngd", lr=0.01, steps=4000)  # the papers' experiments (THEORY §6)
GD = TrainConfig(optimizer="gd", lr=1.0, steps=10_000)  # the theorem's optimiser, eta = 1 (THEORY §8)


def paper(graphs, seed, embeddings="orthonormal", **kw):
    spec = dict(n=6, T=4, K=6, d=8) if graphs == "cyclic" else dict(n=4, T=6, K=8, d=8)
    spec.update(kw)
    return theorycheck.analyze(synthetic(**spec, embeddings=embeddings, graphs=graphs, seed=seed), radii=None)


@pytest.mark.parametrize("graphs", ["cyclic", "acyclic"])
@pytest.mark.parametrize("config", [NGD, GD], ids=["ngd", "gd"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_paper_style_data_holds(graphs, config, seed):
    pred = paper(graphs, seed)
    result = verify(pred, config, heldout=build_heldout(pred, probes=100, seed=seed))
    failed = [(c.id, c.value) for c in result.verdict.criteria if c.passed is False]
    assert result.verdict.verdict == "HOLDS", failed
    last = result.train.checkpoints[-1]
    assert last["cos_svm"] >= 0.95  # THEORY P10 bound on the full W as well
    if graphs == "acyclic":
        assert pred.finite.dim == 0 and last["loss"] < 1e-2  # P8


def test_unit_norm_embeddings_hold_under_gd():
    pred = paper("cyclic", 1, embeddings="unit-norm")
    assert verify(pred, GD).verdict.verdict == "HOLDS"


def test_nonzero_finite_component_is_reached():
    """Cycle with labels a, a, b: W^fin has e_a^T W e_q - e_b^T W e_q = ln 2 (moment matching)."""
    vocab = ("a", "b", "c", "q")
    corpus = corpus_from_windows([[0, 1, 3]] * 3 + [[1, 2, 3]], [0, 0, 1, 1], vocab)
    pred = theorycheck.analyze(corpus, radii=None)
    assert pred.W_fin[0, 3] - pred.W_fin[1, 3] == pytest.approx(np.log(2), abs=1e-12)
    result = verify(pred, GD)
    assert result.verdict.verdict == "HOLDS"
    assert result.train.checkpoints[-1]["fin_distance"] < 2e-3


def swapped_priorities(pred):
    """W^svm with the values of the top and bottom SCC of one query exchanged."""
    g = pred.graphs
    E = pred.corpus.E
    M = E @ pred.W_svm @ E.T
    for q in g.queries:
        sccs = g.sccs_of_query(int(q))
        if len(sccs) >= 2:
            a, b = int(sccs[0][0]), int(sccs[-1][0])
            M[[a, b], q] = M[[b, a], q]
            return dataclasses.replace(pred, svm=dataclasses.replace(pred.svm, W=E.T @ M @ E))
    raise AssertionError("no query with two SCCs")


@pytest.mark.parametrize("config", [NGD, GD], ids=["ngd", "gd"])
def test_swapped_priorities_are_detected(config):
    wrong = swapped_priorities(paper("cyclic", 1))
    result = verify(wrong, config)
    assert result.verdict.verdict == "VIOLATED"
    direction = next(c for c in result.verdict.criteria if c.id == "direction")
    assert direction.passed is False and direction.still_improving is False


def test_wrong_finite_component_is_detected():
    vocab = ("a", "b", "c", "q")
    corpus = corpus_from_windows([[0, 1, 3]] * 3 + [[1, 2, 3]], [0, 0, 1, 1], vocab)
    pred = theorycheck.analyze(corpus, radii=None)
    W_fin = pred.W_fin.copy()
    W_fin[0, 3] += 0.1  # stays in S_fin after re-centring: shift a up and b down
    W_fin[1, 3] -= 0.1
    wrong = dataclasses.replace(pred, finite=dataclasses.replace(pred.finite, W=W_fin))
    result = verify(wrong, GD)
    assert result.verdict.verdict == "VIOLATED"
    assert {"finite_component", "train_composition"} & {c.id for c in result.verdict.criteria if c.passed is False}


def test_too_small_budget_is_inconclusive_not_violated():
    pred = paper("cyclic", 1)
    result = verify(pred, TrainConfig(optimizer="ngd", lr=0.01, steps=100))
    assert result.verdict.verdict == "INCONCLUSIVE"
    assert result.verdict.exit_code == 4


def test_dependent_embeddings_are_not_applicable():
    # K = 8 tokens in d = 4 dimensions: E cannot have linearly independent rows
    pred = theorycheck.analyze(synthetic(n=6, T=4, K=8, d=4, embeddings="unit-norm", seed=1), radii=None)
    assert not pred.applicable
    result = verify(pred, TrainConfig(steps=200))
    assert result.verdict.verdict == "NOT APPLICABLE" and result.verdict.exit_code == 3


def test_adam_is_outside_the_theorem():
    result = verify(paper("cyclic", 1), TrainConfig(optimizer="adam", lr=0.01, steps=200))
    assert result.verdict.verdict == "NOT APPLICABLE"
    assert any("Adam" in r for r in result.verdict.reasons)


def test_factorised_model_is_compared_with_the_nuclear_norm_svm():
    pred = paper("acyclic", 1)
    result = verify(pred, TrainConfig(optimizer="ngd", lr=0.01, steps=300, factorized_width=8))
    assert result.target_kind == "nuclear"
    # nuclear-norm solution satisfies the same constraints with unit minimum margin
    from theorycheck.svm import check_constraints

    margin, violation = check_constraints(result.target, pred.corpus.E, pred.graphs)
    assert margin == pytest.approx(1.0, abs=1e-5) and violation < 1e-5


def test_interrupted_run_is_incomplete_and_keeps_its_trajectory():
    pred = paper("cyclic", 1)

    def stop(step):
        if step == 500:
            raise KeyboardInterrupt

    result = verify(pred, NGD, on_step=stop)
    assert result.verdict.verdict == "INCOMPLETE" and result.train.steps_done == 500
    assert result.train.checkpoints[-1]["step"] == 500


def test_cli_verify_outputs_and_reproducibility(tmp_path):
    runner = CliRunner()
    spec = "synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=2"
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = runner.invoke(app, ["verify", spec, "--out", str(out), "--lr", "0.01", "--steps", "4000", "--seed", "5"])
        assert res.exit_code == 0, res.output
        outs.append(out)
    for f in ("results.json", "trajectory.json", "W_trained.npy", "W_svm.npy", "W_fin.npy"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    results = json.loads((outs[0] / "results.json").read_text())
    assert results["verify"]["verdict"] == "HOLDS"
    assert {c["id"] for c in results["verify"]["criteria"]} >= {"direction", "finite_component", "heldout_retrieval"}
    W = np.load(outs[0] / "W_trained.npy", allow_pickle=False)
    assert W.shape == (8, 8) and W.dtype == np.float64


def test_cli_verify_exit_codes(tmp_path):
    runner = CliRunner()
    spec = "synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=2"
    res = runner.invoke(app, ["verify", spec, "--out", str(tmp_path / "x"), "--optimizer", "adam", "--steps", "50"])
    assert res.exit_code == 3
    res = runner.invoke(app, ["verify", spec, "--out", str(tmp_path / "y"), "--optimizer", "sgd"])
    assert res.exit_code == 2 and "Traceback" not in res.output and "unknown optimizer" in res.output
    res = runner.invoke(app, ["verify", spec, "--out", str(tmp_path / "z"), "--steps", "30", "--lr", "0.01"])
    assert res.exit_code == 4
