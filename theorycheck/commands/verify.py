"""`theorycheck verify`: train the model and judge it against the predictions."""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from theorycheck.commands.analyze import RadiiOpt, SvmOpt, run_analyze
from theorycheck.commands.common import (
    DEFAULT_VOCAB,
    DEFAULT_WINDOW,
    EmbeddingsOpt,
    FormatOpt,
    InputArg,
    OovOpt,
    OutOpt,
    SeedOpt,
    StrictOpt,
    UnitOpt,
    VocabOpt,
    WindowOpt,
    console,
    err_console,
    given_on_command_line,
    handle_errors,
)
from theorycheck.errors import InputError


class Optimizer(str, Enum):
    split_ngd = "split-ngd"
    gd = "gd"
    ngd = "ngd"
    adam = "adam"


class Schedule(str, Enum):
    auto = "auto"
    inverse = "inverse"
    inverse_sqrt = "inverse-sqrt"
    constant = "constant"


class Init(str, Enum):
    random = "random"
    zero = "zero"


class Backend(str, Enum):
    numpy = "numpy"
    torch = "torch"


VERDICT_STYLE = {"HOLDS": "bold green", "VIOLATED": "bold red", "NOT APPLICABLE": "bold yellow",
                 "INCONCLUSIVE": "bold yellow", "INCOMPLETE": "bold yellow"}


RESULT_STYLE = {"HOLDS": "[green]holds[/]", "VIOLATED": "[red]VIOLATED[/]", "INCONCLUSIVE": "[yellow]open[/]"}


def render_verdict(verdict: dict) -> None:
    """Criteria table, reasons, resolution and the one-line statement (shared by verify, judge, report)."""
    table = Table(title="Criteria", title_justify="left")
    for col in ("criterion", "prediction", "measured", "run still moves", "tolerance", "result"):
        table.add_column(col)
    for c in verdict["criteria"]:
        unit = "°" if c.get("unit") == "deg" else ""
        value = "—" if c["value"] is None else f"{c['value']:.4g}{unit}"
        moving = "—" if not c["applies"] else ("not located" if c.get("uncertainty") is None
                                                else f"≤ {c['uncertainty']:.3g}{unit}")
        tol = "—" if c["tolerance"] is None else f"{c['relation']} {c['tolerance']:.4g}{unit}"
        result = "n/a" if not c["applies"] else RESULT_STYLE.get(c.get("status"), c.get("status", ""))
        table.add_row(c["id"], c["prediction"], value, moving, tol, result)
    console.print(table)
    for reason in verdict["reasons"]:
        console.print(f"[yellow]{escape(reason)}[/]")
    style = VERDICT_STYLE[verdict["verdict"]]
    statement = verdict.get("statement") or verdict["verdict"]
    head, _, rest = statement.partition(":")
    console.print(f"verdict: [{style}]{escape(head)}[/]" + (f":{escape(rest)}" if rest else ""))


def verify_options(optimizer, lr, steps, init, seed, factorized, early_stop, backend, checkpoints, schedule,
                   decay_from, tol_angle, tol_fin, tol_fin_abs, tol_gap, tol_leak, tol_comp, tol_heldout_leak,
                   tol_heldout_comp):
    """TrainConfig and Tolerances from the CLI options (validated: bad values are exit 2)."""
    from theorycheck.train import TrainConfig
    from theorycheck.verify import default_tolerances, with_tolerances

    if optimizer is None:
        optimizer = "ngd" if (factorized is not None or str(getattr(backend, "value", backend)) == "torch") else "split-ngd"
    config = TrainConfig(optimizer=getattr(optimizer, "value", optimizer), lr=lr, steps=steps, init=init, seed=seed,
                         factorized_width=factorized, early_stop=early_stop, backend=backend,
                         checkpoints=checkpoints, schedule=schedule, decay_from=decay_from).validate()
    tol = with_tolerances(default_tolerances(config), direction_deg=tol_angle, finite_relative=tol_fin,
                          finite_absolute=tol_fin_abs, loss_gap=tol_gap, leak=tol_leak, composition=tol_comp,
                          heldout_leak=tol_heldout_leak, heldout_composition=tol_heldout_comp)
    return config, tol


def run_verify(*, input_path, input_format="auto", window, vocab, unit, oov, embeddings, strict, out, radii, svm_method,
               optimizer, lr, steps, init, seed, factorized, early_stop, backend, checkpoints, schedule,
               decay_from, holdout, probes, tol_angle, tol_fin, tol_fin_abs, tol_gap, tol_leak, tol_comp,
               tol_heldout_leak, tol_heldout_comp):
    """Shared by verify and report: analyze, train (with a progress bar), judge, and write
    W_trained.npy, checkpoints.npz, trajectory.json and results.json with its verify section.
    Takes every option of ``verify_cmd`` by name (its signature holds the defaults).

    Returns (predictions, results dict, VerifyResult, output directory)."""
    from theorycheck.io import write_json, write_npy
    from theorycheck.theories.base import stored_path
    from theorycheck.verify import build_heldout, verify

    config, tol = verify_options(optimizer, lr, steps, init, seed, factorized, early_stop, backend, checkpoints,
                                 schedule, decay_from, tol_angle, tol_fin, tol_fin_abs, tol_gap, tol_leak,
                                 tol_comp, tol_heldout_leak, tol_heldout_comp)
    pred, results, out_dir, held = run_analyze(input_path, window, vocab, unit, oov, embeddings, strict, out, radii,
                                               svm_method, holdout=holdout, seed=seed, input_format=input_format)
    heldout = build_heldout(pred, held, probes=probes, seed=seed)
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[status]}"), console=err_console, transient=True,
                  disable=not err_console.is_terminal) as bar:
        task = bar.add_task("train", total=config.steps, status="")

        def on_checkpoint(rec):
            bar.update(task, status=f"cos {rec['cos_svm_orthogonal_part']:.4f}  fin {rec['fin_distance']:.2e}  "
                                    f"leak {rec['train_leak_max']:.1e}")

        result = verify(pred, config, tol, heldout, on_step=lambda s: bar.update(task, completed=s) if s % 50 == 0 else None,
                        on_checkpoint=on_checkpoint)
    verdict = result.verdict.as_dict()
    write_npy(out_dir / "W_trained.npy", result.train.W)
    result.trajectory.save(out_dir / "checkpoints.npz")
    write_json(out_dir / "trajectory.json", result.trajectory_json())
    results["command"] = "verify"
    results["verify"] = {**verdict, "target": result.target_kind, "config": config.as_dict(),
                         "steps_done": result.train.steps_done,
                         "heldout_windows": heldout.size, "heldout_skipped_no_dominant_scc": heldout.skipped,
                         "inputs": {"input": stored_path(input_path), "format": input_format,
                                    "window": window, "vocab": vocab, "unit": unit, "oov": oov,
                                    "embeddings": stored_path(embeddings),
                                    "strict": strict, "svm_method": svm_method, "holdout": holdout,
                                    "probes": probes, "seed": seed},
                         "corpus_fingerprint": corpus_fingerprint(pred)}
    write_json(out_dir / "results.json", results)
    return pred, results, result, out_dir


def exit_code(result) -> int:
    """The verdict's exit code; 143 (128 + SIGTERM) when a SIGTERM stopped the run."""
    if result.train.extra.get("signal") == "SIGTERM":
        return 143
    return result.verdict.exit_code


def corpus_fingerprint(pred) -> str:
    """The fingerprint of the run's training windows and embeddings (theories.base.corpus_fingerprint)."""
    from theorycheck.theories.base import corpus_fingerprint as of_corpus

    return of_corpus(pred.corpus)


OptimizerOpt = Annotated[Optimizer | None, typer.Option(
    help="split-ngd (default; ngd with --factorized or --backend torch): normalised GD on S_fin (inverse schedule) and "
    "on its complement (constant step) separately, so the diverging part grows like lr·t instead of log t; its limit is "
    "GD's (docs/verify.md). gd: plain gradient descent (the theorem's optimiser). ngd: normalised GD, "
    "W <- W - lr_t grad/||grad|| (the papers' experiments). adam: outside the theorem (NOT APPLICABLE; for "
    "conjecture tests).", show_default=False)]
ScheduleOpt = Annotated[Schedule, typer.Option(
    help="Step sizes: auto (inverse for ngd, constant for gd and adam), inverse lr_t = lr·min(1, t0/t) "
    "(reaches W^fin; ngd with a constant step stalls about lr/2 from it), inverse-sqrt lr·min(1, sqrt(t0/t)), "
    "or constant (the papers' setting).")]


def verify_cmd(
    input_path: InputArg = None,
    input_format: FormatOpt = "auto",
    window: WindowOpt = DEFAULT_WINDOW,
    vocab: VocabOpt = DEFAULT_VOCAB,
    unit: UnitOpt = "word",
    oov: OovOpt = "drop",
    embeddings: EmbeddingsOpt = None,
    strict: StrictOpt = False,
    out: OutOpt = Path("theorycheck-results"),
    radii: RadiiOpt = "none",
    svm_method: SvmOpt = "auto",
    optimizer: OptimizerOpt = None,
    lr: Annotated[float, typer.Option(help="Step size (ngd: length of each step in Frobenius norm before the schedule; the papers used 0.01 with 4000 constant steps).", min=0.0)] = 0.05,
    steps: Annotated[int, typer.Option(help="Iteration budget (full-batch steps). The default 96,000 locates the direction to <= 1° on the bundled corpus (docs/verify.md).", min=1)] = 96000,
    schedule: ScheduleOpt = Schedule.auto,
    decay_from: Annotated[int, typer.Option(help="t0 of the decaying schedules: the step from which lr decays.", min=1)] = 1000,
    init: Annotated[Init, typer.Option(help="random (U(±1/sqrt d) entries, PyTorch's default) or zero.")] = Init.random,
    seed: SeedOpt = 0,
    factorized: Annotated[int | None, typer.Option("--factorized", help="Train W = K Q^T with this width m; the prediction becomes the nuclear-norm Graph-SVM.", min=1)] = None,
    early_stop: Annotated[bool, typer.Option("--early-stop", help="Stop at the first checkpoint where the verdict is HOLDS.")] = False,
    backend: Annotated[Backend, typer.Option(help="numpy, or torch (needs the theorycheck\\[torch] extra; uses CUDA when present).")] = Backend.numpy,
    checkpoints: Annotated[int, typer.Option(help="Number of log-spaced checkpoints (at least 8: the decay fits use the last 7).", min=2)] = 40,
    holdout: Annotated[float, typer.Option(help="Fraction of windows held out of training and used for the retrieval check (P14).", min=0.0, max=0.9)] = 0.0,
    probes: Annotated[int, typer.Option(help="Random new windows (<= 5 graph tokens + the query) for the retrieval check (P14).", min=0)] = 200,
    tol_angle: Annotated[float | None, typer.Option(help="Largest angle in degrees between the run's limit direction and W^svm for HOLDS (P10). Default 0.75.", show_default=False)] = None,
    tol_fin: Annotated[float | None, typer.Option(help="Largest ||Pi_fin W_inf - W^fin|| relative to ||W^fin|| for HOLDS (P11). Default 0.02.", show_default=False)] = None,
    tol_fin_abs: Annotated[float | None, typer.Option(help="Absolute floor of the finite-part tolerance, for W^fin = 0 (P11). Default 0.002.", show_default=False)] = None,
    tol_gap: Annotated[float | None, typer.Option(help="Largest limit of L(W) - inf L (P12). Default 0.01.", show_default=False)] = None,
    tol_leak: Annotated[float | None, typer.Option(help="Largest limit of the attention outside the label's SCC, training windows (P13). Default 0.02.", show_default=False)] = None,
    tol_comp: Annotated[float | None, typer.Option(help="Largest limit of the composition TV error, training windows (P13). Default 0.02.", show_default=False)] = None,
    tol_heldout_leak: Annotated[float | None, typer.Option(help="Largest limit of the mean attention outside the dominant SCC, held-out windows (P14). Default 0.05.", show_default=False)] = None,
    tol_heldout_comp: Annotated[float | None, typer.Option(help="Largest limit of the composition TV error, held-out (P14). Default 0.02.", show_default=False)] = None,
    theory: TheoryOpt = "li2024",
    context: ContextOpt = "last",
) -> None:
    """Train the 1-layer attention model on the corpus and judge where it converges against
    the predictions: direction -> W^svm, Pi_fin W -> W^fin, loss -> inf L, hard retrieval and
    soft composition on training and held-out windows.

    Every criterion gives an interval for the run's *limit* (last value ± a bound on how far
    the run still moves, fitted to its own decay): HOLDS when the interval lies within the
    tolerance, VIOLATED when it lies beyond, INCONCLUSIVE otherwise. The verdict states what it
    holds to and the smallest errors this run detects (its resolution); see docs/verify.md.

    Writes the analyze outputs plus DIR/trajectory.json, DIR/checkpoints.npz (W at every
    checkpoint, for `theorycheck judge`) and DIR/W_trained.npy. Exit 0 HOLDS, 1 VIOLATED,
    2 bad input, 3 NOT APPLICABLE, 4 INCONCLUSIVE (raise --steps), 130 interrupted (the
    partial trajectory is kept).

    Examples:

      theorycheck verify                                    # bundled corpus, defaults

      theorycheck verify examples/paper_cyclic_n6T4K6d8.jsonl --embeddings examples/paper_cyclic_n6T4K6d8_embeddings.json

      theorycheck verify "synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1" --optimizer gd --lr 1 --steps 20000

      theorycheck verify examples/chain.jsonl --out res/ && theorycheck judge res/ --w-fin my_W_fin.npy

      theorycheck verify --theory ntp2024 --out ntp/        # the NTP-SVM of a linear decoder (docs/theories.md)
    """
    options = dict(locals())  # every CLI option, passed on unchanged
    options = {k: (v.value if isinstance(v, Enum) else v) for k, v in options.items()}
    outcome = run_theory(options.pop("theory"), options)  # li2024 runs run_verify, unchanged
    raise typer.Exit(outcome.exit_code)


def refuse_foreign_options(theory, command: str = "verify") -> None:
    """Options typed on the command line that the theory does not read are an error, not ignored."""
    from theorycheck.theories.base import CORPUS_OPTIONS

    foreign = [name for name in VERIFY_OPTION_NAMES if name not in (*CORPUS_OPTIONS, "out", "theory")
               and name not in theory.options and given_on_command_line(name)]
    if foreign:
        flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
        raise InputError(f"{flags} {'is not an option' if len(foreign) == 1 else 'are not options'} of theory "
                         f"{theory.name}; its options: " + ", ".join("--" + n.replace("_", "-") for n in sorted(theory.options))
                         + " (see `theorycheck theories`)")


def run_theory(theory_name: str, options: dict, out=None):
    """verify / report --theory NAME for a theory behind the plug-in interface: run it with a
    progress bar, render its verdict, return its Outcome."""
    from theorycheck.theories import get
    from theorycheck.theories.base import Request, StagedTheory

    theory = get(theory_name)
    refuse_foreign_options(theory)
    typed = frozenset(n for n in options if given_on_command_line(n))
    if not isinstance(theory, StagedTheory):  # li2024 and tian2023 draw their own progress
        outcome = theory.run(Request(options, typed, Path(out or options["out"])))
        theory.render(outcome)
        return outcome
    steps = theory.option(Request(options, typed), "steps") if "steps" in theory.options else None
    with Progress(TextColumn(f"{theory.name}: training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal or steps is None) as bar:
        task = bar.add_task("train", total=steps or 1)
        request = Request(options, typed, Path(out or options["out"]),
                          on_step=lambda s: bar.update(task, completed=s) if s % 50 == 0 else None)
        outcome = theory.run(request)
    theory.render(outcome)
    return outcome


def render_outcome(outcome) -> None:
    """An outcome's assumptions, criteria and verdict line (Theory.render's default)."""
    for a in outcome.assumptions:
        mark = {True: "[green]holds[/]", False: "[red]fails[/]", None: "[yellow]not checked[/]"}[a.get("holds")]
        console.print(f"assumption {escape(a['name'])}: {mark} — {escape(str(a.get('detail', '')))}")
    if outcome.detail is not None and outcome.detail.get("criteria"):
        render_verdict(outcome.detail)
    else:
        style = VERDICT_STYLE.get(outcome.verdict, "bold")
        head, _, rest = outcome.statement.partition(":")
        console.print(f"verdict: [{style}]{escape(head)}[/]" + (f":{escape(rest)}" if rest else ""))
    console.print(f"wrote {outcome.out_dir}/results.json ({outcome.theory})")


TheoryOpt = Annotated[str, typer.Option(
    "--theory", help="Which theory to check: li2024 (Li et al. 2024, the Graph-SVM of self-attention), ntp2024 "
    "(Thrampoulidis 2024, the NTP-SVM of a linear decoder), tian2023 (Tian et al. 2023, Scan and Snap) or an "
    "installed plug-in; `theorycheck theories` lists them with their assumptions and options.")]
ContextOpt = Annotated[Literal["last", "window-mean"], typer.Option(
    "--context", help="ntp2024: how a window becomes a context: 'last' (its last token, the bigram case) or "
    "'window-mean' (the mean embedding of its tokens).")]

VERIFY_OPTION_NAMES = tuple(inspect.signature(verify_cmd).parameters)


def register(app: typer.Typer) -> None:
    app.command("verify")(handle_errors(verify_cmd))
