"""A large real English corpus from a Debian documentation package (issue 11, item 4).

The Python documentation's reStructuredText sources, as installed by the Debian package
``python3-doc`` (it pulls the versioned ``python3.X-doc``)::

    apt-get install python3-doc

The files live under ``/usr/share/doc/python3.X/html/_sources/``.  By default every book except the two
API references (``library`` and ``c-api``, dominated by signatures) is read: the
Tutorial, the Language Reference, the HOWTOs, the FAQ, "What's New", "Using Python",
"Extending and Embedding", the glossary, ... — about 560,000 words after the project's
tokenizer for Python 3.11 (the bundled ``pydoc_data.topics`` corpus is an extract of the
Reference).  One document per file, in sorted path order, so that the corpus is the
same on every machine with the same package version.  ``exclude=()`` reads every source
file (about 1.5 million words).

Nothing is downloaded at run time: the package is found on disk or an
:class:`~theorycheck.errors.InputError` (exit 2) names the package to install.
Tokenization, vocabulary and windowing are the project's text reader's
(:func:`theorycheck.corpus.readers.corpus_from_documents`).
"""

from __future__ import annotations

import glob
from pathlib import Path

from theorycheck.corpus.readers import corpus_from_documents
from theorycheck.corpus.types import Corpus
from theorycheck.errors import InputError

APT_PACKAGE = "python3-doc"
INSTALL_HINT = f"apt-get install {APT_PACKAGE}"
DEFAULT_EXCLUDE = ("library", "c-api")
SOURCE_GLOB = "/usr/share/doc/python3*/html/_sources"


def python_doc_root(pattern: str | None = None) -> Path:
    """The ``_sources`` directory of the newest installed Python documentation (``pattern``:
    where to look, SOURCE_GLOB by default)."""
    pattern = pattern or SOURCE_GLOB
    roots = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
    if not roots:
        raise InputError(
            f"the large corpus needs the Debian package {APT_PACKAGE!r} (Python documentation sources "
            f"under {pattern}); install it with `{INSTALL_HINT}`"
        )
    # python3.9 < python3.11: compare the minor version numerically
    def version(p: Path) -> tuple[int, ...]:
        name = p.parts[-3].removeprefix("python")
        return tuple(int(x) for x in name.split(".") if x.isdigit())

    return max(roots, key=version)


def python_doc_files(exclude: tuple[str, ...] = DEFAULT_EXCLUDE, root: Path | None = None) -> list[Path]:
    """Source files outside the excluded books (top-level entries of ``_sources``), sorted."""
    root = root or python_doc_root()
    files = sorted(p for p in root.rglob("*.txt") if p.is_file() and p.relative_to(root).parts[0] not in exclude)
    if not files:
        raise InputError(
            f"no documentation sources under {root} outside {list(exclude)}; "
            f"reinstall with `apt-get install --reinstall {APT_PACKAGE}`"
        )
    return files


def python_doc_documents(exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[str]:
    """One document per source file (windows never cross files)."""
    return [p.read_text(encoding="utf-8", errors="replace") for p in python_doc_files(exclude)]


def read_python_doc(window: int = 32, vocab: int = 2000, unit: str = "word", oov: str = "drop",
                    exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> Corpus:
    """The large corpus as a :class:`Corpus` (one-hot embeddings), via the text reader."""
    root = python_doc_root()
    label = "all books" if not exclude else "without " + ", ".join(exclude)
    return corpus_from_documents(
        python_doc_documents(exclude), window, vocab, unit, oov,
        source=f"{root} ({label}; Debian package {APT_PACKAGE})",
    )
