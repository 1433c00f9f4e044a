"""Shared fixtures: the example corpora and a builder for hand-written windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from theorycheck.corpus import Corpus, corpus_from_windows, read_embeddings, read_jsonl

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def example():
    """``example("chain")`` -> Corpus of examples/chain.jsonl with examples/chain_embeddings.json."""

    def load(name: str) -> Corpus:
        return read_jsonl(EXAMPLES / f"{name}.jsonl", read_embeddings(EXAMPLES / f"{name}_embeddings.json"))

    return load


@pytest.fixture(scope="session")
def make_corpus():
    """``make_corpus([(["a", "b", "q"], "a"), ...], vocab="abcq", E=None)`` -> Corpus.

    Windows are token strings (the last one is the query); E defaults to one-hot.
    """

    def build(samples, vocab, E: np.ndarray | None = None) -> Corpus:
        vocab = tuple(vocab)
        index = {t: i for i, t in enumerate(vocab)}
        windows = [[index[t] for t in ctx] for ctx, _ in samples]
        labels = [index[y] for _, y in samples]
        return corpus_from_windows(windows, labels, vocab, E=E)

    return build
