"""summary.md: the verdict, criteria, assumptions, corpus and solver numbers in Markdown
(for a pull request or a terminal; the figures are in report.html)."""

from __future__ import annotations

from theorycheck.report.data import ReportData, WindowComparison
from theorycheck.report.html import (
    VERDICT_MEANING,
    distribution_text,
    fmt,
    tolerance_text,
    verdict_of,
)


def cell(value) -> str:
    """A Markdown table cell: pipes and newlines escaped."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def result_text(c: dict) -> str:
    if not c["applies"]:
        return "n/a"
    if c["passed"]:
        return "holds"
    return "open" if c.get("still_improving") else "VIOLATED"


def render_markdown(data: ReportData, rows: list[WindowComparison]) -> str:
    r = data.results
    verdict = verdict_of(data)
    out = ["# theorycheck report", "",
           f"Li et al. (AISTATS 2024) checked on `{cell(r['corpus'].get('source', ''))}`.", "",
           f"**Verdict: {verdict}**: {VERDICT_MEANING.get(verdict, '')} (exit code {data.exit_code}).", ""]
    if data.verify is not None and data.verify.get("statement"):
        out += [f"**{cell(data.verify['statement'])}**", ""]
    if data.verify is not None:
        reasons = [f"- {reason}" for reason in data.verify.get("reasons", [])]
        out += reasons + ([""] if reasons else [])
        out += ["## Criteria", "",
                md_table(["criterion", "THEORY", "what is measured", "measured", "tolerance", "result"],
                         [[c["id"], c["prediction"], c["description"], fmt(c["value"]), tolerance_text(c), result_text(c)]
                          for c in data.verify["criteria"]]), ""]
    out += ["## Assumptions", "",
            md_table(["assumption", "holds", "detail"], [[a["name"], "yes" if a["holds"] else "NO", a["detail"]]
                                                         for a in r["assumptions"]]), ""]
    out += ["## Corpus", "", md_table(["quantity", "value"], [[k.replace("_", " "), fmt(v, 6)] for k, v in r["corpus"].items()]), ""]
    out += ["## Token-priority graphs", "",
            md_table(["quantity", "value"], [[k.replace("_", " "), fmt(v, 6)] for k, v in r["graphs"].items()]), ""]
    solver_rows = []
    if r.get("svm"):
        s = r["svm"]
        solver_rows += [["Graph-SVM", f"{s['method']} [{s['status']}]"], ["‖W^svm‖_F", fmt(s["norm"], 6)],
                        ["min margin / max violation", f"{fmt(s['min_margin'], 6)} / {fmt(s['max_violation'], 3)}"],
                        ["KKT residual", fmt(s["kkt_residual"], 3)]]
    else:
        solver_rows.append(["Graph-SVM", "infeasible (certificate in results.json)"])
    f = r["finite"]
    solver_rows += [["dim S_fin", f["dimension"]], ["‖W^fin‖_F", fmt(f["norm"], 6)], ["inf L", fmt(f["loss_infimum"], 6)],
                    ["W^fin status / gradient norm", f"{f['status']} / {fmt(f['gradient_norm'], 3)}"]]
    if data.verify is not None:
        cfg = data.verify.get("config", {})
        solver_rows.append(["training", f"{cfg.get('optimizer')} lr {cfg.get('lr')}, "
                                        f"{data.verify.get('steps_done')} of {cfg.get('steps')} steps, seed {cfg.get('seed')}"])
    out += ["## Solvers and training", "", md_table(["quantity", "value"], solver_rows), ""]
    if rows:
        out += ["## Automaton against the trained model", "",
                md_table(["window", "automaton", "automaton distribution", "trained model's attention", "TV"],
                         [[" ".join(w.window), w.status,
                           distribution_text(w.automaton if w.status == "determined" else None),
                           distribution_text(w.model), fmt(w.tv)] for w in rows]), ""]
    out += ["Figures (convergence curves, priority order, score heatmaps) are in `report.html`.", ""]
    return "\n".join(out)
