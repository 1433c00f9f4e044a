"""`theorycheck analyze` and `theorycheck predict` end to end (exit codes, files, messages)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from theorycheck.cli import app
from theorycheck.io import SCHEMA_VERSION

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def analyze_example(examples_dir, name, out, *extra):
    return run("analyze", examples_dir / f"{name}.jsonl", "--embeddings", examples_dir / f"{name}_embeddings.json",
               "--out", out, *extra)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- outputs


def test_analyze_writes_the_documented_outputs(examples_dir, tmp_path):
    out = tmp_path / "chain"
    result = analyze_example(examples_dir, "chain", out)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["schema_version"] == SCHEMA_VERSION
    assert res["vocabulary"] == ["a", "b", "c", "q"]  # matrix order = embeddings-file order
    assert res["corpus"]["windows"] == 2 and res["corpus"]["windows_read"] == 2
    assert res["corpus"]["unrealizable_dropped"] == 0
    assert res["graphs"]["edges"] == 4 and res["graphs"]["cyclic_sccs"] == 0
    (query,) = res["queries"]
    assert query["query"] == "q" and query["sccs"] == [["a"], ["b"], ["c"], ["q"]]
    assert res["svm"]["min_margin"] == pytest.approx(1.0) and res["svm"]["max_violation"] < 1e-9
    assert res["svm"]["kkt_residual"] < 1e-7 and res["svm"]["status"]
    assert res["finite"]["status"].startswith("trivial") and res["finite"]["dimension"] == 0
    assert [p["R"] for p in res["path"]] == [1, 2, 5, 10, 20, 50]
    assert {"cos_svm", "fin_distance", "loss", "norm", "resolved"} <= set(res["path"][0])
    assert all(a["holds"] for a in res["assumptions"])
    W_svm = np.load(out / "W_svm.npy", allow_pickle=False)
    W_fin = np.load(out / "W_fin.npy", allow_pickle=False)
    assert W_svm.dtype == W_fin.dtype == np.float64 and W_svm.shape == W_fin.shape == (4, 4)
    # hand-derived chain solution (test_svm.py): column q = (5/4, 1/4, -3/4, -3/4)
    np.testing.assert_allclose(W_svm[:, 3], [1.25, 0.25, -0.75, -0.75], atol=1e-8)
    assert not np.delete(W_svm, 3, axis=1).any() and not W_fin.any()


def test_results_are_byte_identical_across_runs(examples_dir, tmp_path):
    for out in ("one", "two", "two"):  # a fresh directory, another one, then a re-run into it
        assert analyze_example(examples_dir, "mix", tmp_path / out).exit_code == 0
        if out == "one":
            first = (tmp_path / "one" / "results.json").read_bytes()
        else:
            assert (tmp_path / out / "results.json").read_bytes() == first
    for name in ("W_svm.npy", "W_fin.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_realizability_dropping_is_counted_and_strict_refuses_it(tmp_path):
    corpus = write(tmp_path / "c.jsonl", "\n".join(json.dumps(s) for s in [
        {"context": ["a", "b", "q"], "next": "a"},
        {"context": ["a", "b", "q"], "next": "c"},  # c is not in its window
        {"context": ["b", "c", "q"], "next": "b"},
    ]) + "\n")
    result = run("analyze", corpus, "--out", tmp_path / "out", "--radii", "none")
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "out" / "results.json").read_text())["corpus"]
    assert (stats["windows_read"], stats["windows"], stats["unrealizable_dropped"]) == (3, 2, 1)
    assert stats["unrealizable_fraction"] == pytest.approx(1 / 3)
    result = run("analyze", corpus, "--out", tmp_path / "strict", "--strict")
    assert result.exit_code == 2
    assert "--strict" in result.stderr and "Traceback" not in result.output


def test_bundled_corpus_counts_windows_consistently(tmp_path):
    result = run("analyze", "--vocab", 30, "--window", 4, "--radii", "none", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "results.json").read_text())["corpus"]
    assert stats["windows"] + stats["unrealizable_dropped"] == stats["windows_read"] > 0
    assert stats["vocabulary"] == 30 and stats["mean_window_length"] == 4.0


def test_infeasible_example_exits_3_with_a_certificate(examples_dir, tmp_path):
    result = analyze_example(examples_dir, "infeasible", tmp_path)
    assert result.exit_code == 3
    last = result.stdout.strip().splitlines()[-1]
    assert last == "the theorem does not apply: linearly independent embeddings, Graph-SVM feasible"
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["svm"] is None
    assert res["infeasibility_certificate"]["kind"] == "farkas"
    assert sorted(row["y"] for row in res["infeasibility_certificate"]["inequalities"]) == pytest.approx([0.5, 0.5])


# --------------------------------------------------------------------------- bad input: exit 2, one line


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    emb2 = json.dumps({"a": [1, 0], "q": [0, 1]})
    files = {
        "empty.jsonl": "",
        "empty.txt": "   \n",
        "malformed.jsonl": '{"context": ["a", "q"], "next": "a"}\n{"context": ["a", \n',
        "nonext.jsonl": '{"context": ["a", "q"], "label": "a"}\n',
        "needs_b.jsonl": '{"context": ["a", "b", "q"], "next": "a"}\n',
        "ok.jsonl": '{"context": ["a", "q"], "next": "a"}\n',
        "short.jsonl": '{"context": ["q"], "next": "q"}\n',
        "words.txt": "one two three four five six seven\n",
        "emb2.json": emb2,
        "nan.json": '{"a": [NaN, 0], "q": [0, 1]}',
        "inf.json": '{"a": [Infinity, 0], "q": [0, 1]}',
        "ragged.json": '{"a": [1, 0, 0], "q": [0, 1]}',
        "notjson.json": '{"a": [1, 0], ',
        # 100,000 distinct tokens: d x d float64 matrices would need about a TiB
        "huge.txt": " ".join(str(i) for i in range(100_000)),
    }
    for name, text in files.items():
        write(d / name, text)
    return d


BAD_CASES = {
    "empty jsonl": (["{d}/empty.jsonl"], "is empty"),
    "empty text": (["{d}/empty.txt"], "is empty"),
    "malformed json line": (["{d}/malformed.jsonl"], "malformed.jsonl:2: not valid JSON"),
    "missing next": (["{d}/nonext.jsonl"], 'no "next" field'),
    "token without vector": (["{d}/needs_b.jsonl", "--embeddings", "{d}/emb2.json"], "not in the embeddings file"),
    "NaN vector": (["{d}/ok.jsonl", "--embeddings", "{d}/nan.json"], "NaN or infinite"),
    "infinite vector": (["{d}/ok.jsonl", "--embeddings", "{d}/inf.json"], "NaN or infinite"),
    "ragged vectors": (["{d}/ok.jsonl", "--embeddings", "{d}/ragged.json"], "same length"),
    "embeddings not json": (["{d}/ok.jsonl", "--embeddings", "{d}/notjson.json"], "not valid JSON"),
    "window 1 (jsonl)": (["{d}/short.jsonl"], "length 2 or more"),
    "window longer than text": (["{d}/words.txt", "--window", "50"], "lower --window"),
    "vocabulary beyond memory": (["{d}/huge.txt", "--vocab", "200000", "--window", "4"], "lower --vocab"),
    "missing file": (["{d}/nowhere.txt"], "does not exist"),
    "bad radii": (["{d}/ok.jsonl", "--radii", "1,x"], "--radii"),
    "bad synthetic key": (["synthetic:n=4,colour=3"], "unknown synthetic key"),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_input_exits_2_with_one_line(bad, tmp_path, case):
    args, expected = BAD_CASES[case]
    result = run("analyze", *[a.format(d=bad) for a in args], "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and message.startswith("error:")
    assert expected in message
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


USAGE_CASES = {
    "window 1": (["{d}/words.txt", "--window", "1"], "--window"),
    "vocab 1": (["{d}/words.txt", "--vocab", "1"], "--vocab"),
    "bad svm method": (["{d}/ok.jsonl", "--svm-method", "magic"], "--svm-method"),
    "bad unit": (["{d}/words.txt", "--unit", "byte"], "--unit"),
    "bad oov": (["{d}/words.txt", "--oov", "keep"], "--oov"),
    "bad format": (["{d}/words.txt", "--format", "csv"], "--format"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES), ids=list(USAGE_CASES))
def test_out_of_range_options_are_usage_errors(bad, tmp_path, case):
    """Ranges and choices are enforced by the option parser (exit 2, shown in --help)."""
    args, option = USAGE_CASES[case]
    result = run("analyze", *[a.format(d=bad) for a in args], "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.stderr and option in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_out_must_not_be_an_input(examples_dir, tmp_path):
    corpus = tmp_path / "chain.jsonl"
    shutil.copy(examples_dir / "chain.jsonl", corpus)
    before = corpus.read_bytes()
    result = run("analyze", corpus, "--out", corpus)
    assert result.exit_code == 2 and "--out" in result.stderr
    # an input called results.json inside the output directory would be overwritten
    inside = tmp_path / "res"
    inside.mkdir()
    shutil.copy(examples_dir / "chain.jsonl", inside / "results.json")
    result = run("analyze", inside / "results.json", "--out", inside)
    assert result.exit_code == 2 and "overwrite an input" in result.stderr
    assert corpus.read_bytes() == before
    assert (inside / "results.json").read_bytes() == (examples_dir / "chain.jsonl").read_bytes()


# --------------------------------------------------------------------------- predict


def test_predict_prints_the_automaton(examples_dir, tmp_path):
    assert analyze_example(examples_dir, "mix", tmp_path, "--radii", "none").exit_code == 0
    result = run("predict", tmp_path, "a b c q", "d q", "a c")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = next(line for line in lines if "a b c q" in line)
    # closed form (test_automaton.py): b: 2 - sqrt 2, a: sqrt 2 - 1
    assert "determined" in row and f"b: {2 - math.sqrt(2):.3f}" in row and f"a: {math.sqrt(2) - 1:.3f}" in row
    assert "no dominant SCC" in next(line for line in lines if "d q" in line)
    assert "unseen query" in next(line for line in lines if "│ a c " in line)
    result = run("predict", tmp_path, "a zebra q")
    assert result.exit_code == 2 and "not in the vocabulary" in result.stderr
    result = run("predict", tmp_path / "nowhere", "a q")
    assert result.exit_code == 2 and "does not exist" in result.stderr


# --------------------------------------------------------------------------- real processes


def test_exit_codes_from_a_real_process(examples_dir, bad, tmp_path):
    base = [sys.executable, "-m", "theorycheck", "analyze"]
    proc = subprocess.run([*base, str(bad / "nonext.jsonl"), "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run([*base, str(examples_dir / "infeasible.jsonl"), "--embeddings",
                           str(examples_dir / "infeasible_embeddings.json"), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
