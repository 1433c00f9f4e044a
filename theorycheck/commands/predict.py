"""`theorycheck predict`: run the automaton (hard retrieval + soft composition) on new windows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from theorycheck.commands.common import console, handle_errors


def load_automaton(results_dir: Path):
    from theorycheck.automaton import Automaton
    from theorycheck.io import read_json, read_npy

    results = read_json(results_dir / "results.json")
    return Automaton(tuple(results["vocabulary"]), read_npy(results_dir / "E.npy"),
                     read_npy(results_dir / "W_fin.npy"), results["queries"])


def register(app: typer.Typer) -> None:
    @app.command("predict")
    @handle_errors
    def predict_cmd(
        results_dir: Annotated[Path, typer.Argument(help="Directory written by `theorycheck analyze`.")],
        windows: Annotated[list[str], typer.Argument(help="Windows as space-separated tokens, the last one the query, e.g. \"a b q\".")],
    ) -> None:
        """Predict the next-token distribution of new windows with the automaton of Li et al.:
        retrieve the tokens of the highest-priority SCC present (hard retrieval), then weight
        them by softmax(x_t^T W^fin x_last) (soft composition).  Windows without a dominant
        SCC are reported as undetermined: the theory does not predict them.
        """
        automaton = load_automaton(results_dir)
        table = Table(title="Automaton predictions", title_justify="left")
        for col in ("window", "status", "retrieved SCC tokens", "next-token distribution"):
            table.add_column(col)
        for window in windows:
            r = automaton.predict(window.split())
            dist = ", ".join(f"{t}: {p:.3f}" for t, p in sorted(r.distribution.items(), key=lambda kv: -kv[1]))
            table.add_row(window, r.status, " ".join(r.retrieved), dist)
        console.print(table)
