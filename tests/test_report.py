"""theorycheck report: the files, their content, --from, and the numbers the report shows.

Mathematical checks use independent facts: a hand-solved attention distribution, the
automaton as the limit of W^fin + R W^svm (THEORY.md §5.5, P14), reachability preserved
by the drawn condensation, and the score convention M[a, k] = e_a^T W e_k.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import sys
import types

import networkx as nx
import numpy as np
import pytest
from typer.testing import CliRunner

import theorycheck
from theorycheck.cli import app
from theorycheck.corpus import load_corpus
from theorycheck.io import read_json, write_json
from theorycheck.report import load_results_dir, scansnap_section
from theorycheck.report.data import (
    HEATMAP_TOKENS,
    ReportData,
    compare_windows,
    heatmap_tokens,
    model_attention,
    most_cyclic_queries,
    query_tokens,
    report_windows,
    score_matrix,
    seen_pairs,
)
from theorycheck.report.figures import MAX_SCCS_PER_LEVEL, collapsed_condensation
from theorycheck.report.html import render_html
from theorycheck.verify import EXIT_CODES

SPEC = "synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1"
FIGURE_IDS = ("convergence", "priority", "heatmaps", "windows")
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk of a PNG (PNG spec: signature, then IHDR first)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def embedded_pngs(html: str) -> dict[str, bytes]:
    """figure id -> decoded PNG bytes of the <img> inside <figure id="fig-ID">."""
    found = re.findall(r'<figure id="fig-([\w-]+)">.*?<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"',
                       html, flags=re.S)
    return {fid: base64.b64decode(b64, validate=True) for fid, b64, _alt in found}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """One real report run (analyze + verify + render) on the paper-style synthetic corpus."""
    out = tmp_path_factory.mktemp("report") / "res"
    result = run("report", SPEC, "--steps", 200, "--out", out)
    return out, result


def test_report_writes_every_file_and_exits_with_the_verdict(fresh):
    out, result = fresh
    for name in ("report.html", "summary.md", "results.json", "trajectory.json", "W_svm.npy", "W_fin.npy",
                 "E.npy", "W_trained.npy"):
        assert (out / name).is_file(), name
    verdict = read_json(out / "results.json")["verify"]
    assert result.exit_code == verdict["exit_code"] == EXIT_CODES[verdict["verdict"]], result.output
    assert "Criteria" in result.output and "Automaton against the trained model" in result.output


def test_html_shows_verdict_every_criterion_and_every_figure(fresh):
    out, _ = fresh
    html = (out / "report.html").read_text(encoding="utf-8")
    verdict = read_json(out / "results.json")["verify"]
    assert f"Verdict: {verdict['verdict']}" in html
    assert html.index("Verdict:") < html.index('id="assumptions"') < html.index('id="figures"')  # verdict first
    for c in verdict["criteria"]:
        assert f"<code>{c['id']}</code>" in html
        assert re.search(rf"<code>{c['id']}</code></td><td>{c['prediction']}</td>", html)
    pngs = embedded_pngs(html)
    assert set(pngs) == set(FIGURE_IDS)
    assert html.count('<img src="data:image/png;base64,') == len(FIGURE_IDS)
    for fid, data in pngs.items():
        width, height = png_size(data)
        assert width > 300 and height > 150, fid
    assert all(alt.strip() for alt in re.findall(r'<img [^>]*alt="([^"]*)"', html))


def test_html_is_self_contained(fresh):
    out, _ = fresh
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    for tag in ("<script", "<link", "<iframe", "@import", "url("):
        assert tag not in html, tag
    srcs = re.findall(r'\ssrc\s*=\s*"([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for href in re.findall(r'\shref\s*=\s*"([^"]*)"', html):  # in-page anchors only, each pointing somewhere
        assert href.startswith("#") and f'id="{href[1:]}"' in html, href


def test_summary_md(fresh):
    out, _ = fresh
    md = (out / "summary.md").read_text(encoding="utf-8")
    verdict = read_json(out / "results.json")["verify"]
    assert f"**Verdict: {verdict['verdict']}**" in md and f"exit code {verdict['exit_code']}" in md
    assert "| criterion | THEORY |" in md
    for c in verdict["criteria"]:
        assert f"| {c['id']} | {c['prediction']} |" in md


def test_from_reproduces_the_report_without_training(fresh, tmp_path, monkeypatch):
    out, first = fresh
    inputs = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".json", ".npy")}

    def no_training(**_):
        raise AssertionError("--from must not recompute")

    monkeypatch.setattr("theorycheck.commands.report.run_verify", no_training)
    again = run("report", "--from", out, "--out", tmp_path / "copy")
    assert again.exit_code == first.exit_code, again.output
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["report.html", "summary.md"]
    assert (tmp_path / "copy" / "report.html").read_bytes() == (out / "report.html").read_bytes()
    assert (tmp_path / "copy" / "summary.md").read_bytes() == (out / "summary.md").read_bytes()
    in_place = run("report", "--from", out)  # default: into the same directory
    assert in_place.exit_code == first.exit_code
    assert (out / "report.html").read_bytes() == (tmp_path / "copy" / "report.html").read_bytes()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".json", ".npy")} == inputs


def test_from_rejects_what_only_training_uses(fresh, tmp_path):
    out, _ = fresh
    for args, flag in [(("--from", out, "--steps", 10), "--steps"), ((SPEC, "--from", out), "INPUT"),
                       (("--from", out, "--optimizer", "gd"), "--optimizer")]:
        result = run("report", *args)
        assert result.exit_code == 2 and flag in result.output, result.output
    missing = run("report", "--from", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_tokens_are_escaped_in_html_and_markdown(fresh, tmp_path):
    out, _ = fresh
    copy = tmp_path / "evil"
    shutil.copytree(out, copy)
    results = read_json(copy / "results.json")
    evil = {results["vocabulary"][0]: '<script>alert("x")</script>', results["vocabulary"][1]: "a|b"}
    text = json.dumps(results)
    for old, new in evil.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    write_json(copy / "results.json", json.loads(text))
    assert run("report", "--from", copy).exit_code == read_json(copy / "results.json")["verify"]["exit_code"]
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and "&lt;script&gt;" in html
    md = (copy / "summary.md").read_text(encoding="utf-8")
    for block in re.split(r"\n\n", md):  # every Markdown table keeps its column count
        rows = [line for line in block.splitlines() if line.startswith("|")]
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
        assert len(counts) <= 1, block


def test_analyze_only_directory_renders_predictions(tmp_path):
    out = tmp_path / "analyzed"
    assert run("analyze", SPEC, "--out", out, "--radii", "none").exit_code == 0
    result = run("report", "--from", out)
    assert result.exit_code == 0, result.output  # analyze's code: every assumption holds
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Verdict: PREDICTIONS ONLY" in html and "no convergence curves" in html
    assert set(embedded_pngs(html)) == {"priority", "heatmaps"}


def test_scansnap_section_included_or_noted(fresh, tmp_path, monkeypatch):
    copy = tmp_path / "with-scansnap"
    shutil.copytree(fresh[0], copy)
    write_json(copy / "scansnap.json", {"checks": [{"id": "S1", "passed": True}]})
    data = load_results_dir(copy)
    calls = []

    def section(results, figures_dir):
        calls.append((results, figures_dir))
        return '<section id="scansnap-fake">scan and snap here</section>'

    fake = types.ModuleType("theorycheck.scansnap.report")
    fake.scansnap_html_section = section
    monkeypatch.setitem(sys.modules, "theorycheck.scansnap.report", fake)
    html = render_html(data, [], [], *scansnap_section(data))
    assert '<section id="scansnap-fake">' in html and 'href="#scansnap"' in html
    assert calls == [({"checks": [{"id": "S1", "passed": True}]}, None)]  # inline figures, no files
    monkeypatch.setitem(sys.modules, "theorycheck.scansnap.report", None)  # the import now fails
    html = render_html(data, [], [], *scansnap_section(data))
    assert "scansnap-fake" not in html and "no Scan-and-Snap report section" in html
    (copy / "scansnap.json").unlink()
    assert scansnap_section(load_results_dir(copy)) == (None, None)


# --------------------------------------------------------------------------- the numbers
def test_model_attention_hand_solved():
    """E = I_3, query 2: s = (W02, W02, W12, W22) = (log 3, log 3, 0, log 2) -> attention
    (3, 3, 1, 2)/9, so p(0) = 6/9, p(1) = 1/9, p(2) = 2/9.  W20 is large so that using the
    transposed convention (query on the left) would give a different answer."""
    W = np.zeros((3, 3))
    W[0, 2], W[1, 2], W[2, 2], W[2, 0] = np.log(3), 0.0, np.log(2), 7.0
    p = model_attention(np.eye(3), W, [0, 0, 1, 2])
    assert p == pytest.approx({0: 6 / 9, 1: 1 / 9, 2: 2 / 9}, abs=1e-15)
    # the same with rotated orthonormal embeddings E = Q (rows) and W' = Q^T W Q
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))[0][:3]
    p_rot = model_attention(Q, Q.T @ W @ Q, [0, 0, 1, 2])
    assert p_rot == pytest.approx(p, abs=1e-12)
    M = score_matrix(Q, Q.T @ W @ Q)  # row = key, column = query
    assert M[0, 2] == pytest.approx(np.log(3)) and M[2, 0] == pytest.approx(7.0)


@pytest.fixture(scope="module")
def pred2():
    """Synthetic paper-style corpus with a nonzero W^fin (seed 2)."""
    return theorycheck.analyze(load_corpus("synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=2"),
                               radii=None)


def data_for(pred, W_trained, tmp_path) -> ReportData:
    return ReportData(tmp_path, pred.to_json(), pred.corpus.E, pred.W_svm, pred.W_fin, W_trained, None, None, None)


def test_model_far_along_the_svm_direction_matches_the_automaton(pred2, tmp_path):
    """THEORY §5.5: with W = W^fin + R W^svm, every token outside the dominant SCC scores at
    least R lower (unit margins along every priority path) and W^svm ties the SCC, so the
    attention tends to the automaton's prediction; at R = 0 retrieval is not hard."""
    rows = compare_windows(data_for(pred2, pred2.W_fin + 60.0 * pred2.W_svm, tmp_path))
    determined = [r for r in rows if r.status == "determined"]
    assert any(r.kind == "composition" for r in determined)
    for r in determined:
        assert r.leak < 1e-20 and r.tv < 1e-12, r
    soft = compare_windows(data_for(pred2, pred2.W_fin, tmp_path))
    assert max(r.leak for r in soft if r.status == "determined") > 0.05  # the check can fail


def test_report_windows_are_valid_and_reproducible(pred2):
    results = pred2.to_json()
    automaton = pred2.automaton()
    windows = report_windows(results, automaton, seed=3)
    assert windows == report_windows(results, automaton, seed=3)
    queries = {q["query_index"]: q for q in results["queries"]}
    for ids, kind in windows:
        q = queries[ids[-1]]  # the last token is a query of the corpus ...
        assert set(ids) <= set(query_tokens(q))  # ... and every token was seen with it
        r = automaton.predict_ids(ids)
        assert kind == ("undetermined" if r.status != "determined" else
                        "composition" if len(r.retrieved) >= 2 else "retrieval")
    assert {kind for _, kind in windows} >= {"composition", "retrieval"}


def test_seen_pairs_match_the_corpus(pred2):
    corpus = pred2.corpus
    tokens = np.arange(corpus.K)
    expected = np.zeros((corpus.K, corpus.K), dtype=bool)
    for i in range(corpus.n):
        present = corpus.counts.indices[corpus.counts.indptr[i]:corpus.counts.indptr[i + 1]]
        expected[present, corpus.last[i]] = True
    assert np.array_equal(seen_pairs(pred2.to_json(), tokens), expected)


def test_heatmap_tokens():
    small = {"vocabulary": [f"t{i}" for i in range(6)], "queries": []}
    assert heatmap_tokens(small)[0].tolist() == list(range(6))
    # 50 tokens; query j's graph holds tokens 0..j, so token t is in 50 - t graphs
    queries = [{"query_index": j, "scc_indices": [[t] for t in range(j + 1)]} for j in range(50)]
    tokens, note = heatmap_tokens({"vocabulary": [f"t{i}" for i in range(50)], "queries": queries})
    assert tokens.tolist() == list(range(HEATMAP_TOKENS)) and "30 of 50" in note


def _query(sccs, levels, edges, k=0):
    return {"query": f"q{k}", "query_index": k, "tokens": sum(map(len, sccs)), "edges": len(edges),
            "sccs": [[f"t{t}" for t in s] for s in sccs], "scc_indices": sccs, "levels": levels,
            "condensation_edges": edges}


def test_most_cyclic_queries_ranking():
    one_big = _query([[0, 1, 2, 3, 4]], [0], [], k=0)
    two_small = _query([[0, 1], [2, 3], [4]], [0, 1, 2], [[0, 1], [1, 2]], k=1)
    acyclic = _query([[0], [1]], [0, 1], [[0, 1]], k=2)
    assert [q["query_index"] for q in most_cyclic_queries([acyclic, one_big, two_small], 2)] == [1, 0]


def test_collapsed_condensation_keeps_reachability(make_corpus):
    """A real G^(q): label a over b0..b9 and q, then b0 over c and b1 over d.  Merging
    crowded levels must keep a DAG whose reachability is the original one mapped onto
    the merged nodes, and the transitive reduction drawn must keep it too."""
    vocab = ["a", "c", "d", "q"] + [f"b{i}" for i in range(10)]
    samples = [(["a"] + [f"b{i}" for i in range(10)] + ["q"], "a"), (["b0", "c", "q"], "b0"), (["b1", "d", "q"], "b1")]
    corpus = make_corpus(samples, vocab)
    pred = theorycheck.analyze(corpus, radii=None)
    q = next(d for d in pred.graphs.query_details(corpus.vocab) if d["query"] == "q")
    g = collapsed_condensation(q)
    assert nx.is_directed_acyclic_graph(g)
    per_level = {}
    for _, attrs in g.nodes(data=True):
        per_level[attrs["level"]] = per_level.get(attrs["level"], 0) + 1
    assert max(per_level.values()) <= MAX_SCCS_PER_LEVEL
    assert sum(len(a["members"]) for _, a in g.nodes(data=True)) == len(vocab)  # every token drawn once
    node_of = {tok: n for n, a in g.nodes(data=True) for tok in a["members"]}
    original = pred.graphs.digraph(corpus.vocab.index("q"))
    closure = nx.transitive_closure_dag(nx.transitive_reduction(g))
    for a, b in nx.transitive_closure(original).edges:
        na, nb = node_of[corpus.vocab[a]], node_of[corpus.vocab[b]]
        assert na == nb or closure.has_edge(na, nb), (corpus.vocab[a], corpus.vocab[b])
