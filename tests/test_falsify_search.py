"""`theorycheck falsify` end to end: search, shrinking, files, reproduction, plugins, determinism."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from theorycheck.cli import app
from theorycheck.corpus import load_corpus
from theorycheck.falsify import Candidate, falsify, get_conjecture, load_plugin, replay
from theorycheck.falsify.evidence import DISCARDED, VIOLATED
from theorycheck.graphs import build_graphs
from theorycheck.path import frobenius_cos

runner = CliRunner()
FILES = ("counterexample.jsonl", "embeddings.json", "falsify.json")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# Adam: seeds 0-4 were all falsified at budget 4 when the budgets were chosen; seed 4 is the
# quickest to shrink.  The assertions below do not depend on which counterexample it finds.
ADAM_ARGS = ("--conjecture", "adam-frobenius", "--budget", 4, "--batch", 4, "--seed", 4, "--workers", 0,
             "--shrink-budget", 8, "--shrink-batch", 2)


@pytest.fixture(scope="module")
def adam_campaign(tmp_path_factory):
    out = tmp_path_factory.mktemp("adam") / "cx"
    result = run("falsify", *ADAM_ARGS, "--out", out)
    return out, result


def test_adam_frobenius_is_falsified_within_a_small_budget(adam_campaign):
    out, result = adam_campaign
    assert result.exit_code == 1, result.output
    data = json.loads((out / "falsify.json").read_text())
    assert data["status"] == "falsified" and data["candidates_tried"] <= 4
    assert data["best_violation"]["criterion"] == "direction"
    bv = data["best_violation"]
    assert bv["tolerance"] == 2.0 and bv["evidence"]["limit_lower_bound_deg"] > bv["tolerance"]  # degrees
    assert data["confirmation"]["status"] == VIOLATED  # still violated with twice the training budget
    size, original = data["counterexample"]["size"], data["original"]["size"]
    assert (size["samples"], size["tokens"], size["dimension"]) <= (original["samples"], original["tokens"],
                                                                    original["dimension"])
    text = (out / "explanation.md").read_text()
    assert "Criterion `direction` broke" in text and "candidates tried" in text


def test_counterexample_reproduces_when_reread_and_rescored(adam_campaign):
    out, _ = adam_campaign
    data = json.loads((out / "falsify.json").read_text())
    corpus = load_corpus(out / "counterexample.jsonl", embeddings_path=out / "embeddings.json")
    cand = Candidate.from_corpus(corpus, data["counterexample"]["train_seed"])
    outcome = get_conjecture("adam-frobenius").evaluate(cand)
    assert outcome.status == VIOLATED
    assert outcome.headline.value == pytest.approx(data["best_violation"]["value"], abs=1e-12)
    replayed = run("falsify", "--replay", out)  # the same through the CLI
    assert replayed.exit_code == 1 and f"{outcome.headline.value:.6g}" in replayed.output


def test_verify_cli_reproduces_the_violated_criterion(adam_campaign):
    out, _ = adam_campaign
    data = json.loads((out / "falsify.json").read_text())
    command = data["counterexample"]["reproduce"]["verify"].replace("DIR", str(out)).split()
    assert command[:2] == ["theorycheck", "verify"]
    result = run(*command[1:])
    assert result.exit_code == 3, result.output  # Adam is outside the theorem: NOT APPLICABLE, criteria still judged
    verdict = json.loads((out / "verify" / "results.json").read_text())["verify"]
    direction = next(c for c in verdict["criteria"] if c["id"] == "direction")
    assert direction["passed"] is False
    assert direction["value"] == pytest.approx(data["best_violation"]["value"], abs=1e-12)
    # and from the arrays verify wrote: the diverging part of W(T) against the Frobenius W^svm
    W = np.load(out / "verify" / "W_trained.npy", allow_pickle=False)
    W_svm = np.load(out / "verify" / "W_svm.npy", allow_pickle=False)
    if json.loads((out / "verify" / "results.json").read_text())["finite"]["dimension"] == 0:
        assert frobenius_cos(W, W_svm) == pytest.approx(direction["value"], abs=1e-12)


def test_same_seed_gives_identical_files(adam_campaign, tmp_path):
    out, _ = adam_campaign
    again = tmp_path / "again"
    assert run("falsify", *ADAM_ARGS, "--out", again).exit_code == 1
    for name in FILES:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_trials_are_streamed_to_jsonl(adam_campaign):
    out, _ = adam_campaign
    logs = sorted((out / "trials").glob("*.jsonl"))
    assert {log.name.split("-")[0] for log in logs} == {"search", "shrink", "confirm"}
    entries = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    data = json.loads((out / "falsify.json").read_text())
    search = [e for e in entries if e["task"]["phase"] in ("random", "targeted")]
    assert len(search) == data["candidates_tried"]
    assert sum(e["result"]["status"] == VIOLATED for e in search) == data["status_counts"]["violated"]


def test_li2024_control_survives_a_fixed_budget(tmp_path):
    result = falsify("li2024", budget=6, batch=6, seed=0, workers=0, out_dir=tmp_path / "li")
    assert not result.found and result.exit_code == 0
    assert len(result.search_trials) == 6
    assert all(t.status in ("holds", "inconclusive", DISCARDED) for t in result.trials)
    data = json.loads((tmp_path / "li" / "falsify.json").read_text())
    assert data["status"] == "survived" and data["counterexample"] is None
    assert not (tmp_path / "li" / "counterexample.jsonl").exists()


# --------------------------------------------------------------------------- user plugins
PLUGIN = textwrap.dedent('''
    """A toy conjecture: ||W^svm||_F <= 1 on one-hot data (false: a chain a -> b -> c breaks it)."""
    import numpy as np

    from theorycheck.falsify import (Conjecture, Finding, Outcome, analyze_candidate, discarded,
                                     li_assumption_failures, make_candidate, random_candidate,
                                     register_conjecture)


    @register_conjecture
    class SvmNormAtMostOne(Conjecture):
        name = "toy-svm-norm"
        statement = "||W^svm||_F <= 1"
        keeps = ("realizable labels",)

        def generate(self, rng):
            c = random_candidate(rng, embeddings=("one-hot",), n=(1, 4), K=(3, 4), T=(2, 3))
            if rng.random() < 0.5:  # break realizability on purpose
                missing = [t for t in range(c.K) if t not in c.windows[0]]
                if missing:
                    c = make_candidate(c.windows, (missing[0],) + c.labels[1:], c.embeddings, "one-hot", c.train_seed)
            return c

        def assumption_failures(self, c):
            return li_assumption_failures(c)

        def evaluate(self, c, steps_scale=1):
            reasons = self.assumption_failures(c)
            if reasons:
                return discarded(reasons)
            pred, reasons = analyze_candidate(c)
            if pred is None:
                return discarded(reasons)
            norm = float(np.linalg.norm(pred.W_svm))
            status = "violated" if norm > 1 + 1e-9 else "holds"
            f = Finding("svm_norm", "||W^svm||_F <= 1", norm, 1.0, "<=", status, norm - 1.0)
            return Outcome(status, norm - 1.0, "svm_norm", (f,))
''')


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "toy_conjectures.py"
    path.write_text(PLUGIN, encoding="utf-8")
    return path


def test_plugin_registers_and_lists(plugin):
    assert load_plugin(plugin) == ["toy-svm-norm"]
    assert load_plugin(plugin) == ["toy-svm-norm"]  # loading twice is harmless
    result = run("falsify", "--plugin", plugin, "--list")
    assert result.exit_code == 0 and "toy-svm-norm" in result.output and "li2024" in result.output


def test_plugin_campaign_discards_assumption_breakers_and_shrinks_to_a_local_minimum(plugin, tmp_path):
    budget, seed = 12, 3
    result = falsify("toy-svm-norm", budget=budget, batch=budget, seed=seed, workers=0, plugins=[plugin],
                     out_dir=tmp_path / "toy", shrink_budget=200)
    conj = get_conjecture("toy-svm-norm")
    # independent count: regenerate every candidate of round 0 and apply the assumptions by hand
    expected_discards = 0
    for i in range(budget):
        c = conj.generate(np.random.default_rng([seed, 0, i]))
        no_direction = bool(build_graphs(c.corpus().realizable()).edge_same_scc.all()) if not c.unrealizable_windows() else False
        expected_discards += bool(c.unrealizable_windows()) or no_direction
    assert expected_discards > 0
    assert result.counts()["discarded"] == expected_discards
    assert all(t.status != VIOLATED for t in result.trials if t.candidate.unrealizable_windows())
    assert result.found and result.local_minimum
    final = result.final.candidate
    # one window gives ||W^svm||^2 = (m-1)/m < 1, and two tokens give at most one edge per query
    assert final.n >= 2 and final.K >= 3
    assert not final.unrealizable_windows()
    for _, child in conj.shrink_steps(final):
        assert conj.evaluate(child).status != VIOLATED
    _, _, outcome = replay(tmp_path / "toy")
    assert outcome.status == VIOLATED and outcome.headline.value == result.final.outcome["findings"][0]["value"]


def test_parallel_campaign_matches_the_serial_one(plugin, tmp_path):
    """Candidates depend only on (seed, index) and finished rounds: 2 Dask workers give the
    same falsify.json and counterexample bytes as the serial run."""
    kwargs = dict(budget=12, batch=4, seed=3, plugins=[plugin], shrink_budget=40, shrink_batch=3)
    serial = falsify("toy-svm-norm", workers=0, out_dir=tmp_path / "serial", **kwargs)
    falsify("toy-svm-norm", workers=2, out_dir=tmp_path / "dask", **kwargs)
    assert serial.found
    for name in FILES:
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name


def test_interrupted_campaign_keeps_its_findings_and_resumes(plugin, tmp_path, monkeypatch):
    """Ctrl-C during shrinking: the outputs are written with the simplest violation so far
    (unconfirmed), the finished trials stay in DIR/trials, and --resume re-runs none of them."""
    import theorycheck.falsify.search as search

    real = search.evaluate_task
    calls = []

    def interrupt_at_15(task):
        calls.append(task["index"])
        if len(calls) == 15:
            raise KeyboardInterrupt
        return real(task)

    kwargs = dict(budget=12, batch=12, seed=3, plugins=[plugin], workers=0, shrink_budget=200, shrink_batch=1)
    monkeypatch.setattr(search, "evaluate_task", interrupt_at_15)
    with pytest.raises(KeyboardInterrupt):
        falsify("toy-svm-norm", out_dir=tmp_path / "cx", **kwargs)
    data = json.loads((tmp_path / "cx" / "falsify.json").read_text())
    assert data["status"] == "interrupted" and data["confirmation"] is None
    assert data["counterexample"]["outcome"]["status"] == VIOLATED
    assert (tmp_path / "cx" / "counterexample.jsonl").exists()
    logged = sum(len(p.read_text().splitlines()) for p in (tmp_path / "cx" / "trials").glob("*.jsonl"))
    assert logged == 14  # every finished trial, none of the interrupted one

    monkeypatch.setattr(search, "evaluate_task", lambda task: calls.append(task["index"]) or real(task))
    calls.clear()
    resumed = falsify("toy-svm-norm", out_dir=tmp_path / "cx", resume=True, **kwargs)
    resumed_calls = len(calls)
    calls.clear()
    falsify("toy-svm-norm", out_dir=tmp_path / "fresh", **kwargs)
    assert resumed.found and resumed_calls == len(calls) - 14  # the 14 logged trials are not re-run
    for name in FILES:
        assert (tmp_path / "cx" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("args,message", [
    ((), "--conjecture NAME is required"),
    (("--conjecture", "no-such-thing"), "unknown conjecture"),
    (("--conjecture", "li2024", "--plugin", "missing_module.py"), "is not a Python file"),
])
def test_usage_errors_exit_2_with_one_line(args, message, tmp_path):
    result = run("falsify", *args, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_replay_of_a_survived_campaign_is_a_usage_error(tmp_path):
    (tmp_path / "falsify.json").write_text(json.dumps({"status": "survived", "counterexample": None}))
    result = run("falsify", "--replay", tmp_path)
    assert result.exit_code == 2 and "nothing to replay" in result.output


# --------------------------------------------------------------------------- larger campaigns
@pytest.mark.slow
@pytest.mark.parametrize("name,budget", [("li2024", 48), ("nonorthogonal-global", 32)])
def test_controls_survive_larger_campaigns(name, budget, tmp_path):
    result = falsify(name, budget=budget, seed=11, workers=2, out_dir=tmp_path / name)
    assert not result.found, result.final.outcome if result.final else None
    assert result.counts()["error"] == 0


@pytest.mark.slow
def test_kq_frobenius_campaign_and_verify_arrays(tmp_path):
    out = tmp_path / "kq"
    result = run("falsify", "--conjecture", "kq-frobenius", "--budget", 16, "--batch", 8, "--seed", 0,
                 "--workers", 2, "--out", out)
    assert result.exit_code == 1, result.output
    data = json.loads((out / "falsify.json").read_text())
    bv = data["best_violation"]
    evidence = bv["evidence"]
    assert evidence["alternative_angle_deg"] + bv["tolerance"] <= bv["value"]  # the run heads for the nuclear SVM
    command = data["counterexample"]["reproduce"]["verify"].replace("DIR", str(out)).split()
    run(*command[1:])
    # the claim's angle is that of the last increment of W - Pi_fin W with the Frobenius W^svm; recompute it
    # from the matrices verify stored (same trainer, same seed: the same trajectory)
    from theorycheck.corpus import load_corpus as load
    from theorycheck.predictions import analyze

    pred = analyze(load(out / "counterexample.jsonl", embeddings_path=out / "embeddings.json"), radii=None)
    with np.load(out / "verify" / "checkpoints.npz", allow_pickle=False) as z:
        W_prev, W_last = z["matrices"][-2], z["matrices"][-1]
    inc = (W_last - pred.subspace.project(W_last)) - (W_prev - pred.subspace.project(W_prev))
    W_svm = np.load(out / "verify" / "W_svm.npy", allow_pickle=False)
    angle = np.degrees(np.arccos(np.clip(frobenius_cos(inc, W_svm), -1.0, 1.0)))
    assert angle == pytest.approx(bv["value"], abs=1e-6)


@pytest.mark.slow
def test_tarzanagh_campaign_runs_cleanly(tmp_path):
    result = falsify("tarzanagh2023", budget=48, seed=2, workers=2, out_dir=tmp_path / "tz")
    assert result.counts()["error"] == 0
    assert (tmp_path / "tz" / "explanation.md").exists()
