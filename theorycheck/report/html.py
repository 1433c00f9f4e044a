"""One self-contained HTML file: inline CSS, figures as data URIs, no script, no external URL.

Every string that comes from the data (tokens, sources, notes) is escaped: a corpus may
hold any text.
"""

from __future__ import annotations

import html

from theorycheck.report.data import ReportData, WindowComparison
from theorycheck.report.figures import Figure

VERDICT_MEANING = {
    "HOLDS": "every judged prediction of the theory holds on this corpus",
    "VIOLATED": "at least one prediction of the theory is violated",
    "NOT APPLICABLE": "an assumption of the theorem fails, so its predictions are not judged",
    "INCONCLUSIVE": "the failing criteria were still moving towards their predicted limits: the budget is too small",
    "INCOMPLETE": "training was interrupted before the end of the budget",
    "PREDICTIONS ONLY": "no training run in this directory: the predictions are shown, nothing is judged",
}
VERDICT_CLASS = {"HOLDS": "good", "VIOLATED": "bad"}

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --bg:#ffffff; --soft:#f5f7fa;
        --good:#1a7f37; --bad:#c62828; --warn:#a15c00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--soft); color:var(--fg);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; background: var(--bg); }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 8px; }
p.sub, .muted { color: var(--muted); }
nav { margin: 12px 0 8px; font-size: 14px; }
nav a { color: #2457a6; text-decoration: none; margin-right: 14px; }
.banner { border-radius: 8px; padding: 16px 20px; margin: 16px 0; border-left: 10px solid var(--warn);
          background: #fff6e5; }
.banner.good { border-color: var(--good); background: #e9f7ee; }
.banner.bad { border-color: var(--bad); background: #fdecec; }
.banner .verdict { font-size: 28px; font-weight: 700; letter-spacing: 0.5px; }
.banner ul { margin: 6px 0 0 18px; padding: 0; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 12px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
tr:nth-child(even) td { background: #fafbfd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv { width: auto; min-width: 420px; }
table.kv th { width: 280px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 0 28px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px; font-weight: 600; }
.pass { background: #d7f0de; color: var(--good); }
.fail { background: #fbd9d9; color: var(--bad); }
.notyet { background: #ffe9c2; color: var(--warn); }
.na { background: #e7e9ee; color: var(--muted); }
figure { margin: 12px 0 24px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); background: #fff; }
figcaption { color: var(--muted); font-size: 14px; margin-top: 6px; }
code { background: #eef1f6; padding: 1px 4px; border-radius: 3px; font-size: 13px; }
.note { border-left: 4px solid var(--warn); background: #fff6e5; padding: 8px 12px; margin: 10px 0; }
footer { margin-top: 40px; font-size: 13px; color: var(--muted); }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 4) -> str:
    """Numbers for humans: 4 significant digits, — for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """Cells must already be HTML (escaped); columns in ``numeric`` are right-aligned."""
    head = "".join(f"<th scope=\"col\">{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(items: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{esc(fmt(v, 6))}</td></tr>" for k, v in items)
    return f"<table class=\"kv\"><tbody>{rows}</tbody></table>"


def badge(criterion: dict) -> str:
    if not criterion["applies"]:
        return '<span class="badge na">n/a</span>'
    if criterion["passed"]:
        return '<span class="badge pass">holds</span>'
    if criterion.get("still_improving"):
        return '<span class="badge notyet">open</span>'
    return '<span class="badge fail">VIOLATED</span>'


def tolerance_text(c: dict) -> str:
    if c["tolerance"] is None:
        return "—"
    unit = "°" if c.get("unit") == "deg" else ""
    moving = "" if c.get("uncertainty") is None else f" (run still moves ≤ {fmt(c['uncertainty'])}{unit})"
    return f"{c['relation']} {fmt(c['tolerance'])}{unit}{moving}"


def verdict_of(data: ReportData) -> str:
    return data.verify["verdict"] if data.verify is not None else "PREDICTIONS ONLY"


# --------------------------------------------------------------------------- sections
def verdict_section(data: ReportData) -> str:
    verdict = verdict_of(data)
    parts = [f'<section id="verdict" class="banner {VERDICT_CLASS.get(verdict, "")}" role="status">',
             f'<div class="verdict">Verdict: {esc(verdict)}</div>',
             f"<div>{esc(VERDICT_MEANING.get(verdict, ''))} (exit code {data.exit_code}).</div>"]
    if data.verify is not None:
        crit = data.verify["criteria"]
        judged = [c for c in crit if c["applies"]]
        passed = sum(1 for c in judged if c["passed"])
        violated = sum(1 for c in judged if c["passed"] is False)
        if data.verify.get("statement"):
            parts.append(f"<div><strong>{esc(data.verify['statement'])}</strong></div>")
        parts.append(f"<div>{len(judged)} of {len(crit)} criteria judged: {passed} hold, {violated} violated, "
                     f"{len(judged) - passed - violated} open.</div>")
        reasons = data.verify.get("reasons", [])
        if reasons:
            parts.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>")
    else:
        parts.append("<div>Run <code>theorycheck report INPUT --out DIR</code> (without <code>--from</code>) or "
                     "<code>theorycheck verify</code> to train the model and judge it.</div>")
    parts.append("</section>")
    if data.verify is None:
        return "".join(parts)
    rows = [[f"<code>{esc(c['id'])}</code>", esc(c["prediction"]), esc(c["description"]),
             esc(fmt(c["value"])), esc(tolerance_text(c)), badge(c), esc(c.get("note", ""))]
            for c in data.verify["criteria"]]
    parts.append('<h2 id="criteria">Criteria</h2>')
    parts.append('<p class="muted">Each criterion checks one prediction of THEORY.md §8 (P10–P18) at the last '
                 "checkpoint of training; <em>n/a</em> marks criteria that are reported but not judged.</p>")
    parts.append(table(["criterion", "THEORY", "what is measured", "measured", "tolerance", "result", "note"],
                       rows, numeric={3}))
    return "".join(parts)


def assumptions_section(data: ReportData) -> str:
    r = data.results
    rows = [[esc(a["name"]), '<span class="badge pass">holds</span>' if a["holds"] else
             '<span class="badge fail">fails</span>', esc(a["detail"])] for a in r["assumptions"]]
    emb = r.get("embeddings", {})
    out = ['<h2 id="assumptions">Assumptions checked</h2>', table(["assumption", "status", "detail"], rows)]
    out.append(key_values([("embeddings", emb.get("kind")), ("dimension d", emb.get("dimension")),
                           ("rank of E", emb.get("rank")), ("orthonormal", emb.get("orthonormal")),
                           ("linearly independent", emb.get("linearly_independent"))]))
    return "".join(out)


def corpus_section(data: ReportData) -> str:
    corpus = data.results["corpus"]
    graphs = data.results["graphs"]
    corpus_items = [(k.replace("_", " "), (f"{100 * v:.2f}%" if k == "unrealizable_fraction" else v))
                    for k, v in corpus.items()]
    graph_items = [(k.replace("_", " "), v) for k, v in graphs.items()]
    return ('<h2 id="corpus">Corpus and token-priority graphs</h2><div class="grid">'
            f"<div><h3>Corpus</h3>{key_values(corpus_items)}</div>"
            f"<div><h3>Token-priority graphs</h3>{key_values(graph_items)}</div></div>")


def solver_section(data: ReportData) -> str:
    r = data.results
    out = ['<h2 id="solvers">Solver diagnostics</h2><div class="grid">']
    svm = r.get("svm")
    if svm:
        items = [("method", svm["method"]), ("status", svm["status"]), ("‖W^svm‖_F", svm["norm"]),
                 ("min margin (should be 1)", svm["min_margin"]), ("max constraint violation", svm["max_violation"]),
                 ("KKT residual", svm["kkt_residual"]), ("min dual variable", svm["min_dual"]),
                 ("variables", svm.get("variables")), ("constraints", svm.get("constraints"))]
        out.append(f"<div><h3>Graph-SVM (W^svm)</h3>{key_values(items)}</div>")
    else:
        out.append('<div><h3>Graph-SVM (W^svm)</h3><p class="note">Infeasible: no W separates the priorities; '
                   "the Farkas certificate is in results.json (<code>infeasibility_certificate</code>).</p></div>")
    fin = r["finite"]
    items = [("status", fin["status"]), ("dim S_fin", fin["dimension"]), ("‖W^fin‖_F", fin["norm"]),
             ("inf L = L̄(W^fin)", fin["loss_infimum"]), ("gradient norm", fin["gradient_norm"]),
             ("moment residual", fin["moment_residual"]), ("iterations", fin.get("iterations")),
             ("windows with a cyclic label SCC", fin.get("cyclic_windows")),
             ("‖Π_fin W^svm‖ (should be 0)", fin.get("svm_projection_norm"))]
    out.append(f"<div><h3>Finite component (W^fin)</h3>{key_values(items)}</div></div>")
    if r.get("path"):
        rows = [[esc(fmt(p["R"])), esc(f"{p['cos_svm']:.6f}"), esc(f"{p['fin_distance']:.3e}"), esc(fmt(p["loss"], 6)),
                 "yes" if p["resolved"] else "no (loss flat)"] for p in r["path"]]
        out.append("<h3>Regularization path W_R = argmin_{‖W‖≤R} L(W) (P16)</h3>")
        out.append(table(["R", "cos(W_R, W^svm)", "‖Π_fin W_R − W^fin‖", "loss", "resolved"], rows, numeric={0, 1, 2, 3}))
    if data.verify is not None:
        cfg = data.verify.get("config", {})
        traj = data.trajectory or {}
        items = [("optimizer", cfg.get("optimizer")), ("learning rate", cfg.get("lr")), ("step budget", cfg.get("steps")),
                 ("steps done", data.verify.get("steps_done")), ("initialisation", cfg.get("init")),
                 ("seed", cfg.get("seed")), ("parametrization", traj.get("parametrization")),
                 ("target direction", data.verify.get("target")), ("backend", cfg.get("backend")),
                 ("held-out windows judged", data.verify.get("heldout_windows")),
                 ("held-out windows without a dominant SCC (not predicted)", data.verify.get("heldout_skipped_no_dominant_scc")),
                 ("interrupted", traj.get("interrupted")), ("stopped early", traj.get("stopped_early"))]
        out.append(f"<h3>Training</h3>{key_values(items)}")
    if data.timings:
        out.append("<h3>Timings (s)</h3>" + key_values(list(data.timings.items())))
    return "".join(out)


def figure_html(f: Figure) -> str:
    return (f'<figure id="fig-{esc(f.id)}"><h3>{esc(f.title)}</h3>'
            f'<img src="{f.uri}" alt="{esc(f.alt)}" loading="eager">'
            f"<figcaption>{esc(f.caption)}</figcaption></figure>")


def distribution_text(dist: dict[str, float] | None, limit: int = 5) -> str:
    if dist is None:
        return "—"
    if not dist:
        return "none"
    items = list(dist.items())
    text = ", ".join(f"{t}: {p:.3f}" for t, p in items[:limit])
    return text + (f", … (+{len(items) - limit})" if len(items) > limit else "")


def windows_table(rows: list[WindowComparison]) -> str:
    body = [[f"<code>{esc(' '.join(r.window))}</code>", esc(r.status), esc(" ".join(r.retrieved) or "—"),
             esc(distribution_text(r.automaton if r.status == "determined" else None)),
             esc(distribution_text(r.model)), esc(fmt(r.leak)), esc(fmt(r.tv))] for r in rows]
    return table(["window (last = query)", "automaton", "retrieved SCC tokens", "automaton distribution",
                  "trained model's attention", "model mass outside", "TV(model, automaton)"], body, numeric={5, 6})


def render_html(data: ReportData, figures: list[Figure], rows: list[WindowComparison],
                scansnap_html: str | None = None, scansnap_note: str | None = None) -> str:
    by_id = {f.id: f for f in figures}
    source = data.results["corpus"].get("source", "")
    nav = [("verdict", "Verdict"), ("criteria", "Criteria"), ("assumptions", "Assumptions"), ("corpus", "Corpus"),
           ("solvers", "Solvers"), ("figures", "Figures"), ("windows", "Automaton vs model")]
    if data.verify is None:
        nav.remove(("criteria", "Criteria"))
    if scansnap_html or scansnap_note:
        nav.append(("scansnap", "Scan and Snap"))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>theorycheck report: {esc(verdict_of(data))}</title><style>{CSS}</style></head><body><main>",
             "<h1>theorycheck report</h1>",
             f'<p class="sub">Li et al. (AISTATS 2024), <em>Mechanics of Next Token Prediction with Self-Attention</em>, '
             f"checked on <strong>{esc(source)}</strong>.</p>",
             "<nav>" + "".join(f'<a href="#{i}">{esc(t)}</a>' for i, t in nav) + "</nav>",
             verdict_section(data), assumptions_section(data), corpus_section(data), solver_section(data),
             '<h2 id="figures">Figures</h2>']
    if "convergence" not in by_id:
        parts.append('<p class="note">No training trajectory in this directory, so no convergence curves.</p>')
    parts += [figure_html(by_id[i]) for i in ("convergence", "priority", "heatmaps") if i in by_id]
    parts.append('<h2 id="windows">Automaton against the trained model</h2>')
    parts.append('<p class="muted">New windows drawn from the tokens seen with each query (the last token is the '
                 "query). The automaton retrieves the dominant SCC and composes its tokens with W^fin (THEORY.md §5.5); "
                 "the trained model's attention is softmax over the window's positions of x_tᵀ W x_last, "
                 "summed per token.</p>")
    if "windows" in by_id:
        parts.append(figure_html(by_id["windows"]))
    parts.append(windows_table(rows) if rows else '<p class="note">No window could be drawn.</p>')
    if scansnap_html:  # the section brings its own heading
        parts.append(f'<div id="scansnap">{scansnap_html}</div>')
    elif scansnap_note:
        parts.append(f'<h2 id="scansnap">Scan and Snap (Tian et al. 2023)</h2><p class="note">{esc(scansnap_note)}</p>')
    parts.append(
        f'<footer><p>Convention: {esc(data.results.get("convention", ""))}.</p>'
        f"<p>Results directory files: results.json, trajectory.json, W_svm.npy, W_fin.npy, W_trained.npy, E.npy "
        f"(float64, <code>np.load(..., allow_pickle=False)</code>). theorycheck {esc(data.results.get('theorycheck_version', ''))}, "
        f"results schema {esc(data.results.get('schema_version', ''))}.</p></footer>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
