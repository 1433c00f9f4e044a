"""Fuzz of the CLI entry, in process (issue 12): corpora, embeddings, synthetic specs, results
directories and options.  Whatever the input, a command ends with a documented exit code
(0, 1, 3, 4 a verdict; 2 bad input with a one-line message), never an internal error (70),
a traceback, or an escaped exception.

A fast subset runs by default (a few seconds); ``-m slow`` runs 10,000 cases.  Set
``THEORYCHECK_FUZZ_REPORT=1`` and run with ``-s`` for the counts.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import write_object_npy
from typer.testing import CliRunner

from theorycheck.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()
COUNTS: Counter = Counter()
SLOWEST: list = [0.0, None]  # seconds and arguments of the slowest case
VERDICTS = {0, 1, 3, 4}

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOW_CASES = 10_000
SLOW_SHARE = {"analyze_text": 0.2, "analyze_jsonl": 0.27, "synthetic": 0.16, "predict": 0.14,
              "options": 0.08, "report_from": 0.05, "verify": 0.1}


def slow(kind: str):
    return settings(max_examples=int(SLOW_CASES * SLOW_SHARE[kind]), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    if os.environ.get("THEORYCHECK_FUZZ_REPORT") and COUNTS:
        print("\nfuzz counts:", dict(sorted(COUNTS.items())), f"slowest case: {SLOWEST[0]:.2f} s", SLOWEST[1])


def invoke(args: list[str], kind: str):
    """Run the CLI and check the exit-code contract; returns the result."""
    start = time.perf_counter()
    result = runner.invoke(app, [str(a) for a in args])
    seconds = time.perf_counter() - start
    if seconds > SLOWEST[0]:
        SLOWEST[:] = [seconds, [str(a) for a in args]]
    COUNTS["cases"] += 1
    COUNTS[f"{kind}:exit {result.exit_code}"] += 1
    output = result.output
    if result.exit_code == 70:
        COUNTS["internal errors"] += 1
    if "Traceback" in output or (result.exception is not None and not isinstance(result.exception, SystemExit)):
        COUNTS["tracebacks"] += 1
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in output, (args, output[-2000:])
    assert result.exit_code in VERDICTS | {2}, (args, result.exit_code, output[-2000:])
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        if os.environ.get("THEORYCHECK_FUZZ_REPORT") == "messages":
            COUNTS["message: " + (errors[0] if errors else "usage")[:60]] += 1
        if errors:  # the one-line contract: one error line, after any warnings
            assert len(errors) == 1 and lines[-1] == errors[0], (args, lines)
            assert all(line.startswith(("warning:", "error:")) for line in lines), (args, lines)
        else:  # an option the parser refused: typer's usage box names it
            assert "Usage:" in result.stderr, (args, result.stderr)
    return result


# --------------------------------------------------------------------------- strategies

# tokens with the characters that broke things before: rich markup brackets, quotes, unicode
TOKEN_CHARS = string.ascii_lowercase[:6] + "[]/{}\\'\" é∑0"
tokens = st.text(alphabet=TOKEN_CHARS, min_size=0, max_size=4)
small_tokens = st.sampled_from(["a", "b", "c", "q", "[red]", "[/]", "x y", "", "é"])

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-3, max_value=3),
    st.integers(min_value=-10, max_value=10),
    st.sampled_from([0, 0.0, 1e-300, 1e300, 1e6, 1e7, -1e6, 10**400]),
)


def _json_number(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v)
    return str(v)


@st.composite
def embeddings_text(draw, vocab: list[str]):
    """An embeddings file: mostly well-formed (so the solvers run), sometimes broken."""
    kind = draw(st.sampled_from(["orthonormal", "random", "random", "broken-number", "missing", "garbage"]))
    toks = list(dict.fromkeys(vocab)) or ["a"]
    if kind == "garbage":
        return draw(st.sampled_from(["", "{", "[1,2]", "{}", '{"a": 1}', '{"a": [true]}', "\xff", '{"a": []}',
                                     "[" * 5000 + "]" * 5000]))
    if kind == "missing" and len(toks) > 1:
        toks = toks[:-1]
    d = draw(st.integers(min_value=1, max_value=max(1, len(toks) + 2)))
    if kind == "orthonormal":
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        dd = max(d, len(toks))
        Q, _ = np.linalg.qr(rng.standard_normal((dd, dd)))
        vectors = {t: [repr(float(x)) for x in Q[i]] for i, t in enumerate(toks)}
    else:
        scale = draw(st.sampled_from([1.0, 1e-8, 1e5, 1e-200]))
        vectors = {}
        for t in toks:
            vals = draw(st.lists(st.floats(min_value=-2, max_value=2), min_size=d, max_size=d))
            vectors[t] = [repr(v * scale) for v in vals]
        if kind == "broken-number":
            t = draw(st.sampled_from(toks))
            vectors[t][0] = _json_number(draw(numbers))
            if draw(st.booleans()):
                vectors[t] = vectors[t][:-1] or ["1"]  # ragged
    body = ", ".join(f"{json.dumps(t)}: [{', '.join(v)}]" for t, v in vectors.items())
    return "{" + body + "}"


@st.composite
def jsonl_corpus(draw):
    """JSON lines: samples over a few tokens, with the odd broken line."""
    vocab = draw(st.lists(small_tokens, min_size=1, max_size=5, unique=True))
    lines = []
    n = draw(st.integers(min_value=0, max_value=8))
    broken = draw(st.integers(min_value=0, max_value=3 * n)) if n else -1  # one bad line in about a third
    for i in range(n):
        shape = draw(st.sampled_from(["short", "nonext", "badtype", "notjson", "list", "blank"])) if i == broken \
            else "ok"
        ctx = draw(st.lists(st.sampled_from(vocab), min_size=2, max_size=6))
        nxt = draw(st.sampled_from([*vocab, *ctx]))
        if shape == "ok":
            lines.append(json.dumps({"context": ctx, "next": nxt}))
        elif shape == "short":
            lines.append(json.dumps({"context": ctx[:1], "next": nxt}))
        elif shape == "nonext":
            lines.append(json.dumps({"context": ctx}))
        elif shape == "badtype":
            lines.append(json.dumps({"context": [1, 2], "next": [nxt]}))
        elif shape == "notjson":
            lines.append('{"context": ["a", ')
        elif shape == "list":
            lines.append("[1, 2, 3]")
        else:
            lines.append("   ")
    tokens_used = sorted({t for line in lines if line.startswith('{"context"') and line.endswith("}")
                          for t in _tokens_of(line)})
    return "\n".join(lines) + ("\n" if draw(st.booleans()) else ""), tokens_used or vocab


def _tokens_of(line: str) -> list[str]:
    try:
        obj = json.loads(line)
    except ValueError:
        return []
    out = [t for t in obj.get("context", []) if isinstance(t, str)]
    return out + ([obj["next"]] if isinstance(obj.get("next"), str) else [])


text_corpus = st.one_of(
    st.lists(st.sampled_from(["the", "a", "of", "class", "x", "[red]", "42", "naïve", "\n\n", ".", "'s"]),
             min_size=0, max_size=80).map(" ".join),
    st.lists(st.sampled_from(["the", "a", "of", "class", "x", "y", "z", "[b]", "\n\n"]),
             min_size=20, max_size=120).map(" ".join),
    st.text(max_size=200),
    st.sampled_from(["", "   ", "\x00\x01", '{"context": ["a", "q"], "next": "a"}']),
)

file_names = st.sampled_from(["corpus.txt", "data.json", "UPPER.JSONL", "c.jsonl", "synthetic_corpus.jsonl",
                              "synthetic:n=3", "scansnap:K=2", "[x].txt", "results.json", "timings.json", "noext"])

def mostly(valid: list, invalid: list):
    """Valid values far more often than invalid ones, so that most cases reach the solvers."""
    return st.sampled_from(valid * (12 // len(valid) + 1) + invalid)


text_options = st.fixed_dictionaries({}, optional={
    "--window": mostly([2, 3, 4, 6], [-2, 0, 1, 12]),
    "--vocab": mostly([2, 3, 5, 20, 40], [-1, 0, 1]),
    "--unit": mostly(["word", "char"], ["byte"]),
    "--oov": mostly(["drop", "unk"], ["keep"]),
    "--radii": mostly(["none", "1,2", "1e3"], ["0", "nan", "inf", "x", "1,,2", "-1"]),
    "--svm-method": mostly(["auto", "orthonormal", "general"], ["magic"]),
    "--format": mostly(["auto", "text", "jsonl"], ["csv"]),
    "--detail": st.sampled_from(["q", "a", "all", "zz", "[red]"]),
    "--strict": st.just(None),
})


SPEC_VALUES = {
    "n": st.sampled_from(["0", "1", "3", "6", "-1", "1000000000", "2.5", "x", "9" * 30]),
    "T": st.sampled_from(["1", "2", "4", "9", "100000000", "-3"]),
    "K": st.sampled_from(["1", "2", "5", "100000", "0"]),
    "d": st.sampled_from(["0", "-1", "1", "3", "8", "100000"]),
    "embeddings": st.sampled_from(["one-hot", "orthonormal", "unit-norm", "equi-correlated", "gaussian"]),
    "rho": st.sampled_from(["0", "0.5", "0.99", "1", "nan", "-0.1", "inf"]),
    "graphs": st.sampled_from(["any", "acyclic", "cyclic", "tree"]),
    "seed": st.sampled_from(["0", "1", "-1", "2**64", "18446744073709551616"]),
    "colour": st.just("3"),
}


@st.composite
def synthetic_spec(draw):
    keys = draw(st.lists(st.sampled_from(sorted(k for k in SPEC_VALUES if k != "colour")), max_size=5, unique=True))
    parts = [f"{k}={draw(SPEC_VALUES[k])}" for k in keys]
    if draw(st.integers(0, 19)) == 0:
        parts.append(draw(st.sampled_from(["junk", "=", "n=", ",,", "colour=3", "n=2"])))
    return "synthetic:" + ",".join(parts)


def options_args(opts: dict) -> list[str]:
    return [str(x) for k, v in opts.items() for x in ((k,) if v is None else (k, v))]


# --------------------------------------------------------------------------- cases


def case_analyze_text(text, name, opts):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / name
        path.write_text(text, encoding="utf-8")
        before = path.read_bytes()
        invoke(["analyze", path, "--out", tmp / "out", *options_args(opts)], "analyze_text")
        assert path.read_bytes() == before  # an input is never overwritten


def case_analyze_jsonl(corpus, emb_kind, name, opts, data):
    text, vocab = corpus
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / name
        path.write_text(text, encoding="utf-8")
        args = ["analyze", path, "--out", tmp / "out", *options_args(opts)]
        if emb_kind:
            emb = tmp / "emb.json"
            emb.write_text(data.draw(embeddings_text(vocab)), encoding="utf-8")
            args += ["--embeddings", emb]
        invoke(args, "analyze_jsonl")


def case_synthetic(spec, opts):
    if opts.get("--format") in ("text", "jsonl") and len(spec) % 4:  # mostly without the refused --format
        opts = {k: v for k, v in opts.items() if k != "--format"}
    with tempfile.TemporaryDirectory() as tmp:
        invoke(["analyze", spec, "--out", Path(tmp) / "out", "--radii", "none", *options_args(opts)], "synthetic")


verify_options = st.fixed_dictionaries({"--steps": st.integers(min_value=1, max_value=12)}, optional={
    "--optimizer": mostly(["gd", "ngd", "adam"], ["sgd"]),
    "--checkpoints": mostly([2, 3, 5], [0, -1]),
    "--init": mostly(["random", "zero"], ["ones"]),
    "--lr": mostly([0.01, 0.5, 1.0], [0, -1]),
    "--holdout": mostly([0.0, 0.3], [0.95]),
    "--probes": mostly([0, 5], [-1]),
    "--seed": st.integers(min_value=0, max_value=3),
})


def case_verify(corpus, spec, use_spec, opts):
    """verify with a few steps on small corpora: the verdict machinery must not crash."""
    text, _ = corpus
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = spec
        if not use_spec:
            src = tmp / "c.jsonl"
            src.write_text(text, encoding="utf-8")
        invoke(["verify", src, "--out", tmp / "out", *options_args(opts)], "verify")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-results") / "mix"
    result = runner.invoke(app, ["analyze", str(EXAMPLES / "mix.jsonl"), "--embeddings",
                                 str(EXAMPLES / "mix_embeddings.json"), "--out", str(out), "--radii", "none"])
    assert result.exit_code == 0, result.output
    return out


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12,
)

RESULTS_KEYS = ["vocabulary", "queries", "assumptions", "corpus", "graphs", "verify"]


@st.composite
def corrupted_results(draw, original: dict):
    """A damaged copy of a results directory's results.json (as bytes) and which .npy to damage."""
    how = draw(st.sampled_from(["replace", "drop-key", "mutate-key", "mutate-query", "bytes", "ok", "ok", "ok"]))
    data = json.loads(json.dumps(original))
    if how == "replace":
        return json.dumps(draw(json_values)).encode()
    if how == "bytes":
        return draw(st.sampled_from([b"", b"\xff\xfe", b"[1,2,3]", b"{", b"null", b"[" * 100000]))
    if how == "drop-key":
        data.pop(draw(st.sampled_from(RESULTS_KEYS)), None)
    elif how == "mutate-key":
        data[draw(st.sampled_from(RESULTS_KEYS))] = draw(json_values)
    elif how == "mutate-query" and data["queries"]:
        q = data["queries"][draw(st.integers(0, len(data["queries"]) - 1))]
        q[draw(st.sampled_from(["query_index", "scc_indices", "condensation_edges", "query"]))] = draw(json_values)
    return json.dumps(data).encode()


npy_damage = st.sampled_from([None, None, None, "garbage", "shape", "nan", "missing", "object", "huge"])


def damage_npy(path: Path, how: str | None) -> None:
    if how is None:
        return
    if how == "missing":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"\x93NUMPY garbage")
    elif how == "shape":
        np.save(path, np.zeros((2, 3)))
    elif how == "nan":
        arr = np.load(path)
        arr.flat[0] = np.nan
        np.save(path, arr)
    elif how == "object":
        write_object_npy(path)
    elif how == "huge":
        np.save(path, np.load(path) * 1e200)


windows = st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "q", "zebra", "[red]"]), max_size=5).map(" ".join),
                   min_size=1, max_size=3)


def case_predict(results_dir, data):
    original = json.loads((results_dir / "results.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "res"
        shutil.copytree(results_dir, copy)
        (copy / "results.json").write_bytes(data.draw(corrupted_results(original)))
        damage_npy(copy / data.draw(st.sampled_from(["E.npy", "W_fin.npy"])), data.draw(npy_damage))
        invoke(["predict", copy, *data.draw(windows)], "predict")


def case_report_from(results_dir, data):
    """`report --from` on damaged analyze-only directories: the loader must refuse, not crash.
    Only top-level damage (missing or mistyped files and entries): the report renders every
    statistic of results.json and the lead's verify/report code validates the rest."""
    original = json.loads((results_dir / "results.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "res"
        shutil.copytree(results_dir, copy)
        how = data.draw(st.sampled_from(["bytes", "drop-key", "queries", "npy"]))
        if how == "bytes":
            (copy / "results.json").write_bytes(data.draw(st.sampled_from([b"", b"\xff", b"[1]", b"{"])))
        elif how == "drop-key":
            original.pop(data.draw(st.sampled_from(RESULTS_KEYS[:5])))
            (copy / "results.json").write_text(json.dumps(original))
        elif how == "queries":
            original["queries"] = data.draw(json_values)
            (copy / "results.json").write_text(json.dumps(original))
        else:
            damage_npy(copy / data.draw(st.sampled_from(["E.npy", "W_fin.npy", "W_svm.npy"])),
                       data.draw(st.sampled_from(["garbage", "missing", "object", "nan"])))
        invoke(["report", "--from", copy], "report_from")  # 0 too: e.g. "queries": [] is a valid layout


OUT_KINDS = ["fresh", "file", "under-file", "proc", "is-input", "input-inside", "stale", "dir-named-output"]


def case_options(out_kind, name):
    """Output directories: refused before any work when unusable or when they hold an input;
    an earlier run's leftovers are retired, never mixed with the new results."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "chain.jsonl"
        shutil.copy(EXAMPLES / "chain.jsonl", src)
        out = tmp / "out"
        protected = src
        if out_kind == "file":
            out.write_text("x")
            protected = out
        elif out_kind == "under-file":
            (tmp / "f").write_text("x")
            out = tmp / "f" / "sub"
        elif out_kind == "proc":
            out = Path("/proc/theorycheck-fuzz")
        elif out_kind == "is-input":
            out = src
        elif out_kind == "input-inside":
            out.mkdir()
            src = out / name
            shutil.copy(EXAMPLES / "chain.jsonl", src)
            protected = src
        elif out_kind == "stale":
            out.mkdir()
            np.save(out / "W_trained.npy", np.eye(2))  # a real earlier output (fakes are left alone)
            (out / "trajectory.json").write_text('{"checkpoints": []}')
        elif out_kind == "dir-named-output":
            (out / "results.json").mkdir(parents=True)
        before = protected.read_bytes()
        result = invoke(["analyze", src, "--out", out, "--radii", "none"], "options")
        assert protected.read_bytes() == before
        if out_kind == "fresh":
            assert result.exit_code == 0
        elif out_kind == "stale":
            assert result.exit_code == 0
            assert not (out / "W_trained.npy").exists() and not (out / "trajectory.json").exists()
        elif out_kind == "input-inside" and name in ("results.json", "timings.json", "E.npy", "summary.md",
                                                     "trajectory.json", "report.html"):
            assert result.exit_code == 2 and "overwrite an input" in result.stderr
        elif out_kind not in ("input-inside",):
            assert result.exit_code == 2


# --------------------------------------------------------------------------- the fast subset

output_names = st.sampled_from(["results.json", "timings.json", "E.npy", "summary.md", "trajectory.json",
                                "report.html", "data.jsonl"])


@FAST
@given(text=text_corpus, name=file_names, opts=text_options)
def test_fuzz_analyze_text(text, name, opts):
    case_analyze_text(text, name, opts)


@FAST
@given(corpus=jsonl_corpus(), emb_kind=st.booleans(), name=file_names, opts=text_options, data=st.data())
def test_fuzz_analyze_jsonl_and_embeddings(corpus, emb_kind, name, opts, data):
    case_analyze_jsonl(corpus, emb_kind, name, opts, data)


@FAST
@given(spec=synthetic_spec(), opts=text_options)
def test_fuzz_synthetic_specs(spec, opts):
    case_synthetic(spec, opts)


@FAST
@given(data=st.data())
def test_fuzz_predict_on_damaged_results(results_dir, data):
    case_predict(results_dir, data)


@settings(FAST, max_examples=8)
@given(data=st.data())
def test_fuzz_report_from_damaged_results(results_dir, data):
    case_report_from(results_dir, data)


@settings(FAST, max_examples=16)
@given(out_kind=st.sampled_from(OUT_KINDS), name=output_names)
def test_fuzz_output_directories(out_kind, name):
    case_options(out_kind, name)


# --------------------------------------------------------------------------- 10,000 cases


@pytest.mark.slow
@slow("analyze_text")
@given(text=text_corpus, name=file_names, opts=text_options)
def test_fuzz_slow_analyze_text(text, name, opts):
    case_analyze_text(text, name, opts)


@pytest.mark.slow
@slow("analyze_jsonl")
@given(corpus=jsonl_corpus(), emb_kind=st.booleans(), name=file_names, opts=text_options, data=st.data())
def test_fuzz_slow_analyze_jsonl_and_embeddings(corpus, emb_kind, name, opts, data):
    case_analyze_jsonl(corpus, emb_kind, name, opts, data)


@pytest.mark.slow
@slow("synthetic")
@given(spec=synthetic_spec(), opts=text_options)
def test_fuzz_slow_synthetic_specs(spec, opts):
    case_synthetic(spec, opts)


@pytest.mark.slow
@slow("predict")
@given(data=st.data())
def test_fuzz_slow_predict_on_damaged_results(results_dir, data):
    case_predict(results_dir, data)


@pytest.mark.slow
@slow("report_from")
@given(data=st.data())
def test_fuzz_slow_report_from_damaged_results(results_dir, data):
    case_report_from(results_dir, data)


@pytest.mark.slow
@slow("options")
@given(out_kind=st.sampled_from(OUT_KINDS), name=output_names)
def test_fuzz_slow_output_directories(out_kind, name):
    case_options(out_kind, name)


@settings(FAST, max_examples=6)
@given(corpus=jsonl_corpus(), spec=synthetic_spec(), use_spec=st.booleans(), opts=verify_options)
def test_fuzz_verify_few_steps(corpus, spec, use_spec, opts):
    case_verify(corpus, spec, use_spec, opts)


@pytest.mark.slow
@slow("verify")
@given(corpus=jsonl_corpus(), spec=synthetic_spec(), use_spec=st.booleans(), opts=verify_options)
def test_fuzz_slow_verify_few_steps(corpus, spec, use_spec, opts):
    case_verify(corpus, spec, use_spec, opts)
