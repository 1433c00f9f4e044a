"""Shared CLI plumbing: error handling with the exit-code contract, corpus options, console."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from theorycheck.errors import TheoryCheckError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # one-line errors, never wrapped

INTERNAL_ERROR = 70  # EX_SOFTWARE; 0-4 are verdicts, 2 bad input


def error_line(label: str, style: str, text: str) -> str:
    """A one-line message for err_console: the label in colour, the text verbatim (its
    brackets, e.g. ``theorycheck[torch]`` or ``{token: [...]}``, are not rich markup)."""
    return f"[{style}]{label}[/] {escape(' '.join(str(text).split()))}"


def warn(text: str) -> None:
    """A one-line warning on stderr (the run goes on)."""
    err_console.print(error_line("warning:", "bold yellow", text))


def handle_errors(fn):
    """Turn library errors into a one-line message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TheoryCheckError as exc:
            if exc.exit_code == 2:
                err_console.print(error_line("error:", "bold red", exc))
            else:
                err_console.print(error_line("not applicable:", "bold yellow", exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except MemoryError:
            err_console.print(error_line("error:", "bold red", "out of memory; use a smaller corpus (lower --vocab "
                                                             "or --window, or a synthetic spec's n, T, K)"))
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence, keep the one-line contract
            if os.environ.get("THEORYCHECK_DEBUG"):
                raise
            err_console.print(error_line(
                "internal error:", "bold red",
                f"{type(exc).__name__}: {exc} (set THEORYCHECK_DEBUG=1 for a traceback and please report it)"))
            raise typer.Exit(INTERNAL_ERROR) from None

    return wrapper


InputArg = Annotated[
    str | None,
    typer.Argument(
        help="Training corpus: a text file, a JSON-lines file of {\"context\": [...], \"next\": ...} samples "
        "(recognised by a .jsonl suffix in any case or by its content; see --format), "
        "or a synthetic spec such as 'synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1' "
        "(an existing file of that name wins), or 'python3-doc' for the large corpus (the Python "
        "documentation sources of the Debian package python3-doc, about 560,000 words; apt-get install python3-doc). "
        "Omit to use the bundled corpus (CPython's pydoc_data.topics).",
        show_default=False,
    ),
]
WindowOpt = Annotated[int, typer.Option("--window", "-T", help="Window length T for text input (the last token is the query).", min=2)]
VocabOpt = Annotated[int, typer.Option("--vocab", "-V", help="Keep the N most frequent tokens of a text input.", min=2)]
UnitOpt = Annotated[Literal["word", "char"], typer.Option(help="Text tokens: 'word' (lower-cased words and numbers) or 'char'.")]
OovOpt = Annotated[Literal["drop", "unk"], typer.Option(help="Out-of-vocabulary tokens: 'drop' them from the stream, or map to 'unk'.")]
FormatOpt = Annotated[Literal["auto", "text", "jsonl"], typer.Option(
    "--format", help="How to read INPUT: 'auto' (JSON lines for a .jsonl/.ndjson suffix or JSON-lines content, "
    "else text), 'text' or 'jsonl'.")]
EmbeddingsOpt = Annotated[Path | None, typer.Option("--embeddings", help="JSON file {token: [v1, ..., vd]}; one-hot if omitted.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail on any window whose label is not in the window instead of dropping it.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Results directory (created if needed; inputs are never overwritten).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice; the same seed gives byte-identical JSON.")]

DEFAULT_WINDOW = 6
DEFAULT_VOCAB = 20


TEXT_ONLY_OPTIONS = ("window", "vocab", "unit", "oov")


def given_on_command_line(name: str) -> bool:
    """Whether option ``name`` of the running command was typed (not its default)."""
    try:  # typer >= 0.2x vendors click as typer._click; older typer runs on click itself
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None or name not in ctx.params:
        return False
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def warn_ignored_text_options(kind: str) -> None:
    """--window/--vocab/--unit/--oov shape text input only: say so when they are given with
    JSON-lines or synthetic input instead of ignoring them silently."""
    if kind not in ("jsonl", "synthetic"):
        return
    given = [name for name in TEXT_ONLY_OPTIONS if given_on_command_line(name)]
    if not given:
        return
    flags = ", ".join(f"--{name}" for name in given)
    why = ("each JSON-lines sample's context is its window and its tokens are the vocabulary" if kind == "jsonl"
           else "the synthetic spec sets T and K")
    verb = "only shapes text input and is" if len(given) == 1 else "only shape text input and are"
    warn(f"{flags} {verb} ignored here: {why}")


def load_input(input_path, window, vocab, unit, oov, embeddings, input_format: str = "auto"):
    from theorycheck.corpus import load_corpus
    from theorycheck.corpus.readers import input_kind

    warn_ignored_text_options(input_kind(input_path, input_format))
    return load_corpus(input_path, window=window, vocab=vocab, unit=unit, oov=oov, embeddings_path=embeddings,
                       input_format=input_format)


def status(message: str):
    """A spinner on stderr while a long step runs (silent when not a terminal)."""
    return err_console.status(message) if sys.stderr.isatty() else _Null()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *_args, **_kwargs):
        pass
