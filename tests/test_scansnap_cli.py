"""`theorycheck scan-snap`: exit codes, output files, byte-identical JSON, the HTML section."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from theorycheck.cli import app
from theorycheck.scansnap.report import scansnap_html_section

SMALL = ["scansnap:K=2,n=256", "--workers", "0", "--no-sweeps", "--no-snap", "--steps", "300"]


def run(args):
    return CliRunner().invoke(app, ["scan-snap", *args])


def test_small_run_writes_identical_json_twice(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ra = run([*SMALL, "--out", str(a), "--seed", "3"])
    rb = run([*SMALL, "--out", str(b), "--seed", "3", "--no-html"])
    assert ra.exit_code == 0, ra.output
    assert rb.exit_code == 0
    assert (a / "scansnap.json").read_bytes() == (b / "scansnap.json").read_bytes()
    for name in ("scansnap_Y.npy", "scansnap_Z.npy", "scansnap_Zq_checkpoints.npy", "scansnap_timings.json",
                 "scansnap.html"):
        assert (a / name).exists(), name
    results = json.loads((a / "scansnap.json").read_text())
    assert results["verdict"]["exit_code"] == 0 and results["seed"] == 3
    assert all(f"P{i}" in results["checks"] for i in range(15))
    html = (a / "scansnap.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "P7" in html


def test_different_seed_changes_the_json(tmp_path):
    run([*SMALL, "--out", str(tmp_path / "a"), "--seed", "1", "--no-html"])
    run([*SMALL, "--out", str(tmp_path / "b"), "--seed", "2", "--no-html"])
    assert (tmp_path / "a" / "scansnap.json").read_bytes() != (tmp_path / "b" / "scansnap.json").read_bytes()


@pytest.mark.parametrize("args", [["scansnap:K=3,queries=2"], ["scansnap:K=2", "--optimizer", "lbfgs"],
                                  ["scansnap:K=2", "--sweep-eta-z", "abc"], ["/no/such/file.txt"],
                                  ["scansnap:K=2", "--momentum", "1.5"]])
def test_bad_input_exits_2(tmp_path, args):
    r = run([*args, "--out", str(tmp_path / "o"), "--workers", "0", "--no-sweeps", "--no-snap"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_exit_3_when_no_check_applies(tmp_path):
    r = run([*SMALL, "--out", str(tmp_path / "o"), "--optimizer", "adam", "--init", "random", "--no-html"])
    assert r.exit_code == 3, r.output


def test_exit_1_when_an_applicable_check_is_violated(tmp_path, monkeypatch):
    import theorycheck.scansnap.checks as checks

    monkeypatch.setattr(checks, "P7_MAX_RESIDUAL", 1e-6)  # a prediction no run can meet
    r = run([*SMALL, "--out", str(tmp_path / "o"), "--no-html"])
    assert r.exit_code == 1, r.output
    results = json.loads((tmp_path / "o" / "scansnap.json").read_text())
    assert results["verdict"]["violated"] == ["P7"]


def test_refuses_to_overwrite_the_input(tmp_path):
    corpus = tmp_path / "scansnap.json"
    corpus.write_text("some words here and there " * 50)
    r = run([str(corpus), "--out", str(tmp_path), "--workers", "0", "--no-sweeps"])
    assert r.exit_code == 2 and "overwrite" in r.output


def test_html_section_writes_figures(tmp_path):
    r = run([*SMALL, "--out", str(tmp_path / "o"), "--no-html"])
    assert r.exit_code == 0
    results = json.loads((tmp_path / "o" / "scansnap.json").read_text())
    fragment = scansnap_html_section(results, tmp_path / "figs")
    assert fragment.startswith('<section class="scansnap">') and fragment.endswith("</section>")
    assert (tmp_path / "figs" / "scansnap_attention.png").exists()
    assert (tmp_path / "figs" / "scansnap_kappa.png").exists()
