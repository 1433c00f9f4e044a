"""The large corpus module (issue 11 item 4): file discovery, the install hint, and that the
text goes through the project's own reader (same windows as corpus_from_documents)."""

from __future__ import annotations

import pytest

from theorycheck.corpus import large
from theorycheck.corpus.readers import corpus_from_documents, tokenize
from theorycheck.errors import InputError


def test_missing_package_names_the_apt_package(tmp_path):
    with pytest.raises(InputError, match=r"apt-get install python3-doc"):
        large.python_doc_root(str(tmp_path / "nothing" / "python3*" / "html" / "_sources"))


def test_files_are_sorted_and_books_excluded(tmp_path):
    root = tmp_path / "python3.11" / "html" / "_sources"
    for rel, text in {"tutorial/b.rst.txt": "the cat sat", "tutorial/a.rst.txt": "a dog ran",
                      "library/x.rst.txt": "api api", "glossary.rst.txt": "a word"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    assert large.python_doc_root(str(tmp_path / "python3*" / "html" / "_sources")) == root
    files = [p.relative_to(root).as_posix() for p in large.python_doc_files(root=root)]
    assert files == ["glossary.rst.txt", "tutorial/a.rst.txt", "tutorial/b.rst.txt"]
    assert len(large.python_doc_files(exclude=(), root=root)) == 4


@pytest.mark.slow
@pytest.mark.skipif(not __import__("glob").glob(large.SOURCE_GLOB), reason="python3-doc is not installed")
def test_installed_corpus_is_large_and_read_by_the_text_reader():
    docs = large.python_doc_documents()
    assert sum(len(tokenize(d)) for d in docs) >= 400_000
    ours = large.read_python_doc(window=8, vocab=50)
    reference = corpus_from_documents(docs, 8, 50)
    assert ours.vocab == reference.vocab and ours.n == reference.n
    assert (ours.counts != reference.counts).nnz == 0


@pytest.mark.parametrize("dense", [True, False])
def test_graph_stage_deduplication_equals_numpy_unique(dense, monkeypatch):
    """graphs._unique_inverse (bitmap, or sort for large key spaces) against np.unique."""
    import numpy as np

    from theorycheck import graphs

    monkeypatch.setattr(graphs, "DENSE_KEY_LIMIT", 1 << 26 if dense else 0)
    keys = np.random.default_rng(3).integers(0, 5000, size=20000)
    unique, inverse = graphs._unique_inverse(keys, 5000)
    ref_unique, ref_inverse = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(unique, ref_unique)
    np.testing.assert_array_equal(inverse, ref_inverse)
    np.testing.assert_array_equal(unique[inverse], keys)
    np.testing.assert_array_equal(graphs._unique_inverse(keys, 5000, inverse=False), ref_unique)
    assert graphs._unique_inverse(keys[:0], 5000, inverse=False).size == 0


def fake_documentation(tmp_path, monkeypatch) -> None:
    """A small python3.X-doc tree, found where the package would be."""
    root = tmp_path / "python3.11" / "html" / "_sources"
    texts = {"tutorial/a.rst.txt": "the cat sat on the mat and the cat ran to the mat " * 4,
             "howto/b.rst.txt": "a dog sat on the mat and a dog ran to the cat " * 4,
             "library/api.rst.txt": "signature signature signature " * 10}
    for rel, text in texts.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setattr(large, "SOURCE_GLOB", str(tmp_path / "python3*" / "html" / "_sources"))


def test_cli_reads_the_large_corpus_by_name(tmp_path, monkeypatch):
    # `analyze python3-doc` reads the package's sources (API books excluded) through the text
    # reader, with --window / --vocab applied: the same windows as corpus_from_documents
    import json

    from typer.testing import CliRunner

    from theorycheck.cli import app
    from theorycheck.corpus.readers import input_kind

    fake_documentation(tmp_path, monkeypatch)
    assert input_kind("python3-doc") == "python3-doc"
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", "python3-doc", "-T", "4", "-V", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    reference = corpus_from_documents(large.python_doc_documents(), 4, 8).realizable()
    assert results["corpus"]["windows"] == reference.n > 0
    assert results["corpus"]["window"] == 4 and "Debian package python3-doc" in results["corpus"]["source"]
    assert "signature" not in results["vocabulary"]


def test_cli_without_the_package_names_it_and_exits_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from theorycheck.cli import app

    monkeypatch.setattr(large, "SOURCE_GLOB", str(tmp_path / "none" / "python3*" / "html" / "_sources"))
    result = CliRunner().invoke(app, ["analyze", "python3-doc", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "apt-get install python3-doc" in result.output
    assert not (tmp_path / "out").exists()
