"""`theorycheck theories`: the installed theories, their assumptions, predictions and options."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from theorycheck.commands.common import console, handle_errors, warn


def theories_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON (for scripts).")] = False,
) -> None:
    """List the installed theories: the built-in li2024, tian2023 and ntp2024, and every plug-in
    registered under the entry-point group `theorycheck.theories` (docs/theories.md), with the
    assumptions each checks on a corpus, the arrays it predicts (what `judge --prediction`
    replaces) and the `verify` options it reads.

    Examples:

      theorycheck theories

      theorycheck verify --theory ntp2024 --context window-mean examples/chain.jsonl
    """
    import json

    from theorycheck.theories import DEFAULT, installed

    theories, problems = installed()
    for problem in problems:
        warn(problem)
    if as_json:
        console.print_json(json.dumps([t.describe() for t in theories.values()]))
        return
    for name, theory in theories.items():
        table = Table(title=f"{name}{' (default)' if name == DEFAULT else ''}: {theory.title}", title_justify="left",
                      show_header=False, box=None)
        table.add_column("", style="bold", no_wrap=True)
        table.add_column("")
        table.add_row("cites", escape(theory.citation))
        table.add_row("predicts", escape(theory.summary))
        for a, what in theory.assumption_names:
            table.add_row("assumes", f"{escape(a)}: {escape(what)}")
        for stem, meaning in theory.prediction_arrays:
            table.add_row("writes", f"{stem}.npy: {escape(meaning)}")
        table.add_row("options", escape(", ".join("--" + o.replace("_", "-") for o in sorted(theory.options))))
        console.print(table)
        console.print()


def register(app: typer.Typer) -> None:
    app.command("theories")(handle_errors(theories_cmd))
