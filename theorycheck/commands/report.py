"""`theorycheck report`: analyze + verify (or an existing results directory) -> report.html, summary.md.

The command takes every option of `theorycheck verify` (same names, defaults and help: the
signature is copied from ``verify_cmd``) plus ``--from DIR``.  The report itself is always
rendered from the files of the results directory, so ``--from`` reproduces a fresh report.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from theorycheck.commands.common import console, given_on_command_line, handle_errors, status
from theorycheck.commands.render import render_results
from theorycheck.commands.verify import render_verdict, run_verify, verify_cmd
from theorycheck.errors import InputError

DEFAULT_OUT = Path("theorycheck-results")
VERIFY_PARAMETERS = inspect.signature(verify_cmd, eval_str=True).parameters

FromOpt = Annotated[Path | None, typer.Option(
    "--from", help="Re-render the report of an existing results directory (written by verify or report) "
    "without recomputing anything.", show_default=False)]
ReportOutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Directory for the results and the report (created if needed; inputs are never "
    "overwritten). Default: theorycheck-results, or the --from directory.", show_default=False)]


def render_windows(rows) -> None:
    from theorycheck.report.html import distribution_text, fmt

    if not rows:
        return
    t = Table(title="Automaton against the trained model (new windows)", title_justify="left")
    for col in ("window", "automaton", "automaton distribution", "trained model", "TV"):
        t.add_column(col)
    for r in rows:
        t.add_row(escape(" ".join(r.window)), r.status, escape(distribution_text(r.automaton if r.status == "determined" else None, 3)),
                  escape(distribution_text(r.model, 3)), fmt(r.tv, 3))
    console.print(t)


def report_cmd(**options) -> None:
    """Run analyze and verify on INPUT (the bundled corpus when omitted) and write a
    self-contained DIR/report.html (verdict, criteria, assumptions, corpus statistics,
    convergence curves, priority order, score heatmaps, automaton against the trained
    model) and DIR/summary.md next to the results JSON and arrays.

    With --from DIR, re-render the report of an existing results directory instead.
    Takes every option of `theorycheck verify`. Exit code: the verdict's, as for verify
    (0 HOLDS, 1 VIOLATED, 3 NOT APPLICABLE, 4 INCONCLUSIVE, 130 interrupted; 2 bad input).

    Examples:

      theorycheck report                                   # bundled pydoc corpus

      theorycheck report data.jsonl --steps 8000 --out res/

      theorycheck report --from res/                       # re-render, no training
    """
    from theorycheck.report import load_results_dir, write_report
    from theorycheck.report.data import compare_windows

    from_dir, out = options.pop("from_dir"), options.pop("out")
    options = {k: (v.value if isinstance(v, Enum) else v) for k, v in options.items()}
    if options["theory"] != "li2024" or given_on_command_line("context") or (
            from_dir is not None and load_index(from_dir) is not None):
        raise typer.Exit(report_theories(options, from_dir, out))
    options.pop("theory"), options.pop("context")
    verified = None
    if from_dir is not None:
        changed = [name for name, value in options.items() if value != VERIFY_PARAMETERS[name].default]
        if changed:
            flags = ", ".join("INPUT" if n == "input_path" else "--" + n.replace("_", "-") for n in changed)
            raise InputError(f"--from re-renders an existing results directory; drop {flags} "
                             "(or drop --from to recompute)")
        results_dir = from_dir
    else:
        _, _, verified, results_dir = run_verify(**options, out=out or DEFAULT_OUT)
    with status("rendering report.html and summary.md"):
        files = write_report(results_dir, out if from_dir is not None else None)
    data = load_results_dir(results_dir)
    render_results(data.results)
    if data.verify is not None:
        render_verdict(data.verify)
    render_windows(compare_windows(data))
    console.print(f"wrote {files.html} and {files.markdown}" + ("" if from_dir is not None else
                  f" (results: {results_dir}/results.json, trajectory.json, W_*.npy)"))
    code = files.report.exit_code
    if from_dir is None and verified.train.extra.get("signal") == "SIGTERM":
        code = 143
    if from_dir is not None and data.verify is not None and data.verify.get("verdict") == "INCOMPLETE":
        console.print("[yellow]the run in this directory was interrupted: the report shows its partial trajectory[/]")
        code = 0  # re-rendering succeeded; the interruption belongs to the earlier run
    raise typer.Exit(code)


def report_theories(options: dict, from_dir: Path | None, out: Path | None) -> int:
    """report --theory NAME (not li2024) or all: run each theory (a subdirectory each for all),
    then write DIR/theories.json, DIR/report.html and DIR/summary.md side by side."""
    from theorycheck.commands.verify import refuse_foreign_options, run_theory
    from theorycheck.errors import TheoryCheckError
    from theorycheck.report import theories as combined
    from theorycheck.theories import get, installed

    if from_dir is not None:
        index = load_index(from_dir)
        if index is None:
            raise InputError(f"{str(from_dir)!r} holds no theories.json; it was not written by `report --theory`")
        html, md = combined.write(Path(from_dir), index)
        console.print(f"wrote {html} and {md}")
        return combined.combined_exit_code(index["theories"])
    name = options.pop("theory")
    root = Path(out or DEFAULT_OUT)
    if name == "all":
        names = list(installed()[0])
        given = [n for n in options if given_on_command_line(n) and n not in ("input_path", "input_format", "window",
                 "vocab", "unit", "oov", "embeddings", "seed", "context")]
        if given:
            raise InputError("report --theory all runs every theory with its own defaults; drop " +
                             ", ".join("--" + n.replace("_", "-") for n in given) + " (or run one theory with --theory NAME)")
    else:
        refuse_foreign_options(get(name))
        names = [name]
    entries = []
    for theory_name in names:
        subdir = theory_name if name == "all" else "."
        console.rule(f"{theory_name}")
        try:
            outcome = run_theory(theory_name, dict(options), out=root / subdir)
        except TheoryCheckError as exc:
            if name != "all":
                raise
            from theorycheck.commands.common import warn

            warn(f"{theory_name}: {exc}")
            entries.append(combined.failed_entry(theory_name, str(exc)))
            continue
        if theory_name == "li2024":
            from theorycheck.report import write_report

            write_report(root / subdir)
        entries.append(combined.entry_of(outcome, subdir))
    source = options.get("input_path") or "the bundled corpus (CPython's pydoc_data.topics)"
    html, md = combined.write(root, {"source": str(source), "theories": entries})
    console.print(f"wrote {html}, {md} and {root / combined.INDEX}")
    return combined.combined_exit_code(entries)


def load_index(path):
    from theorycheck.report.theories import load_index as _load

    return _load(Path(path))


def _signature() -> inspect.Signature:
    """verify's parameters with --from added and --out defaulting to None."""
    params = []
    for name, p in VERIFY_PARAMETERS.items():
        if name == "out":
            p = p.replace(annotation=ReportOutOpt, default=None)
        params.append(p)
        if name == "input_path":
            params.append(inspect.Parameter("from_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            annotation=FromOpt, default=None))
    return inspect.Signature(params, return_annotation=None)


report_cmd.__signature__ = _signature()


def register(app: typer.Typer) -> None:
    app.command("report")(handle_errors(report_cmd))
