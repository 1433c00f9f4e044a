"""`theorycheck falsify`: search for a minimal counterexample to a conjecture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from theorycheck.commands.common import OutOpt, SeedOpt, console, err_console, handle_errors


def render_registry() -> None:
    from theorycheck.falsify import list_conjectures

    table = Table(title="Conjectures", title_justify="left", show_lines=True)
    for col in ("name", "expected", "statement", "drops"):
        table.add_column(col, overflow="fold")
    for conj in list_conjectures():
        table.add_row(conj.name, conj.expected, conj.statement, "; ".join(conj.drops) or "— (the theorem's own assumptions)")
    console.print(table)


def render_outcome(outcome) -> None:
    head = outcome.headline
    if head is None:
        console.print(f"status: {outcome.status}" + (f" ({'; '.join(outcome.reasons)})" if outcome.reasons else ""))
        return
    console.print(f"criterion {head.id}: {head.value:.6g} (tolerance {head.relation} {head.tolerance:g}), status {head.status}")


def register(app: typer.Typer) -> None:
    @app.command("falsify")
    @handle_errors
    def falsify_cmd(
        conjecture: Annotated[str | None, typer.Option("--conjecture", "-c", help="Name of the conjecture (see --list).")] = None,
        budget: Annotated[int, typer.Option(help="Candidates to try before giving up (shrinking has its own --shrink-budget).", min=1)] = 200,
        seed: SeedOpt = 0,
        out: OutOpt = Path("theorycheck-falsify"),
        scheduler: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler, e.g. tcp://host:8786 (default: a local cluster on this machine's cores).")] = None,
        workers: Annotated[int | None, typer.Option(help="Local worker processes (default: one per core); 0 runs serially in this process.", min=0)] = None,
        plugin: Annotated[list[Path] | None, typer.Option("--plugin", help="Python module registering your own conjectures (repeatable).")] = None,
        batch: Annotated[int, typer.Option(help="Candidates per search round (part of the campaign's definition, not of the hardware).", min=1)] = 16,
        shrink_budget: Annotated[int, typer.Option(help="Evaluations allowed for shrinking a counterexample.", min=0)] = 60,
        shrink_batch: Annotated[int, typer.Option(help="Simplifications evaluated together while shrinking.", min=1)] = 4,
        resume: Annotated[bool, typer.Option("--resume", help="Reuse the finished trials logged in DIR/trials by an interrupted run with the same options.")] = False,
        list_: Annotated[bool, typer.Option("--list", help="Print the registry of conjectures and exit.")] = False,
        replay: Annotated[Path | None, typer.Option("--replay", help="Re-read DIR/counterexample.jsonl + embeddings.json written by an earlier run and re-score them.")] = None,
    ) -> None:
        """Search small datasets for a counterexample to a conjecture about attention's implicit
        bias, then shrink it to a minimal one (fewest samples, tokens, dimensions).

        Writes DIR/counterexample.jsonl and DIR/embeddings.json (readable by analyze and verify),
        DIR/explanation.md, DIR/falsify.json and DIR/trials/*.jsonl (every trial, streamed).
        Exit 1 when a counterexample was found, 0 when none within the budget, 130 on Ctrl-C
        (what was found is written first).  The same --seed, --budget, --batch, --shrink-budget
        and --shrink-batch give the same counterexample with any number of workers.

        Examples:

          theorycheck falsify --list

          theorycheck falsify --conjecture kq-frobenius --budget 64 --seed 1 --out cx/

          theorycheck falsify --conjecture mine --plugin my_conjectures.py --workers 0
        """
        from theorycheck.errors import InputError
        from theorycheck.falsify import load_plugin

        for path in plugin or []:
            load_plugin(path)
        if list_:
            render_registry()
            return
        if replay is not None:
            from theorycheck.falsify.output import replay as replay_dir

            conj, cand, outcome = replay_dir(replay)
            console.print(f"replayed {conj.name} on {replay}: {cand.n} samples, {cand.K} tokens, d = {cand.d}")
            render_outcome(outcome)
            raise typer.Exit(1 if outcome.status == "violated" else 0)
        if conjecture is None:
            raise InputError("--conjecture NAME is required; see `theorycheck falsify --list`")
        from theorycheck.falsify.search import falsify

        result = falsify(conjecture, budget=budget, seed=seed, out_dir=out, scheduler=scheduler, workers=workers,
                         plugins=tuple(plugin or ()), batch=batch, shrink_budget=shrink_budget,
                         shrink_batch=shrink_batch, progress=err_console.is_terminal, resume=resume)
        counts = result.counts()
        console.print(f"{result.conjecture.name}: {len(result.search_trials)} candidates tried, "
                      f"{counts['violated']} violated, {counts['holds']} held, {counts['inconclusive']} inconclusive, "
                      f"{counts['discarded']} discarded for assumptions, {counts['error']} errors")
        if result.found:
            c = result.final.candidate
            console.print(f"[bold red]FALSIFIED[/]: counterexample with {c.n} samples, {c.K} tokens, d = {c.d} "
                          f"(shrunk in {result.shrink_evaluations} evaluations)")
            render_outcome(_outcome(result.final.outcome))
            console.print(f"wrote {out}/counterexample.jsonl, embeddings.json, explanation.md, falsify.json")
        else:
            console.print(f"[bold green]not falsified[/] within budget {budget}; wrote {out}/explanation.md, falsify.json")
        raise typer.Exit(result.exit_code)


def _outcome(data: dict):
    from theorycheck.falsify.evidence import Finding
    from theorycheck.falsify.registry import Outcome

    findings = tuple(Finding(**f) for f in data["findings"])
    return Outcome(data["status"], data["score"], data["criterion"], findings, tuple(data["reasons"]), data["details"])
