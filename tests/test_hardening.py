"""Issue 12: no silent wrong input, no lost or stale data, no internal errors (analyze, predict,
report loading, falsify --replay, the shared options)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from reference import write_object_npy
from typer.testing import CliRunner

from theorycheck.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def vocabulary(out: Path) -> list[str]:
    return sorted(json.loads((out / "results.json").read_text())["vocabulary"])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:") and "Traceback" not in result.output, result.output
    return lines[-1]


# --------------------------------------------------------------------------- 1. silent wrong input


def test_an_existing_file_wins_over_a_synthetic_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLES / "chain.jsonl", "synthetic_corpus.jsonl")
    result = run("analyze", "synthetic_corpus.jsonl", "--out", "a", "--radii", "none")
    assert result.exit_code == 0, result.output
    assert vocabulary(tmp_path / "a") == ["a", "b", "c", "q"]  # the file, not a built-in corpus
    shutil.copy(EXAMPLES / "chain.jsonl", "synthetic:n=3")  # even a file named like a spec
    result = run("analyze", "synthetic:n=3", "--out", "b", "--radii", "none")
    assert result.exit_code == 0, result.output
    assert vocabulary(tmp_path / "b") == ["a", "b", "c", "q"]
    message = one_error_line(run("analyze", "synthetic_missing.txt", "--out", "c"))
    assert "does not exist" in message and "synthetic:" in message
    assert not (tmp_path / "c").exists()


def test_a_spec_needs_its_colon(tmp_path):
    result = run("analyze", "synthetic:n=4,T=3,K=4,seed=2", "--out", tmp_path / "s", "--radii", "none")
    assert result.exit_code == 0, result.output
    assert vocabulary(tmp_path / "s") == ["t0", "t1", "t2", "t3"]
    assert "does not exist" in one_error_line(run("analyze", "synthetic", "--out", tmp_path / "x"))


@pytest.mark.parametrize("name", ["UPPER.JSONL", "data.json", "samples.txt", "noext", "c.NDJSON"])
def test_json_lines_are_recognised_by_content_or_any_case_suffix(tmp_path, name):
    path = tmp_path / name
    shutil.copy(EXAMPLES / "chain.jsonl", path)
    result = run("analyze", path, "--out", tmp_path / "out", "--radii", "none")
    assert result.exit_code == 0, result.output
    assert vocabulary(tmp_path / "out") == ["a", "b", "c", "q"]  # not "context", "next" as words


def test_format_option_overrides_the_detection(tmp_path):
    path = tmp_path / "data.json"
    shutil.copy(EXAMPLES / "chain.jsonl", path)
    result = run("analyze", path, "--format", "text", "--out", tmp_path / "t", "--radii", "none")
    assert result.exit_code in (0, 3), result.output  # 3: this text's Graph-SVM may be infeasible
    assert "context" in vocabulary(tmp_path / "t")  # read as words, as asked
    words = tmp_path / "words.jsonl"
    words.write_text("one two three one two three one two three\n", encoding="utf-8")
    message = one_error_line(run("analyze", words, "--out", tmp_path / "j"))  # .jsonl suffix: JSONL reader
    assert "not valid JSON" in message
    result = run("analyze", words, "--format", "text", "--window", "3", "--out", tmp_path / "w", "--radii", "none")
    assert result.exit_code == 0 and vocabulary(tmp_path / "w") == ["one", "three", "two"]
    assert "applies to files" in one_error_line(run("analyze", "synthetic:n=3", "--format", "jsonl", "--out", tmp_path / "z"))


def test_text_options_with_jsonl_or_synthetic_input_are_warned_about(tmp_path):
    result = run("analyze", EXAMPLES / "chain.jsonl", "--window", "8", "--vocab", "3", "--out", tmp_path / "a")
    assert result.exit_code == 0
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "--window, --vocab" in warning and "ignored" in warning and "JSON-lines" in warning
    result = run("analyze", "synthetic:n=4", "-T", "3", "--out", tmp_path / "b", "--radii", "none")
    assert result.exit_code == 0 and "--window only shapes text input" in result.stderr
    result = run("analyze", EXAMPLES / "chain.jsonl", "--out", tmp_path / "c")  # defaults: no warning
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_unknown_detail_tokens_are_warned_about(tmp_path):
    result = run("analyze", EXAMPLES / "chain.jsonl", "--detail", "q", "--detail", "zz", "--detail", "a",
                 "--out", tmp_path)
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "'zz' is not in the vocabulary; query tokens: q" in warnings[0]
    assert "'a': the token is in the vocabulary but never the last token" in warnings[1]
    assert "G^(q)" in result.stdout


# --------------------------------------------------------------------------- 2. lost or stale data


@pytest.mark.parametrize("name", ["timings.json", "results.json", "E.npy", "summary.md", "report.html",
                                  "trajectory.json", "W_trained.npy", "checkpoints.npz"])
def test_no_output_overwrites_or_retires_an_input(tmp_path, name):
    out = tmp_path / "ow"
    out.mkdir()
    src = out / name
    shutil.copy(EXAMPLES / "chain.jsonl", src)
    before = src.read_bytes()
    message = one_error_line(run("analyze", src, "--out", out))
    assert f"writing {name}" in message and "overwrite an input" in message
    assert src.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [name]


def test_embeddings_and_linked_inputs_are_protected_too(tmp_path):
    out = tmp_path / "ow"
    out.mkdir()
    emb = out / "results.json"
    shutil.copy(EXAMPLES / "chain_embeddings.json", emb)
    message = one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--embeddings", emb, "--out", out))
    assert "overwrite an input" in message
    src = tmp_path / "corpus.jsonl"
    shutil.copy(EXAMPLES / "chain.jsonl", src)
    out2 = tmp_path / "linked"
    out2.mkdir()
    os.link(src, out2 / "timings.json")  # a hard link: another name for the input
    assert "overwrite an input" in one_error_line(run("analyze", src, "--out", out2))
    assert src.read_bytes() == (EXAMPLES / "chain.jsonl").read_bytes()


def test_report_refuses_an_input_named_like_its_report(tmp_path):
    out = tmp_path / "ow"
    out.mkdir()
    src = out / "summary.md"
    shutil.copy(EXAMPLES / "chain.jsonl", src)
    message = one_error_line(run("report", src, "--out", out, "--steps", "5"))
    assert "summary.md" in message and "overwrite an input" in message
    assert src.read_bytes() == (EXAMPLES / "chain.jsonl").read_bytes()


def test_a_new_run_retires_what_an_earlier_run_left(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    np.save(out / "W_trained.npy", np.eye(2))
    np.savez_compressed(out / "checkpoints.npz", W=np.eye(2))
    (out / "trajectory.json").write_text('{"checkpoints": []}')
    (out / "report.html").write_text("<title>theorycheck report: HOLDS</title>")
    (out / "summary.md").write_text("# my own notes (theorycheck runs)")
    (out / "scansnap.json").write_text("{}")  # another check's results: the report may show them
    result = run("analyze", EXAMPLES / "chain.jsonl", "--out", out, "--radii", "none")
    assert result.exit_code == 0, result.output
    assert "removed trajectory.json, W_trained.npy, checkpoints.npz, report.html" in result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["E.npy", "W_fin.npy", "W_svm.npy", "results.json", "scansnap.json", "summary.md", "timings.json"]
    assert (out / "summary.md").read_text() == "# my own notes (theorycheck runs)"


def test_a_report_of_one_run_is_not_written_beside_another(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, name in ((a, "chain"), (b, "mix")):
        assert run("analyze", EXAMPLES / f"{name}.jsonl", "--out", out, "--radii", "none").exit_code == 0
    message = one_error_line(run("report", "--from", a, "--out", b))
    assert "another run" in message and not (b / "report.html").exists()
    result = run("report", "--from", a, "--out", tmp_path / "fresh")
    assert result.exit_code == 0 and (tmp_path / "fresh" / "report.html").exists()


def test_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    for out in ("/proc/theorycheck-test", tmp_path / "file" / "sub"):
        assert "cannot write to --out" in one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--out", out))
    # a directory that exists but refuses new files (as a read-only one does for a non-root user)
    import tempfile

    import theorycheck.corpus.readers as readers

    calls = []
    monkeypatch.setattr(readers, "load_corpus", lambda *a, **k: calls.append(a))

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    message = one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--out", tmp_path / "ro"))
    assert "cannot write to --out" in message and "Permission denied" in message
    assert calls == []  # refused before the corpus was even read


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_directory_is_refused(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert "cannot write to --out" in one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--out", out))
    finally:
        out.chmod(0o755)


def test_an_output_name_taken_by_a_directory_is_refused(tmp_path):
    (tmp_path / "results.json").mkdir()
    assert "is a directory" in one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--out", tmp_path))


# --------------------------------------------------------------------------- 4, 5. internal errors, sizes


def test_orthonormal_method_needs_orthonormal_embeddings(tmp_path):
    emb = tmp_path / "emb.json"
    emb.write_text(json.dumps({"a": [1, 0], "b": [1, 1], "c": [0, 1], "q": [0.5, 0.5]}))
    message = one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--embeddings", emb,
                                 "--svm-method", "orthonormal", "--out", tmp_path / "o"))
    assert "--svm-method orthonormal needs orthonormal embeddings" in message and "auto or general" in message


@pytest.mark.parametrize("entry, expected", [("1" + "0" * 400, "too large for float64"),
                                             ("1e300", "magnitude above"), ("1" + "0" * 5000, "cannot be read")])
def test_embeddings_beyond_float64_range_are_bad_input(tmp_path, entry, expected):
    emb = tmp_path / "emb.json"
    emb.write_text('{"a": [' + entry + ', 0, 0, 0], "b": [0, 1, 0, 0], "c": [0, 0, 1, 0], "q": [0, 0, 0, 1]}')
    message = one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--embeddings", emb, "--out", tmp_path / "o"))
    assert expected in message


@pytest.mark.parametrize("spec, expected", [
    ("synthetic:d=0,embeddings=unit-norm", "d >= 1"),
    ("synthetic:d=-1,embeddings=orthonormal", "d >= 1"),
    ("synthetic:seed=-1", "non-negative"),
    ("synthetic:n=1000000000", "GiB"),
    ("synthetic:T=100000000", "GiB"),
    ("synthetic:n=20000000,T=2", "minutes"),
    ("synthetic:K=100000", "lower --vocab"),
    ("synthetic:n=3,n=4", "given twice"),
    ("synthetic:n=" + "9" * 5000, "needs a int"),
])
def test_synthetic_sizes_that_cannot_fit_are_refused_at_once(tmp_path, spec, expected):
    start = time.perf_counter()
    message = one_error_line(run("analyze", spec, "--out", tmp_path / "o"))
    assert expected in message and time.perf_counter() - start < 5
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.fixture(scope="module")
def mix_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "res"
    result = run("analyze", EXAMPLES / "mix.jsonl", "--embeddings", EXAMPLES / "mix_embeddings.json",
                 "--out", out, "--radii", "none")
    assert result.exit_code == 0
    return out


@pytest.mark.parametrize("content, expected", [
    (b"[1,2,3]", "holds a JSON list, not an object"),
    (b'{"queries": []}', "no 'vocabulary'"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"vocabulary": ["a", "q"]}', "no 'queries'"),
    (b'{"vocabulary": ["a", "q"], "queries": [{"query_index": 7}]}', "query_index"),
    (b"{" * 3, "not valid JSON"),
])
def test_predict_on_a_malformed_results_json(tmp_path, mix_results, content, expected):
    copy = tmp_path / "res"
    shutil.copytree(mix_results, copy)
    (copy / "results.json").write_bytes(content)
    assert expected in one_error_line(run("predict", copy, "a q"))


def test_predict_on_mismatched_or_damaged_arrays(tmp_path, mix_results):
    copy = tmp_path / "res"
    shutil.copytree(mix_results, copy)
    np.save(copy / "E.npy", np.eye(3))
    assert "E.npy has shape (3, 3) but the vocabulary has 6 tokens" in one_error_line(run("predict", copy, "a q"))
    write_object_npy(copy / "E.npy")
    assert "not a plain .npy array" in one_error_line(run("predict", copy, "a q"))
    shutil.copy(mix_results / "E.npy", copy / "E.npy")
    np.save(copy / "W_fin.npy", np.full((6, 6), np.nan))
    assert "NaN or infinite" in one_error_line(run("predict", copy, "a q"))
    assert "is not a directory" in one_error_line(run("predict", copy / "results.json", "a q"))


def test_report_from_a_malformed_results_directory(tmp_path, mix_results):
    copy = tmp_path / "res"
    shutil.copytree(mix_results, copy)
    results = json.loads((copy / "results.json").read_text())
    results["queries"] = [{"query_index": "q"}]
    (copy / "results.json").write_text(json.dumps(results))
    assert "query_index" in one_error_line(run("report", "--from", copy))
    assert not (copy / "report.html").exists()


BADLY_SCALED = [
    {"context": ["[red]", "b", "b", "[red]", "q", "b"], "next": "[red]"},
    {"context": ["[red]", "[red]", "[red]", "b", "q", "q"], "next": "[red]"},
    {"context": ["b", "q", "b", "q"], "next": "b"},
    {"context": ["q", "[red]", "b", "b"], "next": "q"},
    {"context": ["q", "b", "[red]"], "next": "[red]"},
]


def test_badly_scaled_embeddings_are_solved_at_unit_scale(tmp_path):
    """Found by the fuzz: Clarabel failed on these at their own scale (entries up to 1.2e5); the
    Graph-SVM solvers now run on E / s (s: a power of two near the largest row norm), where the
    problem is found infeasible, with a Farkas certificate that holds for the embeddings as given."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(s) + "\n" for s in BADLY_SCALED))
    emb = tmp_path / "e.json"
    vectors = {"[red]": [-9.643331169465333e-40, 51806.20434744259], "b": [-62307.96521405322, 111078.18674905437],
               "q": [-121178.27509813546, -92309.85798158089]}
    emb.write_text(json.dumps(vectors))
    result = run("analyze", corpus, "--embeddings", emb, "--svm-method", "general", "--out", tmp_path / "o")
    assert result.exit_code == 3, result.output  # dependent embeddings, infeasible Graph-SVM: not applicable
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    feasible = [a for a in results["assumptions"] if a["name"] == "Graph-SVM feasible"]
    assert feasible and feasible[0]["holds"] is False
    cert = results["infeasibility_certificate"]
    x = {i: np.array(vectors[tok]) for i, tok in enumerate(results["vocabulary"])}
    combo, size = np.zeros((2, 2)), 0.0
    for row, weight in [(r, r["y"]) for r in cert["inequalities"]] + [(r, r["z"]) for r in cert["equalities"]]:
        term = weight * np.outer(x[row["a"]] - x[row["b"]], x[row["k"]])
        combo, size = combo + term, size + np.abs(term).max()
    assert all(r["y"] >= 0 for r in cert["inequalities"]) and sum(r["y"] for r in cert["inequalities"]) == pytest.approx(1.0)
    assert np.abs(combo).max() <= 1e-9 * size  # sum_j y_j A_j = 0 although every A_j . W >= 1


def test_an_overflowing_path_is_reported_not_warned(tmp_path):
    """Found by the slow fuzz: rank-1 embeddings with an entry of 2.5e4 overflowed in the path's
    products with only a RuntimeWarning.  The path is now traced on E / s (s = 2^15) at the radii
    R / s^2, so it is computed; a radius that overflows there is reported as not computed."""
    import warnings

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"context": ["a", "a"], "next": "a"}\n{"context": ["[red]", "a"], "next": "a"}\n')
    emb = tmp_path / "e.json"
    emb.write_text('{"[red]": [0.0, 0.0, 0.0, 0.0], "a": [0.0, 0.0, 0.0, 25000.0]}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run("analyze", corpus, "--embeddings", emb, "--out", tmp_path / "o")
        assert result.exit_code == 3, result.output  # dependent embeddings: the theorem does not apply
        path = json.loads((tmp_path / "o" / "results.json").read_text())["path"]
        assert [p["R"] for p in path] == [R / 2.0**30 for R in (1, 2, 5, 10, 20, 50)]
        assert path[0]["resolved"] and path[0]["cos_svm"] == pytest.approx(1.0)
        result = run("analyze", corpus, "--embeddings", emb, "--radii", "1e300", "--out", tmp_path / "o2")
    assert result.exit_code == 3, result.output
    assert "regularization path not computed: overflow (radius 1e+300" in result.stderr
    assert json.loads((tmp_path / "o2" / "results.json").read_text())["path"] == []


def test_embeddings_too_small_for_float64_are_bad_input(tmp_path):
    """Found by the fuzz: entries near 1e-200 (W^svm ~ 1e400) ended in 'LinAlgError: Singular matrix'
    once the rank test became relative; they are refused up front, and 1e-20 still works."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"context": ["a", "b"], "next": "a"}\n')
    emb = tmp_path / "e.json"
    emb.write_text('{"a": [1e-200, 3e-200], "b": [2e-200, -1e-200]}')
    message = one_error_line(run("analyze", corpus, "--embeddings", emb, "--out", tmp_path / "o"))
    assert "below 1e-60" in message and "rescale" in message
    assert not (tmp_path / "o").exists()
    # the fuzz's case: one token at 3.3e-84 (the Graph-SVM's multipliers ~1e334 had overflowed)
    emb.write_text('{"a": [3.3080931693670723e-84], "b": [1e-90]}')
    message = one_error_line(run("analyze", corpus, "--embeddings", emb, "--out", tmp_path / "o"))
    assert "3.31e-84, below 1e-60" in message and "rescale" in message
    assert not (tmp_path / "o").exists()
    emb.write_text('{"a": [1e-20, 3e-20], "b": [2e-20, -1e-20]}')
    assert run("analyze", corpus, "--embeddings", emb, "--out", tmp_path / "o2").exit_code in (0, 3)


def test_embeddings_just_above_the_floor_verify_with_every_criterion_measured(tmp_path):
    """At 2e-60 (W ~ 1e119, its squared norm ~ 1e238) verify still measures the direction and the
    priority order, and the verdict says what it holds to; the results carry no inf or NaN."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"context": ["a", "b"], "next": "a"}\n{"context": ["a", "b"], "next": "b"}\n'
                      '{"context": ["c", "a", "b"], "next": "c"}\n{"context": ["b", "c", "a"], "next": "b"}\n'
                      '{"context": ["c", "a"], "next": "c"}\n')  # query b: a and b in one SCC (S_fin != 0)
    emb = tmp_path / "e.json"
    emb.write_text('{"a": [2e-60, 0, 0], "b": [0, 2e-60, 0], "c": [0, 0, 2e-60]}')
    result = run("verify", corpus, "--embeddings", emb, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    statement = " ".join(result.output.split())
    assert "HOLDS: direction within" in statement and "W^fin within" in statement
    # the same embeddings divided by 2^-198 (exactly: E / s as the solvers see it) give the same
    # resolution: the scale covariance, not a figure copied from this run
    unit = 2e-60 * 2.0**198
    emb.write_text(json.dumps({"a": [unit, 0, 0], "b": [0, unit, 0], "c": [0, 0, unit]}))
    assert run("verify", corpus, "--embeddings", emb, "--out", tmp_path / "u").exit_code == 0
    resolution = json.loads((tmp_path / "u" / "results.json").read_text())["verify"]["resolution"]
    assert json.loads((tmp_path / "o" / "results.json").read_text())["verify"]["resolution"] == resolution
    text = (tmp_path / "o" / "results.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    criteria = json.loads(text)["verify"]["criteria"]
    measured = {c["id"]: c for c in criteria}
    for name in ("direction", "priority_order", "finite_component"):
        assert measured[name]["applies"] and measured[name]["status"] == "HOLDS", measured[name]


def test_rescaled_multipliers_beyond_float64_become_inf_and_zeros_stay_zero():
    """SvmSolution.rescaled at s = 2^-277 (embeddings near 3.3e-84): the multipliers / s^4 ~ 2^1108
    exceed float64; they map to inf by exact ldexp, zeros stay 0, and W / s^2 is exact."""
    from theorycheck.svm import SvmSolution

    W = np.array([[1.5, 0.0], [0.0, -0.25]])
    sol = SvmSolution(W, "m", "optimal", 1.0, 0.0, 0.0, 0.0, 0.0,
                      details={"lambda": np.array([0.0, 1.0, 2.0**-200]), "nu": np.array([-3.0])})
    scale = 2.0**-277
    out = sol.rescaled(scale, 4)
    assert np.array_equal(out.W, W * 2.0**554)
    assert out.details["lambda"][0] == 0.0 and out.details["lambda"][1] == np.inf
    assert out.details["lambda"][2] == 2.0**908  # in range: exact
    assert out.details["nu"][0] == -np.inf and out.min_dual == 0.0
    assert sol.rescaled(2.0**3, 2).details["lambda"][1] == 2.0**-6


@pytest.mark.parametrize("failure", ["SolverError", "SolverFailure"])
def test_a_cvxpy_solver_failure_is_bad_input_naming_the_scale(tmp_path, monkeypatch, failure):
    import cvxpy

    import theorycheck.predictions as predictions
    from theorycheck.svm import SolverFailure

    def failing(*_args, **_kwargs):
        if failure == "SolverError":
            raise cvxpy.error.SolverError("Solver 'CLARABEL' failed.")
        raise SolverFailure("the solver reported the Graph-SVM infeasible but no Farkas certificate exists")

    monkeypatch.setattr(predictions, "solve_graph_svm", failing)
    message = one_error_line(run("analyze", EXAMPLES / "mix.jsonl", "--out", tmp_path / "o"))
    assert "Graph-SVM solver failed" in message and "magnitude" in message and "rescale" in message
    assert not (tmp_path / "o").exists()


def test_rows_of_very_different_norms_are_not_an_internal_error(tmp_path):
    """Found by the slow fuzz: rows of norm 1.25e-9 and 1e-18 (rank 1, so cvxpy) made Clarabel call a
    feasible problem infeasible (W_22 >= 7e8 at unit scale); with no Farkas certificate that was exit 70
    and advice about an option that does not exist.  Now it is a result or bad input naming the scale."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"context": ["a", "b"], "next": "a"}\n')
    emb = tmp_path / "e.json"
    emb.write_text('{"a": [0.0, 1.25e-09], "b": [0.0, 1e-18]}')
    result = run("analyze", corpus, "--embeddings", emb, "--out", tmp_path / "o")
    assert result.exit_code in (0, 2, 3), result.output
    if result.exit_code == 2:
        message = one_error_line(result)
        assert "Graph-SVM solver failed" in message and "1e-18" in message and "rescale" in message
        assert not (tmp_path / "o").exists()


def test_a_path_that_cannot_be_computed_is_reported_not_crashed(tmp_path):
    """Found by the fuzz: rank-1 embeddings of size 1e5 make the path's multiplier search take log(0)."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"context": ["c", "q"], "next": "c"}\n{"context": ["a", "a"], "next": "a"}\n')
    emb = tmp_path / "e.json"
    emb.write_text('{"a": [0.0], "c": [0.0], "q": [100000.0]}')
    result = run("analyze", corpus, "--embeddings", emb, "--out", tmp_path / "o")
    assert result.exit_code == 3, result.output  # dependent embeddings: the theorem does not apply
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    if results["path"]:  # the KKT-Newton path solver (path.py) handles this case: every point finite
        assert all(np.isfinite(p[k]) for p in results["path"] for k in ("R", "mu", "loss", "norm"))
        assert "Traceback" not in result.output + result.stderr
    else:  # or the path is reported as not computed, with the reason
        assert "warning: regularization path not computed" in result.stderr
        assert results["notes"][0].startswith("regularization path not computed")


def test_falsify_replay_of_a_missing_directory_names_falsify(tmp_path):
    message = one_error_line(run("falsify", "--replay", tmp_path / "nodir"))
    assert "theorycheck falsify" in message and "analyze" not in message
    (tmp_path / "empty").mkdir()
    assert "has no falsify.json" in one_error_line(run("falsify", "--replay", tmp_path / "empty"))


# --------------------------------------------------------------------------- 7. messages and --help


def test_brackets_in_messages_and_tokens_are_printed_verbatim(tmp_path):
    emb = tmp_path / "emb.json"
    emb.write_text("[1, 2]")
    message = one_error_line(run("analyze", EXAMPLES / "chain.jsonl", "--embeddings", emb, "--out", tmp_path / "o"))
    assert message.endswith("must be a non-empty object {token: [numbers]}")
    corpus = tmp_path / "brackets.jsonl"
    corpus.write_text(json.dumps({"context": ["[bold]", "[/]", "[red]"], "next": "[bold]"}) + "\n")
    result = run("analyze", corpus, "--detail", "[red]", "--out", tmp_path / "b", "--radii", "none")
    assert result.exit_code == 0, result.output
    assert "G^([red])" in result.stdout and "[bold]" in result.stdout and "[/]" in result.stdout
    result = run("predict", tmp_path / "b", "[bold] [/] [red]")
    assert result.exit_code == 0 and "[bold]: 1.000" in result.stdout


def test_internal_error_text_is_escaped(monkeypatch, tmp_path):
    import theorycheck.predictions as predictions

    def boom(*_a, **_k):
        raise RuntimeError("pip install 'theorycheck[torch]'")

    monkeypatch.setattr(predictions, "analyze", boom)
    result = run("analyze", EXAMPLES / "chain.jsonl", "--out", tmp_path)
    assert result.exit_code == 70
    assert "pip install 'theorycheck[torch]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_shows_ranges_choices_and_examples():
    text = run("analyze", "--help").stdout
    assert "x>=2" in text and "x>=1" not in text
    for choices in ("word|char", "drop|unk", "auto|orthonormal|general", "auto|text|jsonl"):
        assert choices in text, choices
    assert "corpus.txt" not in text
    text = run("predict", "--help").stdout
    assert "Examples" in text and "theorycheck predict" in text


def test_readme_examples_name_files_that_exist():
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert "corpus.txt" not in readme
    for line in readme.splitlines():
        if line.startswith("theorycheck ") and "examples/" in line:
            for word in line.split("#")[0].split():
                if word.startswith("examples/"):
                    assert (EXAMPLES.parent / word).exists(), word


# --------------------------------------------------------------------------- scan-snap


SCAN_FAST = ["--no-sweeps", "--no-snap", "--no-compare", "--steps", "5", "--workers", "0"]


def test_scan_snap_spec_needs_its_colon_and_a_file_wins(tmp_path, monkeypatch):
    from theorycheck.commands.scan_snap import is_scansnap_spec

    monkeypatch.chdir(tmp_path)
    assert is_scansnap_spec("scansnap:K=2") and not is_scansnap_spec("scansnap_corpus.jsonl")
    shutil.copy(EXAMPLES / "chain.jsonl", "scansnap:K=2")
    assert not is_scansnap_spec("scansnap:K=2")  # an existing file wins
    assert is_scansnap_spec("scansnap:" + "K" * 5000)  # a name too long for a file: a spec, not a crash


@pytest.mark.parametrize("args, expected", [
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--eta-y", "nan"], "positive finite"),
    (["--eta-z", "inf"], "positive finite"),
    (["--eta-y", "1e308"], "training diverged"),  # overflows: no verdict on garbage
])
def test_scan_snap_invalid_numbers_give_no_verdict(tmp_path, args, expected):
    message = one_error_line(run("scan-snap", "scansnap:K=2,n=64", *SCAN_FAST, *args, "--out", tmp_path / "o"))
    assert expected in message and not (tmp_path / "o" / "scansnap.json").exists()


def test_scan_snap_retires_a_report_of_the_earlier_files(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "report.html").write_text("<title>theorycheck report: HOLDS</title>")
    (out / "scansnap.html").write_text("<title>theorycheck scan-snap</title>")
    src = out / "scansnap.json"
    shutil.copy(EXAMPLES / "chain.jsonl", src)  # an input named like an output: refused
    assert "overwrite an input" in one_error_line(run("scan-snap", src, *SCAN_FAST, "--out", out))
    src.unlink()
    result = run("scan-snap", "scansnap:K=2,n=64", *SCAN_FAST, "--no-html", "--out", out)
    assert result.exit_code in (0, 1), result.output
    assert "removed scansnap.html, report.html" in result.stderr
    assert not (out / "report.html").exists() and (out / "scansnap.json").exists()


@pytest.mark.parametrize("spec", ["scansnap:n=1000000000", "scansnap:distinct=100000000"])
def test_scansnap_spec_too_large_is_refused_before_drawing(tmp_path, spec):
    """The dense K·n × M count matrix alone would need terabytes: exit 2 naming what to lower."""
    r = runner.invoke(app, ["scan-snap", spec, "--out", str(tmp_path)])
    assert r.exit_code == 2 and "GiB" in r.output and "lower n" in r.output
    assert not (tmp_path / "scansnap.json").exists()


def test_an_overflow_in_the_path_kkt_solver_falls_back_to_the_nested_solver(tmp_path):
    # Found by the CLI fuzz test: the characters of one JSON line read as text.  The KKT-Newton
    # path's CG overflowed (RuntimeWarning, an error here); it now hands the radius to the nested
    # solver, and every point of the path is a finite matrix on its radius.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text('{"context": ["a", "a", "a", "b"], "next": "a"}')
    result = runner.invoke(app, ["analyze", str(corpus), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    path = json.loads((tmp_path / "out" / "results.json").read_text())["path"]
    assert path and all(np.isfinite(p["loss"]) for p in path)


def test_background_job_returns_its_value_and_reraises_its_exception():
    # analyze runs W^fin in a Background thread while the Graph-SVM solves: its answer and its
    # errors must reach the caller as if it had run in line.
    from theorycheck.errors import InputError
    from theorycheck.predictions import Background

    job = Background(lambda a, b: a * b, 6, 7)
    assert job.result() == 42 and job.done()

    def fails():
        raise InputError("bad input")

    job = Background(fails)
    with pytest.raises(InputError, match="bad input"):
        job.result()


def corpus_files(tmp_path, corpus) -> tuple[Path, Path]:
    """A synthetic corpus as a JSONL file and its embeddings as a JSON file."""
    from reference import windows_of

    vocab = corpus.vocab
    windows, labels = windows_of(corpus)
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"context": [vocab[t] for t in w], "next": vocab[y]}) + "\n"
                            for w, y in zip(windows, labels, strict=True)))
    emb = tmp_path / "e.json"
    emb.write_text(json.dumps({t: corpus.E[i].tolist() for i, t in enumerate(vocab)}))
    return path, emb


@pytest.mark.parametrize("module, limit, shape, expected", [
    # independent generators (K = 7 <= d = 9): the Cholesky frame, 16,000 generators at most
    ("finite", "FRAME_LIMIT", (7, 9, 4), "generators ("),
    # K = 10 > d = 4: dependent generators, the eigenvector frame, 6,000 at most
    ("finite", "EIGEN_FRAME_LIMIT", (10, 4, 0), "generators dependent"),
    # the same, past the frame: the cvxpy Graph-SVM with dense d×d rows, 6 M nonzeros at most
    ("svm", "CVXPY_NONZERO_LIMIT", (10, 4, 0), "constraint rows hold"),
])
def test_problems_beyond_the_dense_solvers_reach_are_refused_with_the_fix(tmp_path, monkeypatch, module, limit,
                                                                           shape, expected):
    """Found on python3-doc with random embeddings: V = 300, T = 32, d = 400 ran for over 10 minutes
    without output (a 21,497² eigendecomposition); V = 300, d = 256 (K > d) went past 12 GiB in cvxpy.
    Each dense stage now refuses sizes beyond its limit up front (exit 2, the fix named, nothing
    written); here the limits are lowered to just below the case's size."""
    import importlib

    from theorycheck.corpus.synthetic import synthetic
    from theorycheck.finite import CyclicSubspace
    from theorycheck.graphs import build_graphs

    K, d, seed = shape
    corpus = synthetic(n=60, T=5, K=K, d=d, embeddings="unit-norm", graphs="cyclic", seed=seed).realizable()
    graphs = build_graphs(corpus)
    sub = CyclicSubspace(corpus.E, graphs)
    assert sub.scores_bijective == (K <= d)
    if limit == "CVXPY_NONZERO_LIMIT":
        from theorycheck.svm import constraint_rows

        ga, _, _, ea, _, _ = constraint_rows(graphs, reduced=True)
        size = (ga.size + ea.size) * d * d
    else:
        size = len(sub.gen_a)
    monkeypatch.setattr(importlib.import_module(f"theorycheck.{module}"), limit, size - 1)
    path, emb = corpus_files(tmp_path, corpus)
    message = one_error_line(run("analyze", path, "--embeddings", emb, "--out", tmp_path / "o"))
    assert expected in message and f"{size:,}" in message and "omit --embeddings" in message
    assert not (tmp_path / "o").exists()
    monkeypatch.setattr(importlib.import_module(f"theorycheck.{module}"), limit, size)
    assert run("analyze", path, "--embeddings", emb, "--out", tmp_path / "o2").exit_code in (0, 3)
