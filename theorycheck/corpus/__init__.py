"""Corpus readers, synthetic generators and the Corpus type."""

from theorycheck.corpus.readers import (
    load_corpus,
    read_embeddings,
    read_jsonl,
    read_pydoc,
    read_text,
    with_embeddings,
)
from theorycheck.corpus.types import Corpus, corpus_from_windows

__all__ = [
    "Corpus",
    "corpus_from_windows",
    "load_corpus",
    "read_embeddings",
    "read_jsonl",
    "read_pydoc",
    "read_text",
    "with_embeddings",
]
