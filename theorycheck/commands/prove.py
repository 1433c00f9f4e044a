"""`theorycheck prove`: run the symbolic proof obligations; optionally certify a corpus exactly."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from theorycheck.commands.common import (
    DEFAULT_VOCAB,
    DEFAULT_WINDOW,
    EmbeddingsOpt,
    FormatOpt,
    OovOpt,
    UnitOpt,
    VocabOpt,
    WindowOpt,
    console,
    handle_errors,
    load_input,
    status,
)

OnlyOpt = Annotated[list[str] | None, typer.Option("--only", help="Run only this obligation (repeatable), e.g. --only svm-dual.")]
CertifyOpt = Annotated[str | None, typer.Option(
    "--certify", help="Also certify this corpus (same forms as `analyze INPUT`, e.g. examples/chain.jsonl or "
    "'synthetic:n=6,T=4,K=6,d=8,embeddings=orthonormal,graphs=cyclic,seed=1').", show_default=False)]


def _mark(ok: bool) -> str:
    return "[green]holds[/]" if ok else "[red]FAILS[/]"


def render_obligations(results) -> None:
    table = Table(title="Proof obligations (sympy)", title_justify="left", show_lines=True)
    table.add_column("obligation")
    table.add_column("statement", ratio=3)
    table.add_column("result")
    table.add_column("time", justify="right")
    for r in results:
        statement = f"{r.statement}\n[dim]{r.section} · scope: {r.scope}[/]"
        result = _mark(r.holds) + ("" if r.holds else f"\n{r.detail}")
        table.add_row(r.name, statement, result, f"{r.seconds:.2f} s")
    console.print(table)


def render_certificates(certs: dict) -> None:
    table = Table(title="Certificates (exact arithmetic)", title_justify="left", show_lines=True)
    table.add_column("certificate")
    table.add_column("status")
    table.add_column("detail")
    svm = certs.get("svm")
    if svm:
        detail = svm["message"]
        if svm["norm_squared"] is not None:
            detail = f"{svm['form']}; ||W*||^2 = {svm['norm_squared']}; {detail}"
        table.add_row("Graph-SVM KKT", escape(str(svm["status"])), escape(str(detail)))
    farkas = certs.get("infeasibility")
    if farkas:
        rows = ", ".join(f"{r['y']}·({r['a']}>{r['b']}|{r['k']})" for r in farkas["inequalities"][:6])
        table.add_row("Graph-SVM infeasible (Farkas)", escape(str(farkas["status"])), escape(str(rows or farkas["message"])))
    fin = certs["finite"]
    table.add_row("W^fin radius", escape(str(fin["status"])), escape(str(fin["message"])))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("prove")
    @handle_errors
    def prove_cmd(
        only: OnlyOpt = None,
        certify: CertifyOpt = None,
        input_format: FormatOpt = "auto",
        window: WindowOpt = DEFAULT_WINDOW,
        vocab: VocabOpt = DEFAULT_VOCAB,
        unit: UnitOpt = "word",
        oov: OovOpt = "drop",
        embeddings: EmbeddingsOpt = None,
    ) -> None:
        """Run the proof obligations in proofs/ (one sympy check per lemma of THEORY.md that the
        pipeline relies on) and print a table.  With --certify INPUT, also certify that corpus:
        exact KKT certificate of W^svm (or an exact Farkas certificate of infeasibility) and a
        rigorous radius around W^fin.

        Exit 0 if every obligation holds and no certificate is rejected, 1 otherwise, 3 if the
        Graph-SVM is certified infeasible (the theorem does not apply).

        Examples:

          theorycheck prove

          theorycheck prove --only svm-dual --only stable-loss

          theorycheck prove --certify examples/chain.jsonl
        """
        from theorycheck.symbolic.obligations import run_obligations

        with status("running proof obligations"):
            results = run_obligations(names=only)
        render_obligations(results)
        holds = all(r.holds for r in results)
        console.print(f"{sum(r.holds for r in results)} of {len(results)} obligations hold")
        code = 0 if holds else 1
        if certify is not None:
            from theorycheck.predictions import analyze
            from theorycheck.symbolic import certify_predictions

            with status("analyzing and certifying") as spinner:
                corpus = load_input(certify, window, vocab, unit, oov, embeddings, input_format)
                pred = analyze(corpus, radii=None, progress=lambda msg: spinner.update(msg))
                certs = certify_predictions(pred)
            render_certificates(certs)
            if certs["summary"] == "rejected":
                code = 1
            elif code == 0 and certs.get("infeasibility") and certs["infeasibility"]["status"] == "certified":
                console.print("[yellow]the Graph-SVM is infeasible (certified): the theorem does not apply[/]")
                code = 3
        raise typer.Exit(code)
