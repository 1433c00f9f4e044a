"""verify: true predictions are never VIOLATED, wrong ones are, broken assumptions are NOT
APPLICABLE, and every verdict states what it holds to (issue "Verdicts that mean something")."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import theorycheck
from theorycheck.cli import app
from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.power import swap_top_bottom
from theorycheck.train import TrainConfig
from theorycheck.verify import (
    HOLDS,
    INCONCLUSIVE,
    VIOLATED,
    _angle,
    build_heldout,
    judge_trajectory,
    perpendicular_directions,
    replace_predictions,
    verify,
)

PAPER_NGD = TrainConfig(optimizer="ngd", lr=0.01, steps=4000, schedule="constant")  # the papers' experiments
GD = TrainConfig(optimizer="gd", lr=1.0, steps=10_000)  # the theorem's optimiser, eta = 1 (THEORY §8)
DEFAULT = TrainConfig()  # ngd, lr 0.05 decaying like 1/t from step 1000
# the default budget docs/verify.md asks for (96,000 steps): where the bundled corpus locates its direction
# within the 0.75° tolerance; TrainConfig() once the CLI default is raised to it
BUDGET = TrainConfig(steps=max(TrainConfig().steps, 96_000))


def paper(graphs, seed, embeddings="orthonormal", **kw):
    spec = dict(n=6, T=4, K=6, d=8) if graphs == "cyclic" else dict(n=4, T=6, K=8, d=8)
    spec.update(kw)
    return theorycheck.analyze(synthetic(**spec, embeddings=embeddings, graphs=graphs, seed=seed), radii=None)


@pytest.fixture(scope="module")
def cyclic_run():
    pred = paper("cyclic", 1, embeddings="unit-norm")
    return pred, verify(pred, DEFAULT, heldout=build_heldout(pred, probes=100, seed=1))


@pytest.mark.parametrize("graphs", ["cyclic", "acyclic"])
@pytest.mark.parametrize("config", [PAPER_NGD, GD, DEFAULT], ids=["paper-ngd", "gd", "default"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_true_predictions_are_never_violated(graphs, config, seed):
    pred = paper(graphs, seed)
    result = verify(pred, config, heldout=build_heldout(pred, probes=100, seed=seed), with_resolution=False)
    bad = [(c.id, c.value, c.uncertainty) for c in result.verdict.criteria if c.status == VIOLATED]
    assert result.verdict.verdict in (HOLDS, INCONCLUSIVE), bad
    if graphs == "acyclic":
        assert pred.finite.dim == 0 and result.records[-1]["loss"] < 1e-2  # P8


def test_bundled_corpus_holds_at_the_defaults_and_states_its_resolution():
    """`theorycheck verify` with no arguments: HOLDS, with the limit located within the
    tolerances (direction within 0.75°, W^fin within 2 %) and a direction resolution of at most 1°
    (the issue's target)."""
    from theorycheck.corpus.readers import read_pydoc

    pred = theorycheck.analyze(read_pydoc(window=6, vocab=20), radii=None)
    result = verify(pred, BUDGET, heldout=build_heldout(pred, probes=200, seed=0))
    v = result.verdict
    assert v.verdict == HOLDS, v.statement()
    d, f = v.criterion("direction"), v.criterion("finite_component")
    assert d.upper <= d.tolerance and f.upper <= 0.01 * np.linalg.norm(pred.W_fin)  # W^fin reached to 1 %
    assert v.resolution["direction_deg"] <= 1.0
    from theorycheck.power import feasible_svm_error

    wrong = feasible_svm_error(pred, np.random.default_rng(3))  # a 5 % error on the occurring scores, about 2.9°
    judged = judge_trajectory(result.trajectory, replace_predictions(pred, W_svm=wrong), BUDGET, with_resolution=False)
    assert judged.verdict.criterion("direction").status == VIOLATED
    assert v.resolution["finite_relative"] < 0.05
    assert v.statement().startswith("HOLDS: direction within ")


def test_nonzero_finite_component_is_reached_under_gd():
    """Cycle with labels a, a, b: W^fin has e_a^T W e_q - e_b^T W e_q = ln 2 (moment matching)."""
    vocab = ("a", "b", "c", "q")
    corpus = corpus_from_windows([[0, 1, 3]] * 3 + [[1, 2, 3]], [0, 0, 1, 1], vocab)
    pred = theorycheck.analyze(corpus, radii=None)
    # W^fin is solved to ||grad|| <= 1e-12; with the reduced loss's curvature here (~0.2) that is ~5e-12 in W
    assert pred.W_fin[0, 3] - pred.W_fin[1, 3] == pytest.approx(np.log(2), abs=1e-11)
    result = verify(pred, GD)
    f = result.verdict.criterion("finite_component")
    assert f.status == HOLDS and f.value < 2e-3
    wrong = pred.W_fin.copy()
    wrong[0, 3] += 0.05  # a moment-matching error of 0.1 in the score difference
    wrong[1, 3] -= 0.05
    judged = judge_trajectory(result.trajectory, replace_predictions(pred, W_fin=wrong), GD, with_resolution=False)
    assert judged.verdict.verdict == VIOLATED
    assert judged.verdict.criterion("finite_component").status == VIOLATED


def test_swapped_priorities_are_violated_by_the_exact_order_criterion(cyclic_run):
    pred, result = cyclic_run
    wrong = replace_predictions(pred, W_svm=swap_top_bottom(pred, np.random.default_rng(0)))
    judged = judge_trajectory(result.trajectory, wrong, DEFAULT, with_resolution=False)
    assert judged.verdict.verdict == VIOLATED
    assert judged.verdict.criterion("priority_order").status == VIOLATED


def test_the_direction_tolerance_is_a_real_boundary(cyclic_run):
    """The stated direction resolution: a W^svm turned by 1.05 times it is VIOLATED in every
    direction tried, and by 0.95 times it is not VIOLATED in at least one."""
    pred, result = cyclic_run
    res = result.verdict.resolution["direction_deg"]
    assert res is not None and 0 < res < 10
    u = pred.W_svm / np.linalg.norm(pred.W_svm)
    outcomes = {}
    for factor in (0.95, 1.05):
        t = np.radians(factor * res)
        verdicts = []
        for N in perpendicular_directions(pred, pred.W_svm, 8):
            W = np.cos(t) * u + np.sin(t) * N
            assert _angle(W, u) == pytest.approx(t, abs=1e-9)
            j = judge_trajectory(result.trajectory, replace_predictions(pred, W_svm=W), DEFAULT, with_resolution=False,
                                 evidence=None)
            verdicts.append(j.verdict.criterion("direction").status)
        outcomes[factor] = verdicts
    assert all(v == VIOLATED for v in outcomes[1.05])
    assert any(v != VIOLATED for v in outcomes[0.95])


def test_rejudging_the_own_predictions_reproduces_the_verdict(cyclic_run):
    pred, result = cyclic_run
    again = judge_trajectory(result.trajectory, pred, DEFAULT, heldout=result.heldout)
    assert again.verdict.as_dict() == result.verdict.as_dict()


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
    from theorycheck.svm import check_constraints

    margin, violation = check_constraints(result.target, pred.corpus.E, pred.graphs)
    assert margin == pytest.approx(1.0, abs=1e-5) and violation < 1e-5
    assert result.verdict.criterion("finite_component").applies is False


def test_too_few_checkpoints_or_steps_are_inconclusive_not_an_error():
    pred = paper("cyclic", 1)
    for config in (TrainConfig(steps=2), TrainConfig(steps=4000, checkpoints=3)):
        result = verify(pred, config)
        assert result.verdict.verdict == INCONCLUSIVE
        assert any("checkpoints" in r for r in result.verdict.reasons)


def test_interrupted_run_is_incomplete_and_keeps_its_trajectory():
    pred = paper("cyclic", 1)

    def stop(step):
        if step == 500:
            raise KeyboardInterrupt

    result = verify(pred, PAPER_NGD, on_step=stop)
    assert result.verdict.verdict == "INCOMPLETE" and result.train.steps_done == 500
    assert result.records[-1]["step"] == 500 and result.trajectory.steps[-1] == 500


SPEC = "synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=2"


def test_cli_verify_outputs_and_reproducibility(tmp_path):
    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = runner.invoke(app, ["verify", SPEC, "--out", str(out), "--steps", "6000", "--seed", "5"])
        assert res.exit_code in (0, 4), res.output
        outs.append(out)
    for f in ("results.json", "trajectory.json", "W_trained.npy", "W_svm.npy", "W_fin.npy", "checkpoints.npz"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    results = json.loads((outs[0] / "results.json").read_text())
    v = results["verify"]
    assert v["verdict"] in ("HOLDS", "INCONCLUSIVE") and v["statement"].startswith(v["verdict"])
    assert {"direction_deg", "finite_relative", "swaps_tried", "swaps_detected"} <= set(v["resolution"])
    assert {c["id"] for c in v["criteria"]} >= {"direction", "priority_order", "finite_component", "loss_floor",
                                                "heldout_retrieval"}
    with np.load(outs[0] / "checkpoints.npz", allow_pickle=False) as z:
        assert z["steps"][-1] == 6000 and z["pair_scores"].shape[0] == z["steps"].size


def test_cli_verify_exit_codes(tmp_path):
    runner = CliRunner()

    def code(*args):
        res = runner.invoke(app, ["verify", SPEC, "--out", str(tmp_path / str(len(os.listdir(tmp_path)))), *args])
        assert "Traceback" not in res.output
        return res.exit_code, res.output

    assert code("--optimizer", "adam", "--steps", "50")[0] == 3
    assert code("--optimizer", "sgd")[0] == 2
    assert code("--steps", "30")[0] == 4
    rc, out = code("--optimizer", "gd", "--lr", "1e308", "--steps", "200")
    assert rc == 2 and "--lr" in out  # diverged or overflowing: bad input, never a verdict
    assert code("--tol-angle", "nan", "--steps", "30")[0] == 2
    assert code("--checkpoints", "0")[0] == 2


def test_sigterm_keeps_the_partial_run_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "theorycheck", "verify", SPEC, "--steps", "50000000",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (out / "results.json").exists() and time.time() < deadline:  # analyze done, training started
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    results = json.loads((out / "results.json").read_text())
    assert results["verify"]["verdict"] == "INCOMPLETE"
    assert (out / "W_trained.npy").exists() and (out / "trajectory.json").exists()
    res = CliRunner().invoke(app, ["report", "--from", str(out)])  # re-rendering an interrupted run succeeds
    assert res.exit_code == 0 and "interrupted" in res.output and (out / "report.html").exists()


# --------------------------------------------------------------------------- judge
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("judge") / "run"
    res = CliRunner().invoke(app, ["verify", "examples/paper_cyclic_n6T4K6d8.jsonl", "--embeddings",
                                   "examples/paper_cyclic_n6T4K6d8_embeddings.json", "--out", str(out)])
    assert res.exit_code in (0, 4), res.output
    return out


def judge(*args):
    res = CliRunner().invoke(app, ["judge", *map(str, args)])
    assert "Traceback" not in res.output
    return res


def test_judge_reproduces_verify_on_the_own_predictions(run_dir, tmp_path):
    res = judge(run_dir, "--out", tmp_path / "j")
    stored = json.loads((run_dir / "results.json").read_text())["verify"]
    again = json.loads((tmp_path / "j" / "judgement.json").read_text())
    assert res.exit_code == stored["exit_code"]
    assert again["criteria"] == stored["criteria"] and again["resolution"] == stored["resolution"]


def test_judge_refutes_a_wrong_finite_component_and_a_swapped_direction(run_dir, tmp_path):
    W_fin = np.load(run_dir / "W_fin.npy", allow_pickle=False)
    W_svm = np.load(run_dir / "W_svm.npy", allow_pickle=False)
    np.save(tmp_path / "fin0.npy", np.zeros_like(W_fin))
    res = judge(run_dir, "--w-fin", tmp_path / "fin0.npy")
    if np.linalg.norm(W_fin) > 1e-2:
        assert res.exit_code == 1 and "VIOLATED" in res.output
    np.save(tmp_path / "svm_neg.npy", -W_svm)
    res = judge(run_dir, "--w-svm", tmp_path / "svm_neg.npy", "--out", tmp_path / "neg")
    assert res.exit_code == 1
    criteria = {c["id"]: c for c in json.loads((tmp_path / "neg" / "judgement.json").read_text())["criteria"]}
    assert criteria["priority_order"]["status"] == "VIOLATED"  # every widening edge is ordered the other way


def test_judge_bad_input_is_exit_2(run_dir, tmp_path):
    d = np.load(run_dir / "W_svm.npy", allow_pickle=False).shape[0]
    np.save(tmp_path / "shape.npy", np.zeros((d + 1, d + 1)))
    bad = np.zeros((d, d))
    bad[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "text.npy").write_text("not an array")
    (tmp_path / "empty").mkdir()
    for args in ([tmp_path / "missing"], [tmp_path / "empty"], [run_dir, "--w-fin", tmp_path / "shape.npy"],
                 [run_dir, "--w-svm", tmp_path / "nan.npy"], [run_dir, "--w-fin", tmp_path / "text.npy"],
                 [run_dir, "--w-fin", tmp_path / "nothere.npy"], [run_dir, "--tol-angle", "-1"]):
        res = judge(*args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.count("\n") <= 2, res.output  # one line


def test_judge_refuses_a_run_whose_input_changed(tmp_path):
    src = tmp_path / "data.jsonl"
    src.write_text('{"context": ["a", "b", "q"], "next": "a"}\n{"context": ["b", "c", "q"], "next": "b"}\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["verify", str(src), "--steps", "300", "--out", str(out)])
    assert res.exit_code in (0, 4), res.output
    src.write_text('{"context": ["a", "b", "q"], "next": "b"}\n{"context": ["b", "c", "q"], "next": "b"}\n')
    res = judge(out)
    assert res.exit_code == 2 and "changed" in res.output


# --------------------------------------------------------------------------- every criterion can fail
@pytest.fixture(scope="module")
def pydoc_run():
    from theorycheck.corpus.readers import read_pydoc

    pred = theorycheck.analyze(read_pydoc(window=6, vocab=20), radii=None)
    config = TrainConfig(steps=4000)
    return pred, config, verify(pred, config, heldout=build_heldout(pred, probes=200), with_resolution=False)


@pytest.mark.parametrize("factor", [0.0, 0.9, 1.1])
def test_each_finite_part_criterion_rejects_a_wrong_w_fin(pydoc_run, factor):
    """W^fin scaled: the finite component, the loss floor (the run's loss goes below the claimed
    infimum Lbar(W^fin')), and the training and held-out composition (softmax of the claimed
    W^fin) are each VIOLATED; the true W^fin is not."""
    pred, config, result = pydoc_run
    j = judge_trajectory(result.trajectory, replace_predictions(pred, W_fin=factor * pred.W_fin), config,
                         heldout=result.heldout, with_resolution=False)
    violated = {c.id for c in j.verdict.criteria if c.status == VIOLATED}
    assert {"finite_component", "loss_floor", "train_composition", "heldout_composition"} <= violated
    if factor == 0.0:
        assert "loss_gap" in violated  # a claimed infimum 0.5 nats too high
    assert not {c.id for c in result.verdict.criteria if c.status == VIOLATED}


def test_the_verdict_does_not_depend_on_the_scale_of_the_embeddings():
    """verify(c E) = verify(E) for c a power of two: the run trains W' = c^2 W on E / c and the
    W^fin evidence is judged in those units (before: at c = 1024 the start saturated the softmax,
    a step of lr moved the scores by 5e4, and the verdict was a false VIOLATED on W^fin; at c = 8
    the W^fin resolution differed, through absolute floors)."""
    from dataclasses import replace

    base = synthetic(n=40, T=5, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=1)
    config = TrainConfig(steps=3000)
    ref = verify(theorycheck.analyze(base, radii=None), config)
    # 2^-100: ||W^svm|| ~ 1e60, so the unit-norm predictions of the resolution have gaps ~ 1e-60
    # (an absolute tie floor of 1e-9 in the priority order had claimed a resolution of 8e-8 degrees)
    for c in (0.25, 8.0, 1024.0, 2.0**-100):
        result = verify(theorycheck.analyze(replace(base, E=base.E * c), radii=None), config)
        assert result.verdict.statement() == ref.verdict.statement(), c
        assert [k.status for k in result.verdict.criteria] == [k.status for k in ref.verdict.criteria]
        assert np.array_equal(result.train.W * c**2, ref.train.W)  # the same run, in other units
        assert result.train.extra["embedding_scale"] == c


def test_composition_error_of_a_leaking_model_is_finite_and_exact(example):
    """A model whose top-SCC mass underflows (scores -1000 W^svm) still has a defined composition
    within the top SCC; errors() must give it, computed here independently in log space."""
    import warnings

    from theorycheck.metrics import training_windows

    pred = theorycheck.analyze(example("mix"), radii=None)
    windows = training_windows(pred)
    W = -1000.0 * pred.W_svm + pred.W_fin
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid warning either
        errors = windows.errors(W)
    st, m = windows.stats, pred.score_map.scores(W)
    worst = 0.0
    for i in range(st.n_windows):
        lo, hi = st.indptr[i], st.indptr[i + 1]
        top = np.flatnonzero(windows.in_top[lo:hi]) + lo
        z = st.entry_logc[top] + m[st.entry_pair[top]]
        q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        worst = max(worst, 0.5 * float(np.abs(q - windows.predicted[top]).sum()))
    assert np.isfinite(errors["composition_max"]) and errors["composition_max"] == pytest.approx(worst, abs=1e-12)
    assert errors["leak_max"] == pytest.approx(1.0)  # all the mass outside the top SCC


def test_heldout_retrieval_rejects_a_wrong_retrieved_set(pydoc_run):
    """Claim that one token of each held-out window's dominant SCC is not retrieved: the mass the run
    puts on it is counted as leak, and the held-out retrieval criterion is VIOLATED."""
    from theorycheck.metrics import WindowSet

    pred, config, result = pydoc_run
    held = result.heldout
    in_top = held.in_top.copy()
    starts = held.stats.indptr[:-1]
    for lo, hi in zip(starts, held.stats.indptr[1:]):
        top = np.flatnonzero(in_top[lo:hi])
        if top.size >= 2:  # keep one retrieved token so the composition stays defined
            in_top[lo + top[0]] = False
    wrong = WindowSet(held.stats, held.score_map, in_top, held.predicted, held.skipped)
    j = judge_trajectory(result.trajectory, pred, config, heldout=wrong, with_resolution=False)
    assert j.verdict.criterion("heldout_retrieval").status == VIOLATED
