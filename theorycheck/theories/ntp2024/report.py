"""The ntp2024 section of a report: assumptions, predictions, the criteria and the verdict."""

from __future__ import annotations

from theorycheck.theories.base import ReportSection


def _criteria_rows(criteria: list[dict]) -> list[list[str]]:
    from theorycheck.report.html import badge, esc, fmt, tolerance_text

    return [[esc(c["id"]), esc(c["description"]), esc(fmt(c["value"])) + ("°" if c.get("unit") == "deg" else ""),
             esc(tolerance_text(c)), badge(c)] for c in criteria]


def ntp_section(theory, results: dict) -> ReportSection:
    from theorycheck.report.html import esc, fmt, key_values, table

    section = results.get(theory.name, {})
    verify = section.get("verify", {})
    statement = verify.get("statement") or verify.get("verdict", "")
    pred = section.get("predictions", {})
    ctx = pred.get("contexts", {})
    assumptions = section.get("assumptions", [])
    holds = {True: "holds", False: "fails", None: "not checked"}
    parts = [f"<p><b>{esc(statement)}</b></p>",
             table(["assumption", "result", "detail"],
                   [[esc(a["name"]), esc(holds[a.get("holds")]), esc(a.get("detail", ""))] for a in assumptions])]
    if pred:
        parts.append(key_values([("contexts (" + str(ctx.get("kind")) + ")", ctx.get("contexts")),
                                 ("vocabulary V", ctx.get("vocabulary")), ("dimension d", ctx.get("dimension")),
                                 ("entropy H", pred.get("entropy")), ("||W^mm||", pred.get("W_mm_norm")),
                                 ("||W^⋆||", pred.get("W_star_norm")), ("dim F", pred.get("dim_F")),
                                 ("solver", (pred.get("solver") or {}).get("method"))]))
    if verify.get("criteria"):
        parts.append(table(["criterion", "what is measured", "last checkpoint", "tolerance", "result"],
                           _criteria_rows(verify["criteria"])))
    for reason in verify.get("reasons", []):
        parts.append(f'<p class="note">{esc(reason)}</p>')
    md = [f"**{statement}**", ""]
    md += [f"- {a['name']}: {holds[a.get('holds')]} — {a.get('detail', '')}" for a in assumptions]
    if pred:
        md += ["", f"- contexts: {ctx.get('contexts')} ({ctx.get('kind')}), V = {ctx.get('vocabulary')}, "
                   f"d = {ctx.get('dimension')}; H = {fmt(pred.get('entropy'))}; ||W^mm|| = {fmt(pred.get('W_mm_norm'))}; "
                   f"||W^⋆|| = {fmt(pred.get('W_star_norm'))}"]
    md += ["", *[f"- {c['id']}: {fmt(c['value'])} ({c.get('status')})" for c in verify.get("criteria", [])]]
    return ReportSection(theory.title, "\n".join(parts), "\n".join(md) + "\n")
