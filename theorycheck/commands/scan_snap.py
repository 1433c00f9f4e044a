"""`theorycheck scan-snap`: the checks P0-P14 of Tian et al. (2023), THEORY-scansnap.md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from theorycheck.commands.common import (
    DEFAULT_VOCAB,
    DEFAULT_WINDOW,
    FormatOpt,
    OovOpt,
    OutOpt,
    SeedOpt,
    UnitOpt,
    VocabOpt,
    WindowOpt,
    console,
    handle_errors,
    load_input,
    status,
)
from theorycheck.errors import InputError

OUTPUT_FILES = ("scansnap.json", "scansnap_timings.json", "scansnap_Y.npy", "scansnap_Z.npy",
                "scansnap_Zq_checkpoints.npy", "scansnap_campaign.jsonl", "scansnap.html",
                "scansnap_attention.png", "scansnap_kappa.png", "scansnap_transition.png", "scansnap_entropy.png")

ScanInputArg = Annotated[
    str | None,
    typer.Argument(
        help="Corpus: the paper's generator 'scansnap:K=2,queries=1,common=10,distinct=10,T=128,n=2048,seed=1', "
        "a text file, a .jsonl file of {\"context\": [...], \"next\": ...} samples or a Li-style "
        "'synthetic:...' spec.  Omit for the paper's Syn-Small setting (K=2, M=33, T=128).",
        show_default=False,
    ),
]
FloatList = Annotated[str, typer.Option(help="Comma-separated numbers.")]


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{name} {text!r} is not a comma-separated list of numbers, e.g. 0.25,0.5,1") from None
    if not values or any(not v > 0 for v in values):
        raise InputError(f"{name} needs positive numbers, e.g. 0.25,0.5,1")
    return values


SCANSNAP_PREFIX = "scansnap:"


def is_scansnap_spec(input_path: str | None) -> bool:
    """``scansnap:...`` with its colon, unless a file of that name exists (an existing file wins)."""
    from theorycheck.io import exists

    return input_path is not None and str(input_path).startswith(SCANSNAP_PREFIX) and not exists(input_path)


def load_scansnap_input(input_path: str | None, seed: int, window: int, vocab: int, unit: str, oov: str,
                        input_format: str = "auto"):
    """None -> Syn-Small; 'scansnap:...' -> the paper's generator; anything else -> analyze's readers."""
    from theorycheck.scansnap.synthetic import parse_scansnap_spec, scansnap_synthetic

    if input_path is None:
        return scansnap_synthetic(seed=seed)
    if is_scansnap_spec(input_path):
        spec = parse_scansnap_spec(str(input_path))
        spec.setdefault("seed", seed)
        return scansnap_synthetic(**spec)
    return load_input(input_path, window, vocab, unit, oov, None, input_format)


def check_outputs(out: Path, input_path: str | None, input_format: str = "auto") -> Path:
    """Refuse outputs that are inputs and unwritable directories before the run (io.prepare_out_dir)."""
    from theorycheck.corpus.readers import input_kind
    from theorycheck.io import REPORT_OUTPUTS, prepare_out_dir

    src = None
    if input_path is not None and not is_scansnap_spec(input_path):
        src = input_path if input_kind(input_path, input_format) in ("text", "jsonl") else None
    return prepare_out_dir(out, [src], (*OUTPUT_FILES, *REPORT_OUTPUTS))


DIVERGED = 1e100  # |Y|, |Z| beyond this: the logits have left float64's exp range long ago


def check_finite(result) -> None:
    """A run whose iterates overflowed gives no verdict: it is bad input (the step sizes)."""
    import numpy as np

    traj = result.trajectory
    if traj is None:
        return
    with np.errstate(invalid="ignore"):
        sizes = [np.abs(np.asarray(a, dtype=float)).max(initial=0.0) for a in (traj.Y, traj.Z)]
    if not all(DIVERGED > v for v in sizes):  # nan compares False too
        raise InputError("training diverged: Y or Z grew beyond 1e100 (or became infinite or NaN), so no check "
                         "can be judged; lower --eta-y / --eta-z")


def save_results(result, out_dir: Path, html: bool) -> None:
    import numpy as np

    from theorycheck.io import write_json, write_npy

    traj = result.trajectory
    write_npy(out_dir / "scansnap_Y.npy", traj.Y)
    write_npy(out_dir / "scansnap_Z.npy", traj.Z)
    write_npy(out_dir / "scansnap_Zq_checkpoints.npy", np.asarray(traj.Zq))
    write_json(out_dir / "scansnap_timings.json", {k: round(v, 6) for k, v in result.timings.items()})
    write_json(out_dir / "scansnap.json", result.results)
    if html:
        from theorycheck.io import write_bytes
        from theorycheck.scansnap.report import scansnap_html_page

        page = scansnap_html_page(result.results, out_dir)
        write_bytes(out_dir / "scansnap.html", page.encode("utf-8"))
    retire_scansnap_outputs(out_dir, html)


def retire_scansnap_outputs(out_dir: Path, html: bool) -> list[str]:
    """Remove what an earlier scan-snap run left that this one did not write (its page and
    figures after --no-html), and report.html / summary.md, which embed the earlier
    scansnap.json (re-render them with `theorycheck report --from DIR`)."""
    from theorycheck.io import REPORT_OUTPUTS, retire_stale_outputs

    written = set(OUTPUT_FILES) if html else {n for n in OUTPUT_FILES if not n.endswith((".html", ".png"))}
    written -= {"scansnap_campaign.jsonl"}  # appended by the campaign, never stale
    family = tuple(n for n in OUTPUT_FILES if n.endswith((".html", ".png")))
    removed = retire_stale_outputs(out_dir, written, family)
    removed += retire_stale_outputs(out_dir, (), REPORT_OUTPUTS)
    if removed:
        from theorycheck.commands.common import err_console

        err_console.print(f"removed {', '.join(removed)} left in {out_dir} by an earlier run "
                          "(re-render a report with `theorycheck report --from DIR`)", markup=False)
    return removed


def render(results: dict) -> None:
    from rich.table import Table

    from theorycheck.commands.render import _fmt

    corpus = results["corpus"]
    console.print(f"[bold]Scan and Snap[/] (Tian et al. 2023) on {corpus['source']}: M = {corpus['vocabulary_M']}, "
                  f"{corpus['classes_K']} classes, {corpus['samples']} samples, T-1 = {corpus['mean_context_length']:.1f}")
    table = Table(title="Checks", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("check")
    for col in ("outcome", "statistic", "threshold", "n"):
        table.add_column(col, no_wrap=True)
    colour = {"HOLDS": "green", "VIOLATED": "red", "NOT APPLICABLE": "yellow"}
    reasons = []
    for cid, c in results["checks"].items():
        thr = c["threshold"]
        thr_s = f"[{_fmt(thr[0])}, {_fmt(thr[1])}]" if isinstance(thr, list) else _fmt(thr)
        outcome = "N/A" if c["outcome"] == "NOT APPLICABLE" else c["outcome"]
        table.add_row(cid, c["name"] + (" (soft)" if c["soft"] else ""), f"[{colour[c['outcome']]}]{outcome}[/]",
                      _fmt(c["statistic"]), f"{c['relation']} {thr_s}", str(c["eligible"]))
        if c["reason"]:
            reasons.append(f"  {cid}: {c['reason']}")
    console.print(table)
    if reasons:
        console.print("not applicable:\n" + "\n".join(reasons))
    comp = results.get("comparison")
    if comp:
        console.print(f"[bold]Both theories:[/] {comp['summary']}")
    v = results["verdict"]
    console.print(f"verdict: [bold]{v['outcome']}[/] (applicable {len(v['applicable'])}, violated "
                  f"{', '.join(v['violated']) or 'none'})")


def register(app: typer.Typer) -> None:
    @app.command("scan-snap")
    @handle_errors
    def scan_snap_cmd(
        input_path: ScanInputArg = None,
        input_format: FormatOpt = "auto",
        out: OutOpt = Path("theorycheck-results"),
        seed: SeedOpt = 0,
        window: WindowOpt = DEFAULT_WINDOW,
        vocab: VocabOpt = DEFAULT_VOCAB,
        unit: UnitOpt = "word",
        oov: OovOpt = "drop",
        eta_y: Annotated[float, typer.Option("--eta-y", help="Decoder learning rate eta_Y (main run).")] = 1.0,
        eta_z: Annotated[float, typer.Option("--eta-z", help="Attention learning rate eta_Z (main run).")] = 0.1,
        steps: Annotated[int | None, typer.Option(help="Main-run steps (default 128 t0, t0 = 2 K ln M / eta_Y).", min=1)] = None,
        batch: Annotated[int, typer.Option(help="Minibatch size (mean-reduced).", min=1)] = 128,
        momentum: Annotated[float, typer.Option(help="Heavy-ball momentum of the main run, P8 and P12.")] = 0.0,
        weight_decay: Annotated[float, typer.Option("--weight-decay", help="L2 weight decay (breaks P0-P11).")] = 0.0,
        optimizer: Annotated[Literal["sgd", "adam"], typer.Option(help="'sgd' or 'adam' (the theory covers SGD only).")] = "sgd",
        init: Annotated[Literal["zero", "random"], typer.Option(help="'zero' (Y = Z = 0, the paper's) or 'random' (U(-1/sqrt M, 1/sqrt M)).")] = "zero",
        residual: Annotated[bool, typer.Option("--residual", help="Train the residual variant (§3.8); enables P13.")] = False,
        sweeps: Annotated[bool, typer.Option("--sweeps/--no-sweeps", help="Run the learning-rate sweeps (P8, P10-P12, P14b).")] = True,
        seeds: Annotated[int, typer.Option("--seeds", help="Seeds per sweep cell (P10-P12).", min=1)] = 5,
        sweep_steps: Annotated[int, typer.Option("--sweep-steps", help="Steps per P10/P11 run (Fig. 6: 100).", min=1)] = 100,
        sweep_eta_z: Annotated[str, typer.Option("--sweep-eta-z", help="eta_Z values of P10/P11.")] = "0.25,0.5,1",
        sweep_ratios: Annotated[str, typer.Option("--sweep-ratios", help="eta_Y/eta_Z ratios of P10/P11.")] = "2,5,10",
        p8_eta_y: Annotated[str, typer.Option("--p8-eta-y", help="eta_Y values of the P8 sweep (span >= x16).")] = "0.125,0.25,0.5,1,2",
        workers: Annotated[int | None, typer.Option(help="Campaign processes (0 = serial in this process; default: serial for short campaigns, else one per core).", min=0)] = None,
        scheduler: Annotated[str | None, typer.Option(help="Address of a running Dask scheduler, e.g. tcp://host:8786.")] = None,
        snap: Annotated[bool, typer.Option("--snap/--no-snap", help="Run the long (128 t0) P9 snap run.")] = True,
        compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Compare with Li et al. on the same corpus.")] = True,
        html: Annotated[bool, typer.Option("--html/--no-html", help="Write DIR/scansnap.html with the figures.")] = True,
    ) -> None:
        """Check the Scan-and-Snap predictions (Tian, Wang, Chen & Du, NeurIPS 2023) on a corpus.

        Trains the Y/Z model (attention logits Z, decoder Y, no positional encoding, the query
        does not attend to itself) with SGD and runs checks P0-P14 of THEORY-scansnap.md; the
        learning-rate sweeps run as a parallel campaign.  Writes DIR/scansnap.json (every check
        with statistic, threshold, eligible items, preconditions, outcome), the final Y and Z
        (.npy) and DIR/scansnap.html.  Exit 0 if every applicable check holds, 1 if one is
        violated, 3 if none applies, 2 for bad input.

        Examples:

          theorycheck scan-snap --out res/                   # Syn-Small, K=2, M=33, T=128

          theorycheck scan-snap scansnap:K=6,queries=3 --out res6/

          theorycheck scan-snap README.md --window 32 --workers 0   # any plain-text file
        """
        from theorycheck.scansnap.checks import ScanSnapOptions, run_scansnap

        opt = ScanSnapOptions(
            eta_y=eta_y, eta_z=eta_z, steps=steps, batch=batch, momentum=momentum, weight_decay=weight_decay,
            optimizer=optimizer, init=init, residual=residual, seed=seed, sweeps=sweeps, sweep_seeds=seeds,
            sweep_steps=sweep_steps, sweep_eta_z=parse_floats(sweep_eta_z, "--sweep-eta-z"),
            sweep_ratios=parse_floats(sweep_ratios, "--sweep-ratios"),
            p8_eta_y=parse_floats(p8_eta_y, "--p8-eta-y"), workers=workers, scheduler=scheduler,
            progress=sys.stderr.isatty(), compare=compare, snap=snap,
        )
        import math

        if not (0 < eta_y < math.inf and 0 < eta_z < math.inf):  # also refuses nan
            raise InputError("--eta-y and --eta-z must be positive finite numbers")
        if not 0 <= weight_decay < math.inf:
            raise InputError(f"--weight-decay must be a finite number >= 0 (got {weight_decay})")
        out_dir = check_outputs(out, input_path, input_format)
        with status("reading the corpus"):
            corpus = load_scansnap_input(input_path, seed, window, vocab, unit, oov, input_format)
        from dataclasses import replace

        opt = replace(opt, campaign_log=str(out_dir / "scansnap_campaign.jsonl"))
        result = run_scansnap(corpus, opt)  # draws its own progress bar for the sweeps
        check_finite(result)
        save_results(result, out_dir, html)
        render(result.results)
        console.print(f"wrote {out_dir}/scansnap.json" + (", scansnap.html" if html else ""))
        raise typer.Exit(result.exit_code)
