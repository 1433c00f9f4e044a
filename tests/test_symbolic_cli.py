"""`theorycheck prove` and `theorycheck analyze --certify`: tables, files and exit codes."""

from __future__ import annotations

import dataclasses
import json

from typer.testing import CliRunner

from theorycheck.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def example_args(examples_dir, name):
    return [examples_dir / f"{name}.jsonl", "--embeddings", examples_dir / f"{name}_embeddings.json"]


def test_prove_prints_the_table_and_exits_0():
    result = run("prove", "--only", "svm-dual", "--only", "stable-loss")
    assert result.exit_code == 0, result.output
    assert "svm-dual" in result.output and "stable-loss" in result.output
    assert "holds" in result.output and "2 of 2 obligations hold" in result.output


def test_prove_exits_1_when_an_obligation_fails(tmp_path, monkeypatch):
    (tmp_path / "obligation_false.py").write_text(
        "from theorycheck.symbolic.obligations import Obligation\n"
        "OBLIGATION = Obligation('false', '1 = 2', lambda altered=False: (False, '1 != 2'))\n")
    monkeypatch.setattr("theorycheck.symbolic.obligations.proofs_dir", lambda: tmp_path)
    result = run("prove")
    assert result.exit_code == 1
    assert "FAILS" in result.output and "0 of 1 obligations hold" in result.output


def test_prove_rejects_unknown_obligations_with_exit_2():
    result = run("prove", "--only", "no-such-lemma")
    assert result.exit_code == 2
    assert "unknown obligation" in result.output


def test_prove_certify_chain_and_infeasible(examples_dir):
    chain = run("prove", "--only", "farkas", "--certify", *example_args(examples_dir, "chain"))
    assert chain.exit_code == 0, chain.output
    assert "Graph-SVM KKT" in chain.output and "certified" in chain.output and "11/4" in chain.output
    infeasible = run("prove", "--only", "farkas", "--certify", *example_args(examples_dir, "infeasible"))
    assert infeasible.exit_code == 3, infeasible.output
    assert "Farkas" in infeasible.output and "1/2" in infeasible.output


def test_analyze_certify_attaches_certificates(examples_dir, tmp_path):
    out = tmp_path / "cycle"
    result = run("analyze", *example_args(examples_dir, "cycle"), "--out", out, "--radii", "none", "--certify")
    assert result.exit_code == 0, result.output
    certs = json.loads((out / "results.json").read_text())["certificates"]
    assert certs["summary"] == "certified"
    # cycle.jsonl: SCC {a, b} above q: min 2 v^2 + w^2 s.t. v - w >= 1 gives v = 1/3, w = -2/3, ||W||^2 = 2/3
    assert certs["svm"]["status"] == "certified" and certs["svm"]["norm_squared"] == "2/3"
    assert certs["finite"]["status"] == "certified" and certs["finite"]["radius"] < 1e-8
    assert certs["infeasibility"] is None
    assert "certify" in json.loads((out / "timings.json").read_text())
    plain = tmp_path / "plain"
    assert run("analyze", *example_args(examples_dir, "cycle"), "--out", plain, "--radii", "none").exit_code == 0
    assert "certificates" not in json.loads((plain / "results.json").read_text())


def test_analyze_certify_exits_1_when_the_numeric_w_svm_is_off(examples_dir, tmp_path, monkeypatch):
    import theorycheck.predictions as predictions

    solve = predictions.solve_graph_svm

    def perturbed(E, graphs, method="auto"):
        solution = solve(E, graphs, method)
        W = solution.W.copy()
        W[0, 0] += 1e-3
        return dataclasses.replace(solution, W=W)

    monkeypatch.setattr(predictions, "solve_graph_svm", perturbed)
    out = tmp_path / "chain"
    result = run("analyze", *example_args(examples_dir, "chain"), "--out", out, "--radii", "none", "--certify")
    assert result.exit_code == 1, result.output
    certs = json.loads((out / "results.json").read_text())["certificates"]
    assert certs["summary"] == "rejected"
    assert certs["svm"]["failed"] == ["agreement with the numeric W^svm"]
