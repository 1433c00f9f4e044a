"""Command-line interface (typer).  Thin: parse, call the API, render, choose the exit code.

Every module in ``theorycheck/commands`` that defines ``register(app)`` adds its
commands, so each command lives in its own file.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import theorycheck.commands as commands

app = typer.Typer(
    name="theorycheck",
    help=(
        "Check the theory of how self-attention learns next-token prediction.\n\n"
        "Li et al. (AISTATS 2024): gradient descent on 1-layer attention converges in direction to a "
        "Graph-SVM W^svm (hard retrieval of the top SCC of a token-priority graph) plus a finite "
        "component W^fin (soft composition). Tian et al. (NeurIPS 2023): scan-and-snap dynamics.\n\n"
        "Exit codes: 0 predictions hold, 1 violated, 2 bad input or usage, 3 the theorem does not "
        "apply (an assumption fails), 4 inconclusive (the run is still converging: raise --steps), "
        "130 interrupted, 70 internal error.\n\n"
        "Start with `theorycheck report` (bundled corpus) or `theorycheck analyze examples/chain.jsonl --detail q`."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

ORDER = ["analyze", "predict", "verify", "judge", "report", "theories", "prove", "falsify", "scan_snap"]


def _load_commands() -> None:
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    for name in names:
        module = importlib.import_module(f"theorycheck.commands.{name}")
        if hasattr(module, "register"):
            module.register(app)


_load_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
