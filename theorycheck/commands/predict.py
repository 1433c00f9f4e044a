"""`theorycheck predict`: run the automaton (hard retrieval + soft composition) on new windows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from theorycheck.automaton import check_automaton_layout
from theorycheck.commands.common import console, handle_errors
from theorycheck.errors import InputError

HINT = "re-run `theorycheck analyze ... --out DIR`"


def load_automaton(results_dir: Path):
    """The automaton of a results directory, every file checked (bad files are bad input, exit 2)."""
    import numpy as np

    from theorycheck.automaton import Automaton
    from theorycheck.io import exists, is_dir, read_json, read_npy

    results_dir = Path(results_dir)
    if not exists(results_dir):
        raise InputError(f"{str(results_dir)!r} does not exist; give the --out DIR of `theorycheck analyze`")
    if not is_dir(results_dir):
        raise InputError(f"{str(results_dir)!r} is not a directory; give the --out DIR of `theorycheck analyze`")
    where = str(results_dir / "results.json")
    results = read_json(results_dir / "results.json", HINT)
    check_automaton_layout(results, repr(where), HINT)
    vocab = results["vocabulary"]
    E = read_npy(results_dir / "E.npy", HINT)
    W_fin = read_npy(results_dir / "W_fin.npy", HINT)
    if E.ndim != 2 or E.shape[0] != len(vocab):
        raise InputError(f"E.npy has shape {E.shape} but the vocabulary has {len(vocab)} tokens; {HINT}")
    if W_fin.shape != (E.shape[1], E.shape[1]):
        raise InputError(f"W_fin.npy has shape {W_fin.shape} but the embeddings have dimension {E.shape[1]}; {HINT}")
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.abs(E).max() ** 2 * np.abs(W_fin).max() * E.shape[1] ** 2 if E.size else 0.0
    if not np.isfinite(scale) or scale > 1e300:
        raise InputError(f"E.npy and W_fin.npy are too large to score windows in float64; {HINT}")
    return Automaton(tuple(vocab), E, W_fin, results["queries"])


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

        Exit 0 when every window was scored, 2 for a token outside the vocabulary or a
        results directory that analyze did not write.

        Examples:

          theorycheck analyze examples/mix.jsonl --embeddings examples/mix_embeddings.json --out res/

          theorycheck predict res/ "a b c q" "d q"

          theorycheck analyze && theorycheck predict theorycheck-results "a class of the"
        """
        automaton = load_automaton(results_dir)
        table = Table(title="Automaton predictions", title_justify="left")
        for col in ("window", "status", "retrieved SCC tokens", "next-token distribution"):
            table.add_column(col)
        for window in windows:
            r = automaton.predict(window.split())
            dist = ", ".join(f"{t}: {p:.3f}" for t, p in sorted(r.distribution.items(), key=lambda kv: -kv[1]))
            table.add_row(escape(window), r.status, escape(" ".join(r.retrieved)), escape(dist))
        console.print(table)
