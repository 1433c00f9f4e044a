"""Readers: plain text, JSONL, embeddings JSON, and the bundled pydoc corpus.

Text: tokens are lower-cased words (``[a-z]+('[a-z]+)?``) and numbers (punctuation is
skipped), or non-space characters with ``unit="char"``.  The vocabulary is
the ``vocab`` most frequent tokens (ties broken alphabetically).  Out-of-vocabulary
tokens are removed from the token stream before windowing (``oov="drop"``, the
default, so every window holds T in-vocabulary tokens) or replaced by ``<unk>``
(``oov="unk"``).  Every run of ``window`` consecutive tokens is a window and the
token that follows it is its label; windows never cross document boundaries.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from theorycheck.corpus.types import Corpus, corpus_from_windows
from theorycheck.errors import InputError
from theorycheck.runtime import paused_gc

WORD_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+")
UNK = "<unk>"
BYTES_PER_MATRIX_ENTRY = 8
# analyze + verify keep about this many d×d float64 arrays alive at once
LIVE_MATRICES = 8


def tokenize(text: str, unit: str = "word") -> list[str]:
    if unit == "word":
        return WORD_PATTERN.findall(text.lower())
    if unit == "char":
        return [ch for ch in text if not ch.isspace()]
    raise InputError(f"unknown token unit {unit!r}; use 'word' or 'char'")


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(K: int, d: int | None = None) -> None:
    """Refuse vocabularies whose d×d matrices cannot fit in memory."""
    d = K if d is None else d
    need = LIVE_MATRICES * BYTES_PER_MATRIX_ENTRY * (d * d + K * K)
    total = physical_memory()
    if total is None:
        return
    if need > 0.8 * total:
        raise InputError(
            f"vocabulary {K} (dimension {d}) needs about {need / 2**30:.1f} GiB for its d×d "
            f"matrices but this machine has {total / 2**30:.1f} GiB; lower --vocab"
        )


def _read_text_file(path: Path) -> str:
    from theorycheck.io import exists, is_dir

    if not exists(path):
        raise InputError(f"input file {str(path)!r} does not exist; check the path")
    if is_dir(path):
        raise InputError(f"{str(path)!r} is a directory; give a text or JSONL file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{str(path)!r} is not UTF-8 text (byte {exc.start}); convert it to UTF-8"
        ) from None
    if not text.strip():
        raise InputError(f"{str(path)!r} is empty; give a file with text in it")
    return text


def corpus_from_documents(
    documents: list[str],
    window: int,
    vocab: int,
    unit: str = "word",
    oov: str = "drop",
    stride: int = 1,
    source: str = "",
) -> Corpus:
    """Sliding windows of ``window`` tokens over each document; label = the next token."""
    if window < 2:
        raise InputError(
            f"--window {window} is too short: a window needs a query and at least one other "
            "token; use --window 2 or more"
        )
    if vocab < 2:
        raise InputError(f"--vocab {vocab} is too small; use --vocab 2 or more")
    if stride < 1:
        raise InputError("--stride must be at least 1")
    if oov not in ("drop", "unk"):
        raise InputError(f"unknown --oov {oov!r}; use 'drop' or 'unk'")
    with paused_gc():  # one list of strings per document, hundreds of thousands of tokens (runtime.paused_gc)
        token_docs = [tokenize(doc, unit) for doc in documents]
        freq = Counter(t for doc in token_docs for t in doc)
    if not freq:
        raise InputError("the text has no tokens; give a file with words in it")
    ranked = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = [t for t, _ in ranked[: vocab - (1 if oov == "unk" else 0)]]
    if oov == "unk" and len(ranked) > len(kept):
        kept.append(UNK)
    check_memory(len(kept))
    index = {t: i for i, t in enumerate(kept)}
    unk_id = index.get(UNK)
    window_blocks: list[np.ndarray] = []  # per document: its windows as rows
    label_blocks: list[np.ndarray] = []
    dropped_tokens = 0
    for doc in token_docs:
        if oov == "drop":
            ids = np.array([index[t] for t in doc if t in index], dtype=np.int64)
            dropped_tokens += len(doc) - ids.size
        else:
            ids = np.array([index.get(t, unk_id) for t in doc], dtype=np.int64)
        if ids.size > window:  # windows start at 0, stride, ... < ids.size - window; label: the next token
            window_blocks.append(np.lib.stride_tricks.sliding_window_view(ids, window)[:ids.size - window:stride])
            label_blocks.append(ids[window::stride])
    if not window_blocks:
        raise InputError(
            f"no window of {window} tokens fits in the text (longest document has "
            f"{max(len(d) for d in token_docs)} tokens); lower --window"
        )
    windows = np.concatenate(window_blocks)
    labels = np.concatenate(label_blocks)
    return corpus_from_windows(
        windows,
        labels,
        tuple(kept),
        source=source,
        stats={
            "tokens_total": int(sum(len(d) for d in token_docs)),
            "tokens_out_of_vocabulary": int(dropped_tokens),
            "oov_policy": oov,
            "window": window,
            "unit": unit,
        },
    )


def read_text(
    path: str | Path,
    window: int = 8,
    vocab: int = 100,
    unit: str = "word",
    oov: str = "drop",
    stride: int = 1,
) -> Corpus:
    path = Path(path)
    text = _read_text_file(path)
    return corpus_from_documents([text], window, vocab, unit, oov, stride, source=str(path))


def pydoc_documents() -> list[str]:
    """CPython's ``pydoc_data.topics``: real English shipped with every Python."""
    from pydoc_data import topics

    return [topics.topics[key] for key in sorted(topics.topics)]


def read_pydoc(window: int = 8, vocab: int = 100, unit: str = "word", oov: str = "drop") -> Corpus:
    return corpus_from_documents(
        pydoc_documents(), window, vocab, unit, oov, source="pydoc_data.topics (bundled)"
    )


def read_jsonl(path: str | Path, embeddings: dict[str, list[float]] | None = None) -> Corpus:
    """One sample per line: ``{"context": ["a", "b", "q"], "next": "a"}``.

    The last context token is the query.  The vocabulary is the embeddings file's
    token order when one is given, otherwise the order of first appearance.
    """
    path = Path(path)
    text = _read_text_file(path)
    contexts: list[list[str]] = []
    nexts: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line, or read the file as plain text with --format text") from None
        except (RecursionError, ValueError) as exc:
            raise InputError(f"{where}: cannot be read as JSON ({type(exc).__name__}); write one flat "
                             "JSON object per line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected an object like {{\"context\": [...], \"next\": \"a\"}}")
        if "next" not in obj:
            raise InputError(f"{where}: the sample has no \"next\" field; add the label token as \"next\"")
        if "context" not in obj:
            raise InputError(f"{where}: the sample has no \"context\" field; add the window as a list of tokens")
        ctx, nxt = obj["context"], obj["next"]
        if not isinstance(ctx, list) or not all(isinstance(t, str) for t in ctx):
            raise InputError(f"{where}: \"context\" must be a list of token strings")
        if len(ctx) < 2:
            raise InputError(
                f"{where}: the context has {len(ctx)} token(s); a window needs a query and at least "
                "one other token (length 2 or more)"
            )
        if not isinstance(nxt, str):
            raise InputError(f"{where}: \"next\" must be a token string")
        contexts.append(ctx)
        nexts.append(nxt)
    if not contexts:
        raise InputError(f"{str(path)!r} has no samples; write one JSON object per line")
    if embeddings is not None:
        vocab = list(embeddings)
        index = {t: i for i, t in enumerate(vocab)}
        missing = sorted({t for c in contexts for t in c} | set(nexts) - set(index))
        missing = [t for t in missing if t not in index]
        if missing:
            raise InputError(
                f"token(s) {missing[:5]} occur in the corpus but not in the embeddings file; "
                "add a vector for every token"
            )
        E = np.array([embeddings[t] for t in vocab], dtype=np.float64)
        kind = "file"
    else:
        index = {}
        for c, y in zip(contexts, nexts):
            for t in [*c, y]:
                index.setdefault(t, len(index))
        vocab = list(index)
        E = None
        kind = "one-hot"
    check_memory(len(vocab), None if E is None else E.shape[1])
    windows = [[index[t] for t in c] for c in contexts]
    labels = [index[y] for y in nexts]
    return corpus_from_windows(windows, labels, tuple(vocab), E=E, embedding_kind=kind, source=str(path))


EMBEDDING_MAX_ABS = 1e6  # beyond this E E^T and the solvers lose every digit (W scales as 1/c^2)
# below this as the largest entry, W ~ 1/c^2 and the verdict's ||W||^2 ~ 1/c^4 leave float64's range
# (found by the fuzz: at 3.3e-84 the Graph-SVM's multipliers, ~1e334, overflowed, and verify's squared
# norms did too, leaving the direction criterion n/a); 1e-65 still verifies at unit-scale accuracy
EMBEDDING_MIN_PEAK = 1e-60


def read_embeddings(path: str | Path) -> dict[str, list[float]]:
    """``{"token": [v1, ..., vd], ...}``; all vectors finite, of one length, entries at most 1e6."""
    path = Path(path)
    text = _read_text_file(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"embeddings file {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (RecursionError, ValueError) as exc:  # e.g. an integer literal beyond Python's digit limit
        raise InputError(f"embeddings file {str(path)!r} cannot be read as JSON ({type(exc).__name__}); "
                         "write plain decimal numbers") from None
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"embeddings file {str(path)!r} must be a non-empty object {{token: [numbers]}}")
    length = None
    out: dict[str, list[float]] = {}
    for tok, vec in obj.items():
        if not isinstance(vec, list) or not vec or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in vec
        ):
            raise InputError(f"embedding of {tok!r} must be a non-empty list of numbers")
        try:
            values = [float(v) for v in vec]
        except OverflowError:
            raise InputError(f"embedding of {tok!r} has an integer too large for float64; give numbers "
                             f"of magnitude at most {EMBEDDING_MAX_ABS:g}") from None
        if not all(math.isfinite(v) for v in values):
            raise InputError(f"embedding of {tok!r} has a NaN or infinite entry; give finite numbers")
        if max(abs(v) for v in values) > EMBEDDING_MAX_ABS:
            raise InputError(f"embedding of {tok!r} has an entry of magnitude above {EMBEDDING_MAX_ABS:g}; "
                             "rescale the vectors (the theory is scale-covariant: W scales as 1/c^2)")
        if length is None:
            length = len(vec)
        elif len(vec) != length:
            raise InputError(
                f"embedding of {tok!r} has length {len(vec)} but earlier vectors have {length}; "
                "give every token a vector of the same length"
            )
        out[tok] = values
    peak = max(abs(v) for values in out.values() for v in values)
    if 0 < peak < EMBEDDING_MIN_PEAK:
        raise InputError(f"the largest embedding entry is {peak:.3g}, below {EMBEDDING_MIN_PEAK:g}: W^svm and W^fin "
                         "scale as 1/c^2 and would leave float64's range; rescale the vectors (e.g. rows to unit norm)")
    return out


def with_embeddings(corpus: Corpus, embeddings: dict[str, list[float]]) -> Corpus:
    """Replace one-hot embeddings by vectors from a file (vocabulary order is kept)."""
    missing = [t for t in corpus.vocab if t not in embeddings]
    if missing:
        raise InputError(
            f"token(s) {missing[:5]} of the vocabulary have no vector in the embeddings file; "
            "add a vector for every token"
        )
    E = np.array([embeddings[t] for t in corpus.vocab], dtype=np.float64)
    return Corpus(
        vocab=corpus.vocab, E=E, last=corpus.last, label=corpus.label, counts=corpus.counts,
        embedding_kind="file", source=corpus.source, stats=dict(corpus.stats),
    )


SYNTHETIC_PREFIX = "synthetic:"
LARGE_CORPUS_SPEC = "python3-doc"  # the Debian documentation package (theorycheck.corpus.large)
INPUT_FORMATS = ("auto", "text", "jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def looks_like_jsonl(path: str | Path) -> bool:
    """True when the first non-blank line of the file is a JSON object with a "context" or
    "next" field (the sample format), whatever the file is called."""
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                line = raw.strip()
                if not line:
                    continue
                if not line.startswith(b"{"):
                    return False
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    return True  # "{" opens a line: a JSON-lines reader gives the better message
                return isinstance(obj, dict) and bool({"context", "next"} & set(obj))
    except OSError:
        return False
    return False


def input_kind(input_path: str | Path | None, input_format: str = "auto") -> str:
    """How ``load_corpus`` reads an input: "bundled", "synthetic", "python3-doc", "jsonl" or "text".

    An existing file always wins; otherwise only ``synthetic:`` with its colon and the exact
    name ``python3-doc`` (the large corpus, :mod:`theorycheck.corpus.large`) are specs.
    ``.jsonl`` / ``.ndjson`` (any case) or JSON-lines content select the JSONL reader unless
    ``input_format`` says otherwise."""
    if input_format not in INPUT_FORMATS:
        raise InputError(f"unknown --format {input_format!r}; use {', '.join(INPUT_FORMATS)}")
    if input_path is None:
        if input_format != "auto":
            raise InputError(f"--format {input_format} needs an INPUT file; drop --format for the bundled corpus")
        return "bundled"
    from theorycheck.io import exists, is_dir

    text = str(input_path)
    path = Path(text)
    if not exists(path) and text.startswith(SYNTHETIC_PREFIX):
        if input_format != "auto":
            raise InputError(f"--format {input_format} applies to files, not to a synthetic spec; drop --format")
        return "synthetic"
    if not exists(path) and text == LARGE_CORPUS_SPEC:
        if input_format != "auto":
            raise InputError(f"--format {input_format} applies to files, not to the {LARGE_CORPUS_SPEC} corpus; "
                             "drop --format")
        return "python3-doc"
    if not exists(path):
        hint = ""
        if text.startswith("synthetic"):
            hint = " (a synthetic spec starts with 'synthetic:', e.g. synthetic:n=6,T=4,K=6)"
        raise InputError(f"input file {text!r} does not exist{hint}; check the path")
    if is_dir(path):
        raise InputError(f"{text!r} is a directory; give a text or JSONL file")
    if input_format != "auto":
        return input_format
    if path.suffix.lower() in JSONL_SUFFIXES or looks_like_jsonl(path):
        return "jsonl"
    return "text"


def load_corpus(
    input_path: str | Path | None,
    window: int = 8,
    vocab: int = 100,
    unit: str = "word",
    oov: str = "drop",
    embeddings_path: str | Path | None = None,
    input_format: str = "auto",
) -> Corpus:
    """Dispatch (``input_kind``): ``synthetic:...`` spec, ``python3-doc`` (the large corpus),
    JSON-lines samples, other files plain text, None = bundled."""
    kind = input_kind(input_path, input_format)
    emb = read_embeddings(embeddings_path) if embeddings_path else None
    if kind == "synthetic":
        from theorycheck.corpus.synthetic import parse_spec, synthetic

        corpus = synthetic(**parse_spec(str(input_path)))
    elif kind == "bundled":
        corpus = read_pydoc(window=window, vocab=vocab, unit=unit, oov=oov)
    elif kind == "python3-doc":
        from theorycheck.corpus.large import read_python_doc

        corpus = read_python_doc(window=window, vocab=vocab, unit=unit, oov=oov)
    elif kind == "jsonl":
        return read_jsonl(input_path, embeddings=emb)
    else:
        corpus = read_text(input_path, window=window, vocab=vocab, unit=unit, oov=oov)
    return with_embeddings(corpus, emb) if emb is not None else corpus
