"""`theorycheck analyze`: corpus -> graphs -> W^svm, W^fin, regularization path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from theorycheck.commands.common import (
    DEFAULT_VOCAB,
    DEFAULT_WINDOW,
    EmbeddingsOpt,
    FormatOpt,
    InputArg,
    OovOpt,
    OutOpt,
    StrictOpt,
    UnitOpt,
    VocabOpt,
    WindowOpt,
    console,
    err_console,
    handle_errors,
    load_input,
    status,
    warn,
)
from theorycheck.errors import InputError

RadiiOpt = Annotated[str, typer.Option("--radii", help="Regularization-path radii R (||W||_F <= R), comma-separated; "
                                       "'auto': 1,2,5,10,20,50 for unit-norm embeddings, divided by s^2 for embeddings "
                                       "whose largest row norm is about s; 'none': no path.")]
DetailOpt = Annotated[list[str] | None, typer.Option("--detail", help="Show the SCC priority order of this query token (repeatable; 'all' for every query).")]
SvmOpt = Annotated[Literal["auto", "orthonormal", "general"], typer.Option(
    "--svm-method", help="'auto' (per-query path for orthonormal embeddings), 'orthonormal' (needs E E^T = I) "
    "or 'general' (cvxpy).")]
CertifyFlag = Annotated[bool, typer.Option("--certify", help="Attach exact certificates (W^svm KKT or Farkas, W^fin radius) to results.json; see docs/certificates.md.")]


def parse_radii(text: str) -> tuple[float, ...] | str:
    if text.strip().lower() in ("none", ""):
        return ()
    if text.strip().lower() == "auto":
        return "auto"
    try:
        radii = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--radii {text!r} is not a comma-separated list of numbers, e.g. 1,2,5,10") from None
    if not all(0 < r < float("inf") for r in radii):  # also refuses nan
        raise InputError(f"--radii {text!r}: give positive finite numbers, e.g. 1,2,5,10")
    return radii


def split_holdout(corpus, fraction: float, seed: int):
    """Random split of the windows: (training corpus, held-out corpus or None)."""
    import numpy as np

    if fraction <= 0:
        return corpus, None
    rng = np.random.default_rng([seed, 2])
    held = rng.random(corpus.n) < fraction
    if held.all() or not held.any():
        raise InputError(f"--holdout {fraction} leaves no training or no held-out window; change the fraction")
    return corpus.subset(~held, note="held_out"), corpus.subset(held)


def input_files(input_path, embeddings, input_format: str = "auto") -> list:
    """The files a run reads (for the output-is-an-input checks); a spec or the bundled corpus is none."""
    from theorycheck.corpus.readers import input_kind

    kind = input_kind(input_path, input_format)
    return [input_path if kind in ("text", "jsonl") else None, embeddings]


def run_analyze(input_path, window, vocab, unit, oov, embeddings, strict, out, radii, svm_method,
                holdout: float = 0.0, seed: int = 0, certify: bool = False, input_format: str = "auto"):
    """Shared by analyze, verify and report: load, (split), analyze, save.

    The output directory is checked first (no output may be an input, the directory must be
    writable: io.prepare_out_dir with every file analyze, verify and report write); after
    saving, outputs of an earlier run that this one did not write (W_trained.npy,
    trajectory.json, report.html, ...) are removed (io.retire_stale_outputs); verify and report
    then write theirs.

    Returns (predictions, results dict, output directory, held-out corpus or None)."""
    from theorycheck.io import (
        ANALYZE_OUTPUTS,
        LI_OUTPUTS,
        exists,
        prepare_out_dir,
        retire_stale_outputs,
    )
    from theorycheck.predictions import analyze, save_predictions

    radii_values = parse_radii(radii)
    if svm_method not in ("auto", "orthonormal", "general"):
        raise InputError(f"--svm-method {svm_method!r}: use auto, orthonormal or general")
    inputs = input_files(input_path, embeddings, input_format)
    created = not exists(out)
    out_dir = prepare_out_dir(out, inputs, LI_OUTPUTS)
    try:
        with status("reading the corpus") as spinner:
            corpus = load_input(input_path, window, vocab, unit, oov, embeddings, input_format)
            corpus, held = split_holdout(corpus, holdout, seed)
            pred = analyze(corpus, strict=strict, radii=radii_values, svm_method=svm_method,
                           progress=lambda msg: spinner.update(msg))
    except BaseException:
        if created:  # bad input leaves no trace: not even the empty directory made for it
            try:
                out_dir.rmdir()
            except OSError:
                pass
        raise
    extra = {"command": "analyze"}
    if certify:
        import time

        from theorycheck.symbolic import certify_predictions

        t0 = time.perf_counter()
        with status("certifying in exact arithmetic"):
            extra["certificates"] = certify_predictions(pred)
        pred.timings["certify"] = time.perf_counter() - t0
    results = save_predictions(pred, out_dir, extra)
    stale = retire_stale_outputs(out_dir, ANALYZE_OUTPUTS, LI_OUTPUTS)
    if stale:
        err_console.print(f"removed {', '.join(stale)} left in {out_dir} by an earlier run "
                          "(a results directory holds one run)", markup=False)
    return pred, results, out_dir, held


def unknown_detail_tokens(results: dict, detail: list[str] | None) -> list[str]:
    """Warnings for --detail tokens that select no query (they would be skipped silently)."""
    if not detail or "all" in detail:
        return []
    queries = {q["query"] for q in results["queries"]}
    vocabulary = set(results["vocabulary"])
    notes = []
    for token in dict.fromkeys(detail):
        if token in queries:
            continue
        if token in vocabulary:
            notes.append(f"--detail {token!r}: the token is in the vocabulary but never the last token of a "
                         "window, so it has no token-priority graph")
        else:
            shown = ", ".join(sorted(queries)[:8]) + (", ..." if len(queries) > 8 else "")
            notes.append(f"--detail {token!r} is not in the vocabulary; query tokens: {shown} (or 'all')")
    return notes


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    @handle_errors
    def analyze_cmd(
        input_path: InputArg = None,
        input_format: FormatOpt = "auto",
        window: WindowOpt = DEFAULT_WINDOW,
        vocab: VocabOpt = DEFAULT_VOCAB,
        unit: UnitOpt = "word",
        oov: OovOpt = "drop",
        embeddings: EmbeddingsOpt = None,
        strict: StrictOpt = False,
        out: OutOpt = Path("theorycheck-results"),
        radii: RadiiOpt = "auto",
        detail: DetailOpt = None,
        svm_method: SvmOpt = "auto",
        certify: CertifyFlag = False,
    ) -> None:
        """Compute the theory's predictions: token-priority graphs, SCC priority order, the
        Graph-SVM direction W^svm, the finite component W^fin and the regularization path.

        Writes DIR/results.json, DIR/W_svm.npy, DIR/W_fin.npy (d×d float64, convention
        s_t = x_t^T W x_last) and DIR/E.npy.  Exit 3 if an assumption of the theorem fails.

        Examples:

          theorycheck analyze                          # bundled pydoc corpus

          theorycheck analyze examples/chain.jsonl --detail q

          theorycheck analyze README.md --window 16 --vocab 500 --out res/   # any plain-text file

          theorycheck analyze 'synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1'
        """
        from theorycheck.commands.render import render_results

        pred, results, out_dir, _ = run_analyze(input_path, window, vocab, unit, oov, embeddings, strict, out, radii,
                                                svm_method, certify=certify, input_format=input_format)
        render_results(results, detail)
        for note in [*results.get("notes", []), *unknown_detail_tokens(results, detail)]:
            warn(note)
        if certify:
            from theorycheck.commands.prove import render_certificates

            render_certificates(results["certificates"])
        console.print(f"wrote {out_dir}/results.json, W_svm.npy, W_fin.npy, E.npy", markup=False)
        if not pred.applicable:
            failed = [a["name"] for a in pred.assumptions if not a["holds"]]
            console.print(f"[yellow]the theorem does not apply: {', '.join(failed)}[/]", soft_wrap=True)
            raise typer.Exit(3)
        if certify and results["certificates"]["summary"] == "rejected":
            console.print("[red]a certificate was rejected: the numeric predictions are not confirmed exactly[/]")
            raise typer.Exit(1)
