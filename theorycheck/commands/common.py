"""Shared CLI plumbing: error handling with the exit-code contract, corpus options, console."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from theorycheck.errors import TheoryCheckError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # one-line errors, never wrapped

INTERNAL_ERROR = 70  # EX_SOFTWARE; 0-4 are verdicts, 2 bad input


def handle_errors(fn):
    """Turn library errors into a one-line message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TheoryCheckError as exc:
            err_console.print(f"[bold red]error:[/] {exc}" if exc.exit_code == 2 else f"[bold yellow]not applicable:[/] {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except MemoryError:
            err_console.print("[bold red]error:[/] out of memory; lower --vocab or --window")
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence, keep the one-line contract
            if os.environ.get("THEORYCHECK_DEBUG"):
                raise
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
                "(set THEORYCHECK_DEBUG=1 for a traceback and please report it)"
            )
            raise typer.Exit(INTERNAL_ERROR) from None

    return wrapper


InputArg = Annotated[
    str | None,
    typer.Argument(
        help="Training corpus: a text file, a .jsonl file of {\"context\": [...], \"next\": ...} samples, "
        "or a synthetic spec such as 'synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1'. "
        "Omit to use the bundled corpus (CPython's pydoc_data.topics).",
        show_default=False,
    ),
]
WindowOpt = Annotated[int, typer.Option("--window", "-T", help="Window length T for text input (the last token is the query).", min=1)]
VocabOpt = Annotated[int, typer.Option("--vocab", "-V", help="Keep the N most frequent tokens of a text input.", min=1)]
UnitOpt = Annotated[str, typer.Option(help="Text tokens: 'word' (lower-cased words and numbers) or 'char'.")]
OovOpt = Annotated[str, typer.Option(help="Out-of-vocabulary tokens: 'drop' them from the stream, or map to 'unk'.")]
EmbeddingsOpt = Annotated[Path | None, typer.Option("--embeddings", help="JSON file {token: [v1, ..., vd]}; one-hot if omitted.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail on any window whose label is not in the window instead of dropping it.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Results directory (created if needed; inputs are never overwritten).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice; the same seed gives byte-identical JSON.")]

DEFAULT_WINDOW = 6
DEFAULT_VOCAB = 20


def load_input(input_path, window, vocab, unit, oov, embeddings):
    from theorycheck.corpus import load_corpus

    return load_corpus(input_path, window=window, vocab=vocab, unit=unit, oov=oov, embeddings_path=embeddings)


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
