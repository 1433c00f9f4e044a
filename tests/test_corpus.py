"""Corpus readers, the Corpus type and the synthetic generators (THEORY.md §1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import scc_maps, windows_of

from theorycheck.corpus import (
    corpus_from_windows,
    load_corpus,
    read_embeddings,
    read_jsonl,
    read_pydoc,
)
from theorycheck.corpus.readers import (
    check_memory,
    corpus_from_documents,
    tokenize,
    with_embeddings,
)
from theorycheck.corpus.synthetic import parse_spec, synthetic
from theorycheck.errors import InputError

# --------------------------------------------------------------------------- JSONL and embeddings


def test_jsonl_counts_every_position_including_the_query(example):
    corpus = example("mix")
    assert corpus.vocab == ("a", "b", "c", "d", "q", "r")  # embeddings-file order
    # [a a b q] -> b: the query q is also a key, a is counted twice
    assert corpus.counts.toarray().tolist() == [
        [2, 1, 0, 0, 1, 0], [1, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 0, 1]]
    assert corpus.last.tolist() == [4, 4, 4, 5] and corpus.label.tolist() == [1, 0, 2, 3]
    assert corpus.one_hot and corpus.orthonormal and corpus.embedding_rank == 6


def test_jsonl_without_embeddings_is_one_hot_in_order_of_appearance(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"context": ["x", "q"], "next": "z"}\n\n{"context": ["q", "x"], "next": "q"}\n')
    corpus = read_jsonl(path)
    assert corpus.vocab == ("x", "q", "z") and corpus.one_hot
    assert corpus.realizable_mask().tolist() == [False, True]


def test_embeddings_file_may_hold_extra_tokens(example):
    corpus = example("cycle")  # c has a vector but occurs in no window
    assert corpus.vocab == ("a", "b", "c", "q") and corpus.counts[:, 2].sum() == 0


@pytest.mark.parametrize("text,fragment", [
    ('{"a": [1, "x"]}', "list of numbers"),
    ('{"a": [true, 0]}', "list of numbers"),
    ('{"a": []}', "list of numbers"),
    ('{}', "non-empty object"),
    ('[1, 2]', "non-empty object"),
    ('{"a": [1, -Infinity]}', "NaN or infinite"),
])
def test_bad_embeddings_files(tmp_path, text, fragment):
    path = tmp_path / "e.json"
    path.write_text(text)
    with pytest.raises(InputError, match=fragment):
        read_embeddings(path)


@pytest.mark.parametrize("line,fragment", [
    ('[1, 2]', "expected an object"),
    ('{"next": "a"}', 'no "context" field'),
    ('{"context": "a q", "next": "a"}', "list of token strings"),
    ('{"context": ["a", "q"], "next": 3}', "token string"),
])
def test_bad_jsonl_samples_name_the_line(tmp_path, line, fragment):
    path = tmp_path / "s.jsonl"
    path.write_text('{"context": ["a", "q"], "next": "a"}\n' + line + "\n")
    with pytest.raises(InputError, match=fragment) as info:
        read_jsonl(path)
    assert ":2:" in str(info.value)


def test_with_embeddings_needs_every_vocabulary_token(example):
    with pytest.raises(InputError, match="no vector"):
        with_embeddings(example("chain"), {"a": [1.0], "b": [0.0]})


def test_corpus_rejects_inconsistent_embeddings():
    with pytest.raises(InputError, match="one vector per token"):
        corpus_from_windows([[0, 1]], [0], ("a", "b"), E=np.eye(3))
    with pytest.raises(InputError, match="NaN"):
        corpus_from_windows([[0, 1]], [0], ("a", "b"), E=np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InputError, match="no windows"):
        corpus_from_windows([], [], ("a", "b"))


def test_realizable_drops_and_counts_or_refuses():
    corpus = corpus_from_windows([[0, 1], [1, 1], [0, 1]], [0, 2, 1], ("a", "b", "c"))
    kept = corpus.realizable()
    assert kept.n == 2 and kept.stats["unrealizable_dropped"] == 1
    assert kept.stats["windows_before_realizability"] == 3
    with pytest.raises(InputError, match="window 1, label 'c'"):
        corpus.realizable(strict=True)


def test_memory_guard_refuses_huge_vocabularies():
    check_memory(100)
    with pytest.raises(InputError, match="lower --vocab"):
        check_memory(10**6)  # 8 arrays of 10^12 float64 entries: ~60 TiB


# --------------------------------------------------------------------------- text


def test_tokenizer():
    assert tokenize("Don't STOP: 42 times, ok?") == ["don't", "stop", "42", "times", "ok"]
    assert tokenize("a b\nc", unit="char") == ["a", "b", "c"]
    with pytest.raises(InputError, match="unit"):
        tokenize("x", unit="byte")


def test_text_windows_by_hand():
    # tokens b a b c a b; frequencies b 3, a 2, c 1 -> vocabulary (b, a, c).
    # window 2: [b a]->b, [a b]->c, [b c]->a, [c a]->b  (the last token has no successor)
    corpus = corpus_from_documents(["b a b c a b"], window=2, vocab=3)
    assert corpus.vocab == ("b", "a", "c")
    assert corpus.last.tolist() == [1, 0, 2, 1] and corpus.label.tolist() == [0, 2, 1, 0]
    # vocabulary 2 drops c from the stream: b a b a b -> [b a]->b, [a b]->a, [b a]->b
    corpus = corpus_from_documents(["b a b c a b"], window=2, vocab=2)
    assert corpus.last.tolist() == [1, 0, 1] and corpus.label.tolist() == [0, 1, 0]
    assert corpus.stats["tokens_out_of_vocabulary"] == 1
    # oov=unk keeps the position: vocabulary (b, a, <unk>)
    corpus = corpus_from_documents(["b a b c a b"], window=2, vocab=3, oov="unk")
    assert corpus.vocab == ("b", "a", "<unk>") and corpus.label.tolist() == [0, 2, 1, 0]


def test_text_windows_with_a_stride_by_hand():
    # tokens a b c d e f g (all frequency 1: vocabulary in alphabetical order), window 3, stride 2:
    # windows start at 0, 2 (start 4 would need a label at position 7): [a b c]->d, [c d e]->f
    corpus = corpus_from_documents(["a b c d e f g"], window=3, vocab=10, stride=2)
    assert corpus.last.tolist() == [2, 4] and corpus.label.tolist() == [3, 5]
    assert corpus.counts.toarray()[:, :7].tolist() == [[1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0]]


@pytest.mark.parametrize("seed", range(5))
def test_window_array_counts_equal_the_list_path(seed):
    # corpus_from_windows takes equal-length windows as a 2-D array (a row sort and run lengths);
    # the list path builds the same counts by summing COO duplicates
    rng = np.random.default_rng(seed)
    K, T = int(rng.integers(2, 9)), int(rng.integers(1, 7))
    windows = rng.integers(0, K, size=(int(rng.integers(1, 40)), T))
    labels = rng.integers(0, K, size=len(windows))
    vocab = tuple(f"t{i}" for i in range(K))
    fast = corpus_from_windows(windows, labels, vocab)
    slow = corpus_from_windows([list(w) for w in windows], list(labels), vocab)
    assert fast.counts.has_canonical_format and fast.counts.dtype == slow.counts.dtype
    assert (fast.counts != slow.counts).nnz == 0
    assert np.array_equal(fast.counts.indptr, slow.counts.indptr)
    expected = np.stack([np.bincount(w, minlength=K) for w in windows])  # counts by definition
    assert np.array_equal(fast.counts.toarray(), expected)
    assert fast.last.tolist() == windows[:, -1].tolist() and fast.label.tolist() == labels.tolist()


def test_windows_never_cross_documents():
    corpus = corpus_from_documents(["a b c", "d e f"], window=2, vocab=10)
    pairs = {(corpus.vocab[k], corpus.vocab[y]) for k, y in zip(corpus.last, corpus.label, strict=True)}
    assert pairs == {("b", "c"), ("e", "f")}


def test_bundled_pydoc_corpus():
    corpus = read_pydoc(window=8, vocab=100)
    assert corpus.K == 100 and corpus.one_hot and corpus.n > 10_000
    assert np.all(np.asarray(corpus.counts.sum(axis=1)).ravel() == 8)
    assert 0 < corpus.realizable().n < corpus.n


# --------------------------------------------------------------------------- synthetic


def test_spec_parsing_and_dispatch():
    assert parse_spec("synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1") == {
        "n": 6, "T": 4, "K": 6, "d": 8, "embeddings": "orthonormal", "graphs": "cyclic", "seed": 1}
    with pytest.raises(InputError, match="unknown synthetic key"):
        parse_spec("synthetic:colour=3")
    with pytest.raises(InputError, match="needs a int"):
        parse_spec("synthetic:n=six")
    corpus = load_corpus("synthetic:n=5,T=3,K=4,seed=2")
    same = synthetic(n=5, T=3, K=4, seed=2)
    assert np.array_equal(corpus.counts.toarray(), same.counts.toarray())


def test_synthetic_is_seeded_distinct_and_realizable():
    a = synthetic(n=30, T=4, K=6, d=8, embeddings="unit-norm", seed=3)
    b = synthetic(n=30, T=4, K=6, d=8, embeddings="unit-norm", seed=3)
    c = synthetic(n=30, T=4, K=6, d=8, embeddings="unit-norm", seed=4)
    assert np.array_equal(a.E, b.E) and np.array_equal(a.counts.toarray(), b.counts.toarray())
    assert not np.array_equal(a.E, c.E)
    assert a.counts.max() == 1  # T <= K: tokens without replacement
    assert a.realizable_mask().all()


@pytest.mark.parametrize("kind", ["one-hot", "orthonormal", "unit-norm", "equi-correlated"])
def test_synthetic_embedding_geometry(kind):
    E = synthetic(n=3, T=3, K=5, d=7, embeddings=kind, rho=0.3, seed=0).E
    G = E @ E.T
    np.testing.assert_allclose(np.diag(G), 1.0, atol=1e-12)
    off = G[~np.eye(5, dtype=bool)]
    if kind in ("one-hot", "orthonormal"):
        np.testing.assert_allclose(off, 0.0, atol=1e-12)
    elif kind == "equi-correlated":  # e_i = sqrt(rho) c_0 + sqrt(1 - rho) c_i with orthonormal c
        np.testing.assert_allclose(off, 0.3, atol=1e-12)
    else:
        assert np.abs(off).max() > 1e-3


@pytest.mark.parametrize("graphs", ["acyclic", "cyclic"])
def test_synthetic_graph_filters(graphs):
    corpus = synthetic(n=6, T=4, K=6, graphs=graphs, seed=5)
    sizes = [len(c) for scc in scc_maps(*windows_of(corpus)).values() for c in scc.values()]
    assert (max(sizes) >= 2) == (graphs == "cyclic")


def test_synthetic_refuses_impossible_settings():
    with pytest.raises(InputError, match="K <= d"):
        synthetic(n=3, T=3, K=6, d=4, embeddings="orthonormal")
    with pytest.raises(InputError, match="T >= 2"):
        synthetic(n=3, T=1, K=6)


# --------------------------------------------------------------------------- shipped paper configurations

PAPER_EXAMPLES = {
    # THEORY.md §6.1 (acyclic), §6.2 (cyclic), §5.2-§5.3 (the measured path / GD instance size)
    "paper_acyclic_n4T6K8d8": dict(n=4, T=6, K=8, d=8, embeddings="unit-norm", graphs="acyclic", seed=1),
    "paper_cyclic_n6T4K6d8": dict(n=6, T=4, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=1),
    "paper_cyclic_n20T5K6d8": dict(n=20, T=5, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=1),
}


@pytest.mark.parametrize("name", list(PAPER_EXAMPLES))
def test_shipped_paper_examples_equal_the_synthetic_generator(example, examples_dir, name):
    shipped = example(name)
    spec = PAPER_EXAMPLES[name]
    generated = synthetic(**spec)
    assert shipped.vocab == generated.vocab
    assert np.array_equal(shipped.E, generated.E)  # JSON floats round-trip exactly
    assert np.array_equal(shipped.last, generated.last) and np.array_equal(shipped.label, generated.label)
    assert np.array_equal(shipped.counts.toarray(), generated.counts.toarray())
    lines = (examples_dir / f"{name}.jsonl").read_text().splitlines()
    assert all(len(json.loads(line)["context"]) == spec["T"] for line in lines)


def test_is_one_hot_is_equality_with_the_identity():
    """is_one_hot (count of nonzeros and the diagonal, no K×K identity formed) against its
    definition E == I on the cases that could fool a shortcut."""
    from theorycheck.corpus.types import is_one_hot

    eye = np.eye(5)
    negative_zero = eye.copy()
    negative_zero[0, 1] = -0.0
    extra = eye.copy()
    extra[2, 3] = 1e-300
    scaled = eye.copy()
    scaled[4, 4] = 2.0
    with_nan = eye.copy()
    with_nan[1, 0] = np.nan
    cases = [eye, eye[[1, 0, 2, 3, 4]], negative_zero, extra, scaled, with_nan, np.eye(5, 6), np.eye(6, 5),
             -eye, np.zeros((3, 3)), np.eye(1)]
    for E in cases:
        assert is_one_hot(E) == (E.shape[0] == E.shape[1] and np.array_equal(E, np.eye(E.shape[0])))
    assert is_one_hot(eye) and is_one_hot(negative_zero) and not is_one_hot(extra)
