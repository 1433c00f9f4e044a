"""li2024: Li, Huang, Ildiz, Rawat & Oymak (AISTATS 2024), "Mechanics of Next Token Prediction with
Self-Attention" (THEORY.md), behind the theory interface.  Its pipeline and output contract are
`theorycheck analyze` / `verify` / `judge` unchanged: this class only wires them in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from theorycheck.theories.base import ReportSection, Request, Theory


class Li2024(Theory):
    name = "li2024"
    title = "Graph-SVM of 1-layer self-attention (Li et al. 2024)"
    citation = ("Y. Li, Y. Huang, M. E. Ildiz, A. S. Rawat, S. Oymak, Mechanics of Next Token Prediction with "
                "Self-Attention, AISTATS 2024")
    summary = ("GD on 1-layer self-attention W: hard retrieval of the top SCC of each query's token-priority "
               "graph (W/||W|| -> W^svm, the Graph-SVM) and soft composition inside it (Pi_fin W -> W^fin).")
    assumption_names = (
        ("realizable labels", "some window has its label inside the window"),
        ("linearly independent embeddings", "rank E = K (the identity head exists)"),
        ("Graph-SVM feasible", "the max-margin problem over the priority graphs has a solution (else a Farkas certificate)"),
        ("W^fin attained", "the reduced loss has a minimiser on the cyclic subspace S_fin"),
    )
    prediction_arrays = (("W_svm", "the Graph-SVM direction, d×d (s_t = x_t^T W x_last)"),
                         ("W_fin", "the finite component in S_fin, d×d"))
    options = frozenset({"strict", "radii", "svm_method", "optimizer", "lr", "steps", "init", "seed", "factorized",
                         "early_stop", "backend", "checkpoints", "schedule", "decay_from", "holdout", "probes",
                         "tol_angle", "tol_fin", "tol_fin_abs", "tol_gap", "tol_leak", "tol_comp",
                         "tol_heldout_leak", "tol_heldout_comp"})

    def run(self, request: Request):
        from theorycheck.commands.verify import exit_code, run_verify
        from theorycheck.theories.base import Outcome

        options = {k: v for k, v in request.options.items() if k not in ("theory", "context")}
        options["out"] = request.out
        pred, results, result, out_dir = run_verify(**options)
        verdict = result.verdict
        summary = {"W_svm_norm": float(np.linalg.norm(pred.W_svm)), "W_fin_norm": float(np.linalg.norm(pred.W_fin)),
                   "loss_infimum": pred.finite.loss, "queries": int(pred.graphs.queries.size),
                   "dim_S_fin": int(pred.subspace.dim)}
        return Outcome(self.name, verdict.verdict, exit_code(result), verdict.statement(), out_dir, results,
                       verdict.as_dict(), summary, tuple(pred.assumptions))

    def render(self, outcome) -> None:
        """verify's console output: the criteria table, the verdict line, the files written."""
        from theorycheck.commands.common import console
        from theorycheck.commands.verify import render_verdict

        render_verdict(outcome.detail)
        console.print(f"wrote {outcome.out_dir}/results.json, trajectory.json, checkpoints.npz, W_trained.npy, "
                      "W_svm.npy, W_fin.npy")

    def rejudge(self, run_dir: Path, arrays: dict[str, np.ndarray], out: Path | None = None):
        from theorycheck.commands.judge import judge_arrays
        from theorycheck.theories.base import Outcome

        judgement, results = judge_arrays(run_dir, arrays.get("W_svm"), arrays.get("W_fin"))
        v = judgement.verdict
        return Outcome(self.name, v.verdict, v.exit_code, v.statement(), Path(out or run_dir), results, v.as_dict())

    def report_section(self, results: dict) -> ReportSection:
        from theorycheck.report.html import esc

        verify = results.get("verify") or {}
        statement = verify.get("statement") or verify.get("verdict") or "predictions only"
        rows = "".join(f"<li>{esc(a['name'])}: {'holds' if a['holds'] else 'fails'} — {esc(a['detail'])}</li>"
                       for a in results.get("assumptions", []))
        html = (f"<p><b>{esc(statement)}</b></p><ul>{rows}</ul>"
                '<p>The full report of this theory (criteria, figures, automaton) is '
                '<a href="li2024/report.html">li2024/report.html</a>.</p>')
        md = (f"**{statement}**\n\n" + "".join(f"- {a['name']}: {'holds' if a['holds'] else 'fails'} — {a['detail']}\n"
                                              for a in results.get("assumptions", []))
              + "\nFull report: li2024/report.html\n")
        return ReportSection(self.title, html, md)


THEORY = Li2024()
