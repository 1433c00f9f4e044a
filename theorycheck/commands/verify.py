"""`theorycheck verify`: train the model and judge it against the predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from theorycheck.commands.analyze import RadiiOpt, SvmOpt, run_analyze
from theorycheck.commands.common import (
    DEFAULT_VOCAB,
    DEFAULT_WINDOW,
    EmbeddingsOpt,
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
    handle_errors,
)

VERDICT_STYLE = {"HOLDS": "bold green", "VIOLATED": "bold red", "NOT APPLICABLE": "bold yellow",
                 "INCONCLUSIVE": "bold yellow", "INCOMPLETE": "bold yellow"}


def render_verdict(verdict: dict) -> None:
    table = Table(title="Criteria", title_justify="left")
    for col in ("criterion", "prediction", "measured", "tolerance", "result"):
        table.add_column(col)
    for c in verdict["criteria"]:
        value = "—" if c["value"] is None else f"{c['value']:.4g}"
        tol = "—" if c["tolerance"] is None else f"{c['relation']} {c['tolerance']:.4g}"
        result = "n/a" if not c["applies"] else ("[green]pass[/]" if c["passed"] else
                                                  ("[yellow]not yet[/]" if c.get("still_improving") else "[red]FAIL[/]"))
        table.add_row(c["id"], c["prediction"], value, tol, result)
    console.print(table)
    for reason in verdict["reasons"]:
        console.print(f"[yellow]{reason}[/]")
    console.print(f"verdict: [{VERDICT_STYLE[verdict['verdict']]}]{verdict['verdict']}[/]")


def run_verify(*, input_path, window, vocab, unit, oov, embeddings, strict, out, radii, svm_method,
               optimizer, lr, steps, init, seed, factorized, early_stop, backend, checkpoints, holdout,
               probes, tol_cos, tol_fin, tol_gap, tol_leak, tol_comp, tol_heldout_leak, tol_heldout_comp):
    """Shared by verify and report: analyze, train (with a progress bar), judge, and write
    W_trained.npy, trajectory.json and results.json with its verify section.  Takes every
    option of ``verify_cmd`` by name (its signature holds the defaults).

    Returns (predictions, results dict, VerifyResult, output directory)."""
    from theorycheck.io import write_json, write_npy
    from theorycheck.train import TrainConfig
    from theorycheck.verify import build_heldout, default_tolerances, verify, with_tolerances

    config = TrainConfig(optimizer=optimizer, lr=lr, steps=steps, init=init, seed=seed,
                         factorized_width=factorized, early_stop=early_stop, backend=backend,
                         checkpoints=checkpoints).validate()
    pred, results, out_dir, held = run_analyze(input_path, window, vocab, unit, oov, embeddings, strict, out, radii,
                                         svm_method, holdout=holdout, seed=seed)
    heldout = build_heldout(pred, held, probes=probes, seed=seed)
    tol = with_tolerances(default_tolerances(config), cos_svm_min=tol_cos, fin_distance_max=tol_fin,
                          loss_gap_max=tol_gap, leak_max=tol_leak, composition_max=tol_comp,
                          heldout_leak_max=tol_heldout_leak, heldout_composition_max=tol_heldout_comp)
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
    write_json(out_dir / "trajectory.json", result.trajectory_json())
    results["command"] = "verify"
    results["verify"] = {**verdict, "target": result.target_kind, "config": config.as_dict(),
                         "steps_done": result.train.steps_done,
                         "heldout_windows": heldout.size, "heldout_skipped_no_dominant_scc": heldout.skipped}
    write_json(out_dir / "results.json", results)
    return pred, results, result, out_dir


def verify_cmd(
    input_path: InputArg = None,
    window: WindowOpt = DEFAULT_WINDOW,
    vocab: VocabOpt = DEFAULT_VOCAB,
    unit: UnitOpt = "word",
    oov: OovOpt = "drop",
    embeddings: EmbeddingsOpt = None,
    strict: StrictOpt = False,
    out: OutOpt = Path("theorycheck-results"),
    radii: RadiiOpt = "none",
    svm_method: SvmOpt = "auto",
    optimizer: Annotated[str, typer.Option(help="gd (plain gradient descent, the theorem's), ngd (normalised GD, the papers' experiments) or adam.")] = "ngd",
    lr: Annotated[float, typer.Option(help="Step size (ngd: length of each step in Frobenius norm; the papers used 0.01 with 4000 steps).")] = 0.05,
    steps: Annotated[int, typer.Option(help="Iteration budget (full-batch steps).")] = 8000,
    init: Annotated[str, typer.Option(help="random (U(±1/sqrt d) entries) or zero.")] = "random",
    seed: SeedOpt = 0,
    factorized: Annotated[int | None, typer.Option("--factorized", help="Train W = K Q^T with this width m; the prediction becomes the nuclear-norm Graph-SVM.")] = None,
    early_stop: Annotated[bool, typer.Option("--early-stop", help="Stop at the first checkpoint where every criterion holds.")] = False,
    backend: Annotated[str, typer.Option(help="numpy, or torch (needs the theorycheck[torch] extra; uses CUDA when present).")] = "numpy",
    checkpoints: Annotated[int, typer.Option(help="Number of log-spaced checkpoints.")] = 25,
    holdout: Annotated[float, typer.Option(help="Fraction of windows held out of training and used for the retrieval check (P14).", min=0.0, max=0.9)] = 0.0,
    probes: Annotated[int, typer.Option(help="Random new windows (<= 5 graph tokens + the query) for the retrieval check (P14).", min=0)] = 200,
    tol_cos: Annotated[float | None, typer.Option(help="Minimum cos(W - Pi_fin W, W^svm), the diverging part of W (P10).")] = None,
    tol_fin: Annotated[float | None, typer.Option(help="Maximum ||Pi_fin W - W^fin|| (P11).")] = None,
    tol_gap: Annotated[float | None, typer.Option(help="Maximum L(W) - inf L (P12).")] = None,
    tol_leak: Annotated[float | None, typer.Option(help="Maximum attention outside the label's SCC, training windows (P13).")] = None,
    tol_comp: Annotated[float | None, typer.Option(help="Maximum composition TV error, training windows (P13).")] = None,
    tol_heldout_leak: Annotated[float | None, typer.Option(help="Maximum attention outside the dominant SCC, held-out (P14).")] = None,
    tol_heldout_comp: Annotated[float | None, typer.Option(help="Maximum composition TV error, held-out (P14).")] = None,
) -> None:
    """Train the 1-layer attention model on the corpus and check that it converges to the
    predictions: direction -> W^svm, Pi_fin W -> W^fin, loss -> inf L, hard retrieval and
    soft composition on training and held-out windows.

    Writes the analyze outputs plus DIR/trajectory.json and DIR/W_trained.npy. Exit 0 HOLDS,
    1 VIOLATED, 3 NOT APPLICABLE, 4 INCONCLUSIVE (the failing metrics are still converging:
    raise --steps), 130 interrupted (Ctrl-C keeps the partial trajectory).

    Default tolerances assume the default budgets (ngd: lr 0.05 and 8000 steps on the bundled
    corpus, the papers' lr 0.01 and 4000 steps on paper-size data; gd: lr 1, >= 10^4 steps);
    see docs/verify.md.
    """
    options = dict(locals())  # every CLI option, passed on unchanged
    _, _, result, out_dir = run_verify(**options)
    render_verdict(result.verdict.as_dict())
    console.print(f"wrote {out_dir}/results.json, trajectory.json, W_trained.npy, W_svm.npy, W_fin.npy")
    raise typer.Exit(result.verdict.exit_code)


def register(app: typer.Typer) -> None:
    app.command("verify")(handle_errors(verify_cmd))
