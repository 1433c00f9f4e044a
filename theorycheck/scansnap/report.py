"""The Scan-and-Snap section of the HTML report (self-contained: PNGs inlined as base64).

Figures (matplotlib, Agg backend): the population attention c_{l|n}(t) per class with
distinct and common tokens apart, the kappa invariant kappa_{n,l}(t) of P5, the P8
transition time t_1/2 against eta_Y on log axes with its fit and 2 K ln M / eta_Y, and
the P10/P11 entropy grid.  Everything is drawn from ``scansnap.json`` alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

OUTCOME_COLOURS = {"HOLDS": "#1a7f37", "VIOLATED": "#cf222e", "NOT APPLICABLE": "#9a6700"}
MAX_CLASS_PANELS = 6


def _png(fig, figures_dir: Path | None, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    if figures_dir is not None:
        from theorycheck.io import write_bytes

        Path(figures_dir).mkdir(parents=True, exist_ok=True)
        write_bytes(Path(figures_dir) / name, data)
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _fmt(x) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4g}"
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return html.escape(str(x))


def class_grid(n_panels: int, panel_height: float):
    """Up to three panels per row, one per class."""
    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    return plt.subplots(rows, cols, figsize=(4.2 * cols, panel_height * rows + 0.4), squeeze=False,
                        layout="constrained")


def attention_figure(fig_data: dict):
    classes = fig_data["classes"][:MAX_CLASS_PANELS]
    if not classes:
        return None
    steps = [s + 1 for s in fig_data["steps"]]
    fig, axes = class_grid(len(classes), panel_height=3.2)
    for ax, cl in zip(axes.ravel(), classes):
        for kind, curve in zip(cl["kind"], cl["attention"]):
            colour = "#0969da" if kind == "distinct" else "#cf222e"
            ax.plot(steps, curve, color=colour, alpha=0.75, lw=1.2)
        ax.set_xscale("log")
        ax.set_title(cl["class"], fontsize=9)
        ax.set_xlabel("step t + 1")
        ax.set_ylabel("c_{l|n}(t)")
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    axes[0, 0].plot([], [], color="#0969da", label="distinct tokens")
    axes[0, 0].plot([], [], color="#cf222e", label="common tokens")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Population attention per class (scan: distinct rise by frequency, common fall)", fontsize=10)
    return fig


def kappa_figure(fig_data: dict):
    classes = [c for c in fig_data["classes"] if c["kappa"]][:MAX_CLASS_PANELS]
    if not classes:
        return None
    steps = [s + 1 for s in fig_data["steps"]]
    fig, axes = class_grid(len(classes), panel_height=3.0)
    for ax, cl in zip(axes.ravel(), classes):
        for k in cl["kappa"]:
            ax.plot(steps, k["values"], lw=1.2, label=k["token"])
        ax.set_xscale("log")
        ax.set_title(cl["class"], fontsize=9)
        ax.set_xlabel("step t + 1")
        ax.set_ylabel("kappa_{n,l}(t)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    fig.suptitle("P5: kappa = (e^{-2z(0)} - e^{-2z(t)}) / P(l|n)^2 per eligible distinct token\n"
                 "(the theory: the curves coincide)", fontsize=10)
    return fig


def transition_figure(check_p8: dict):
    d = check_p8.get("details", {})
    ys, th = d.get("eta_y"), d.get("t_half")
    if not ys or not th or not all(isinstance(t, (int, float)) and math.isfinite(t) for t in th):
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    ax.loglog(ys, th, "o", color="#0969da", label="measured t_1/2")
    slope = check_p8.get("statistic")
    if isinstance(slope, float) and math.isfinite(slope):
        lx = [math.log(y) for y in ys]
        ly = [math.log(t) for t in th]
        icept = sum(ly) / len(ly) - slope * sum(lx) / len(lx)
        ax.loglog(ys, [math.exp(icept + slope * x) for x in lx], "-", color="#0969da", lw=1,
                  label=f"fit, slope {slope:.3f}")
    theory = d.get("theory_2KlnM_over_eta")
    if theory:
        ax.loglog(ys, theory, "--", color="#6e7781", label="2 K ln M / eta_Y")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ys, [f"{y:g}" for y in ys])
    ax.set_xlabel("eta_Y")
    ax.set_ylabel("t_1/2 (steps)")
    ax.set_title("P8: transition time vs decoder learning rate", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def entropy_figure(check_p10: dict):
    d = check_p10.get("details", {})
    ezs, ratios, grid = d.get("eta_z"), d.get("ratios"), d.get("mean_entropy")
    if not ezs or not ratios or not grid:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    for ez, row in zip(ezs, grid):
        ax.plot(ratios, row, "o-", label=f"eta_Z = {ez:g}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ratios, [f"{q:g}" for q in ratios])
    ax.set_xlabel("eta_Y / eta_Z")
    ax.set_ylabel("final distinct-token entropy H_n (nats)")
    ax.set_title("P10/P11: sparser with larger eta_Z, denser with larger ratio", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _checks_table(checks: dict) -> str:
    rows = []
    for cid, c in checks.items():
        colour = OUTCOME_COLOURS.get(c["outcome"], "#000")
        failed = [k for k, p in c["preconditions"].items() if p["required"] and not p["holds"]]
        note = c["reason"] or ""
        if failed:
            note = "preconditions failed: " + ", ".join(failed)
        rows.append(
            f"<tr><td>{cid}</td><td>{html.escape(c['name'])}</td>"
            f'<td style="color:{colour};font-weight:bold">{c["outcome"]}</td>'
            f"<td>{_fmt(c['statistic'])}</td><td>{html.escape(c['relation'])} {_fmt(c['threshold'])}</td>"
            f"<td>{c['eligible']}</td><td>{'yes' if c['preconditions_held'] else 'no'}</td>"
            f"<td>{html.escape(note)}{' (soft)' if c.get('soft') else ''}</td></tr>")
    return ("<table class=\"scansnap-checks\"><thead><tr><th>id</th><th>check</th><th>outcome</th><th>statistic</th>"
            "<th>threshold</th><th>eligible</th><th>preconditions held</th><th>note</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _comparison_html(comp: dict | None) -> str:
    if not comp:
        return ""
    parts = [f"<h3>Both theories on this corpus</h3><p>{html.escape(comp.get('summary', ''))}</p>"]
    for name, key in (("Tian et al. 2023", "tian"), ("Li et al. 2024", "li")):
        th = comp.get(key, {})
        failed = th.get("failed_preconditions") or {}
        state = "applies" if th.get("applies") else "does not apply"
        items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in failed.items())
        parts.append(f"<p><b>{name}</b> {state}.</p>" + (f"<ul>{items}</ul>" if items else ""))
    if comp.get("per_class"):
        rows = "".join(
            f"<tr><td>{html.escape(p['class'])}</td><td>{html.escape(str(p['li_top_scc']))}</td>"
            f"<td>{html.escape(str(p['tian_winner']))}</td><td>{html.escape(str(p['trained_yz_winner']))}</td>"
            f"<td>{html.escape(p['trained_follows'])}</td><td>{'yes' if p['agree'] else 'no' if p['agree'] is not None else 'n/a'}</td></tr>"
            for p in comp["per_class"])
        parts.append("<table><thead><tr><th>class (m -> n)</th><th>Li: top SCC present</th><th>Tian: most frequent "
                     "distinct token</th><th>trained Y/Z winner</th><th>trained model follows</th><th>agree</th></tr>"
                     f"</thead><tbody>{rows}</tbody></table>")
    return "".join(parts)


def scansnap_html_section(results: dict, figures_dir: str | Path | None = None) -> str:
    """A self-contained HTML fragment (``<section>``) for the report; PNGs inlined as base64
    and, when ``figures_dir`` is given, also written there."""
    figures_dir = Path(figures_dir) if figures_dir is not None else None
    checks = results.get("checks", {})
    verdict = results.get("verdict", {})
    corpus = results.get("corpus", {})
    fig_data = results.get("figures", {"classes": [], "steps": []})
    imgs = []
    for name, fig in (("scansnap_attention.png", attention_figure(fig_data)),
                      ("scansnap_kappa.png", kappa_figure(fig_data)),
                      ("scansnap_transition.png", transition_figure(checks.get("P8", {}))),
                      ("scansnap_entropy.png", entropy_figure(checks.get("P10", {})))):
        if fig is not None:
            imgs.append(_png(fig, figures_dir, name))
    colour = OUTCOME_COLOURS.get(verdict.get("outcome"), "#000")
    head = (f"<h2>Scan and Snap (Tian, Wang, Chen &amp; Du, NeurIPS 2023)</h2>"
            f"<p>Corpus: {html.escape(str(corpus.get('source', '')))}; M = {corpus.get('vocabulary_M')}, "
            f"{corpus.get('classes_K')} sequence classes, {corpus.get('samples')} samples, mean context length "
            f"{_fmt(corpus.get('mean_context_length'))}.</p>"
            f'<p>Verdict: <b style="color:{colour}">{html.escape(str(verdict.get("outcome")))}</b> '
            f"(a failed check counts against the theory only when its preconditions held).</p>")
    figs = "".join(f'<div class="scansnap-figure">{img}</div>' for img in imgs)
    return (f'<section class="scansnap">{head}{_checks_table(checks)}{figs}'
            f"{_comparison_html(results.get('comparison'))}</section>")


def scansnap_html_page(results: dict, figures_dir: str | Path | None = None) -> str:
    """The section wrapped in a minimal standalone page (written by ``scan-snap`` as scansnap.html)."""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #d0d7de;padding:3px 6px;font-size:13px}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>theorycheck scan-snap</title>"
            f"<style>{style}</style></head><body>{scansnap_html_section(results, figures_dir)}</body></html>\n")
