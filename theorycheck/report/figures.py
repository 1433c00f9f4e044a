"""Report figures: matplotlib (Agg canvas, no pyplot state) rendered to base64 PNG data URIs.

Each ``*_figure`` function returns a :class:`Figure` with the image as a ``data:`` URI,
a title, a caption and an alt text, so the HTML needs no file and no network.
"""

from __future__ import annotations

import base64
import io
import textwrap
from dataclasses import dataclass

import matplotlib
import networkx as nx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from theorycheck.report.data import (
    ReportData,
    WindowComparison,
    cyclic_structure,
    heatmap_tokens,
    most_cyclic_queries,
    score_matrix,
    seen_pairs,
)

DPI = 100
COLORS = {"train": "#1f77b4", "heldout": "#d62728", "svm": "#2ca02c", "fin": "#9467bd", "tol": "#555555"}
NODE_COLORS = {"cyclic": "#fdb863", "singleton": "#b2d3e8", "collapsed": "#dddddd"}
MAX_SCCS_PER_LEVEL = 6  # more SCCs on one priority level are merged into one "+N" node
LABEL_TOKENS = 6  # tokens written in an SCC node before "... (+n)"


@dataclass(frozen=True)
class Figure:
    id: str
    title: str
    caption: str
    alt: str
    uri: str  # data:image/png;base64,...


def png_data_uri(fig: MplFigure, tight_bbox: bool = False) -> str:
    """PNG bytes of ``fig`` as a data URI (no Software/date metadata, so output is reproducible).
    ``tight_bbox`` crops to the drawn artists (one more layout pass: only where a legend or
    label may stick out of a layout made by tight_layout)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight" if tight_bbox else None)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _short(token: str, width: int = 12) -> str:
    return token if len(token) <= width else token[: width - 1] + "…"


# --------------------------------------------------------------------------- 1. convergence
def _series(checkpoints: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a metric, step 0 left out (log axis) and missing values skipped."""
    pts = [(r["step"], r.get(key)) for r in checkpoints if r["step"] > 0 and isinstance(r.get(key), (int, float))]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts, strict=True)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def _panel(ax, checkpoints, lines, title, tolerances=(), log_y=False):
    """Plot ``lines`` = [(key, label, color, style)] against the step on a log x-axis."""
    plotted = []
    for key, label, color, style in lines:
        x, y = _series(checkpoints, key)
        if x.size:
            ax.plot(x, y, style, color=color, label=label, lw=1.6, ms=3)
            plotted.append(y)
    for value, label, color in tolerances:
        if value is not None:
            ax.axhline(value, color=color, ls=":", lw=1.2, label=label)
            plotted.append(np.array([value]))
    ax.set_xscale("log")
    values = np.concatenate(plotted) if plotted else np.zeros(0)
    if log_y and values.size and np.all(values > 0) and values.max() > 30 * values.min():
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_locator(NullLocator())  # minor log ticks cost seconds and say little here
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step (log scale)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, which="major", alpha=0.3)
    if plotted:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="#777")


def fin_tolerance(data: ReportData, tol: dict) -> float | None:
    """max(rel ||W^fin||, abs): the finite-part tolerance of the verdict."""
    if "finite_relative" not in tol:
        return None
    norm = float(data.results.get("finite", {}).get("norm", 0.0))
    return max(tol["finite_relative"] * norm, tol.get("finite_absolute", 0.0))


def convergence_figure(data: ReportData) -> Figure:
    """Trajectory metrics against the step (log axis) with the verdict's tolerance lines."""
    cps = data.checkpoints
    tol = data.verify.get("tolerances", {})
    fig = MplFigure(figsize=(16, 7.6))
    axes = fig.subplots(2, 4).ravel()
    _panel(axes[0], cps, [("cos_svm_orthogonal_part", "cos(W − Π_fin W, W^svm)", COLORS["svm"], "-o"),
                          ("cos_svm", "cos(W, W^svm)", COLORS["train"], "--")],
           "P10  direction", [(float(np.cos(np.radians(tol["direction_deg"]))) if "direction_deg" in tol else None,
                               "cos of the tolerance angle", COLORS["tol"])])
    _panel(axes[1], cps, [("fin_distance", "‖Π_fin W − W^fin‖_F", COLORS["fin"], "-o")],
           "P11  finite component", [(fin_tolerance(data, tol), "tolerance", COLORS["tol"])], log_y=True)
    _panel(axes[2], cps, [("loss_gap", "L(W) − inf L", COLORS["train"], "-o")],
           "P12  loss gap", [(tol.get("loss_gap"), "tolerance", COLORS["tol"])], log_y=True)
    _panel(axes[3], cps, [("norm", "‖W‖_F", COLORS["train"], "-o")], "norm of W (grows without bound)", log_y=True)
    _panel(axes[4], cps, [("train_leak_max", "training, max", COLORS["train"], "-o"),
                          ("train_leak_mean", "training, mean", COLORS["train"], "--"),
                          ("heldout_leak_max", "held-out, max", COLORS["heldout"], "-o"),
                          ("heldout_leak_mean", "held-out, mean", COLORS["heldout"], "--")],
           "P13/P14  attention outside the top SCC",
           [(tol.get("leak"), "tolerance (training, max)", COLORS["train"]),
            (tol.get("heldout_leak"), "tolerance (held-out, mean)", COLORS["heldout"])], log_y=True)
    _panel(axes[5], cps, [("train_composition_max", "training, max", COLORS["train"], "-o"),
                          ("heldout_composition_max", "held-out, max", COLORS["heldout"], "-o")],
           "P13/P14  composition error (TV)",
           [(tol.get("composition"), "tolerance (training)", COLORS["train"]),
            (tol.get("heldout_composition"), "tolerance (held-out)", COLORS["heldout"])], log_y=True)
    _panel(axes[6], cps, [("R_hat", "R̂ = ⟨W − W^fin, W^svm⟩/‖W^svm‖²", COLORS["svm"], "-o")], "P18  fitted R̂")
    _panel(axes[7], cps, [("min_cross_margin", "min cross-SCC score gap", COLORS["svm"], "-o")], "P15  SCC separation")
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.075, top=0.95, wspace=0.28, hspace=0.38)  # fixed grid: tight_layout costs seconds on log axes
    steps = data.verify.get("steps_done", cps[-1]["step"] if cps else 0)
    return Figure(
        "convergence", "Convergence against the iteration count",
        f"Metrics at {len(cps)} log-spaced checkpoints of {steps} steps (step 0 is left out of the log axis); "
        "dotted lines are the tolerances; the verdict judges the run's limit (last value and how far it still "
        "moves), see the criteria table.",
        "Eight line plots against the training step on a logarithmic axis: cosine of W with the Graph-SVM "
        "direction, distance of the finite component to W^fin, loss gap, norm of W, attention outside the top "
        "SCC, composition error, fitted R-hat and the minimum cross-SCC score gap, with tolerance lines.",
        png_data_uri(fig))


# --------------------------------------------------------------------------- 2. SCC condensation
def collapsed_condensation(query: dict, max_per_level: int = MAX_SCCS_PER_LEVEL) -> nx.DiGraph:
    """The condensation DAG of G^(k) (nodes = SCCs, attributes members/level/cyclic/count),
    with levels holding more than ``max_per_level`` SCCs reduced to max_per_level - 1 of
    them (the query's SCC first, then the largest) plus one merged node.  Merging nodes of
    one level keeps a DAG: an edge always goes to a strictly deeper level (longest-path
    depth, THEORY.md §2.2)."""
    sccs, levels = query["sccs"] or [[str(t) for t in s] for s in query["scc_indices"]], query["levels"]
    node_of = list(range(len(sccs)))
    g = nx.DiGraph()
    for level in sorted(set(levels)):
        members = [j for j in range(len(sccs)) if levels[j] == level]
        members.sort(key=lambda j: (query["query_index"] not in query["scc_indices"][j], -len(sccs[j]), j))
        keep, merged = (members, []) if len(members) <= max_per_level else (members[: max_per_level - 1], members[max_per_level - 1:])
        for j in keep:
            g.add_node(j, members=list(sccs[j]), level=level, cyclic=len(sccs[j]) >= 2, count=1,
                       has_query=query["query_index"] in query["scc_indices"][j])
        if merged:
            node = ("merged", level)
            g.add_node(node, members=[t for j in merged for t in sccs[j]], level=level, cyclic=False,
                       count=len(merged), has_query=any(query["query_index"] in query["scc_indices"][j] for j in merged))
            for j in merged:
                node_of[j] = node
    g.add_edges_from((node_of[a], node_of[b]) for a, b in query["condensation_edges"])
    return g


def _node_label(attrs: dict) -> str:
    members = [_short(t) for t in attrs["members"]]
    head = f"+{attrs['count']} SCCs, {len(members)} tokens" if attrs["count"] > 1 else ""
    shown = ", ".join(members[:LABEL_TOKENS]) + (f", … (+{len(members) - LABEL_TOKENS})" if len(members) > LABEL_TOKENS else "")
    body = "\n".join(textwrap.wrap(shown, 22)[:3])
    return f"{head}\n{body}" if head else body


def _draw_condensation(ax, query: dict) -> None:
    g = collapsed_condensation(query)
    drawn = nx.transitive_reduction(g)  # same reachability, fewer arrows
    by_level: dict[int, list] = {}
    for node, attrs in g.nodes(data=True):
        by_level.setdefault(attrs["level"], []).append(node)
    pos = {}
    for level, nodes in by_level.items():
        for i, node in enumerate(nodes):
            pos[node] = (i - (len(nodes) - 1) / 2, -level)
    for a, b in drawn.edges:
        ax.annotate("", xy=pos[b], xytext=pos[a],
                    arrowprops=dict(arrowstyle="-|>", color="#444", lw=1.0, shrinkA=16, shrinkB=16))
    for node, attrs in g.nodes(data=True):
        color = NODE_COLORS["collapsed" if attrs["count"] > 1 else ("cyclic" if attrs["cyclic"] else "singleton")]
        ax.text(*pos[node], _node_label(attrs), ha="center", va="center", fontsize=8, zorder=3,
                bbox=dict(boxstyle="round,pad=0.4", fc=color, ec="black", lw=2.2 if attrs["has_query"] else 0.6))
    width = max(len(v) for v in by_level.values())
    depth = max(by_level)
    ax.set_xlim(-width / 2 - 0.2, width / 2 + 0.2)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.set_yticks([-lv for lv in sorted(by_level)], [f"level {lv}" for lv in sorted(by_level)], fontsize=8)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    n_cyc, n_levels, cyc_tokens = cyclic_structure(query)
    n_scc = len(query["scc_indices"])
    ax.set_title(f"G^({_short(query['query'])}): {_plural(query['tokens'], 'token')}, {_plural(n_scc, 'SCC')}\n"
                 f"{n_cyc} cyclic ({_plural(cyc_tokens, 'token')}), {_plural(n_levels, 'level')}", fontsize=9, loc="left")


def condensation_figure(data: ReportData, count: int = 3) -> Figure | None:
    queries = most_cyclic_queries(data.results["queries"], count)
    if not queries:
        return None
    widths = [min(MAX_SCCS_PER_LEVEL, max(q["levels"].count(lv) for lv in set(q["levels"]))) for q in queries]
    depths = [max(q["levels"]) + 1 for q in queries]
    side_by_side = sum(widths) <= 9  # small graphs in one row, large ones stacked
    if side_by_side:
        fig = MplFigure(figsize=(max(9.0, 1.4 * sum(widths) + 1.6 * len(queries)), 1.0 * max(depths) + 1.4))
        axes = fig.subplots(1, len(queries), gridspec_kw={"width_ratios": [w + 0.6 for w in widths]}, squeeze=False)[0]
    else:
        heights = [0.6 + 1.0 * d for d in depths]
        fig = MplFigure(figsize=(max(7.0, 2.1 * max(widths) + 1.5), sum(heights) + 0.6))
        axes = fig.subplots(len(queries), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, q in zip(axes, queries, strict=True):
        _draw_condensation(ax, q)
    fig.legend(handles=[Patch(fc=NODE_COLORS["cyclic"], ec="black", label="cyclic SCC (tokens tied: soft composition)"),
                        Patch(fc=NODE_COLORS["singleton"], ec="black", label="single-token SCC"),
                        Patch(fc=NODE_COLORS["collapsed"], ec="black", label="several SCCs merged for space"),
                        Patch(fc="white", ec="black", lw=2.2, label="holds the query token")],
               loc="lower center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.06 if side_by_side else 0.04, 1, 1))
    names = ", ".join(repr(q["query"]) for q in queries)
    return Figure(
        "priority", "Priority order: SCC condensations",
        f"The token-priority graphs G^(k) of the queries {names}, the ones with the most cyclic structure. "
        "Each box is a strongly connected component (its tokens), placed at its priority level "
        "(0 = highest); an arrow a → b means a has priority over b (transitive reduction drawn). "
        "The model is predicted to retrieve the highest-priority SCC present in a window.",
        f"Condensation DAGs of the token-priority graphs for queries {names}: boxes are SCCs labelled with "
        "their tokens, arranged top to bottom by priority level, with arrows from higher to lower priority.",
        png_data_uri(fig, tight_bbox=True))


# --------------------------------------------------------------------------- 3. heatmaps
def heatmaps_figure(data: ReportData) -> Figure:
    """M = E W E^T for W^svm, W^fin and the trained W (row = key token, column = query token)."""
    tokens, note = heatmap_tokens(data.results)
    labels = [_short(data.vocab[t], 10) for t in tokens]
    panels = [("M^svm = E W^svm Eᵀ", data.W_svm), ("M^fin = E W^fin Eᵀ", data.W_fin)]
    if data.W_trained is not None:
        panels.append((f"trained: E W Eᵀ at step {data.verify.get('steps_done', '?')}", data.W_trained))
    n = len(tokens)
    side = min(6.0, max(3.2, 0.16 * n + 1.5))
    fig = MplFigure(figsize=(side * len(panels) + 1.0 * len(panels), side + 0.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fontsize = 8 if n <= 20 else 6
    seen = seen_pairs(data.results, tokens)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#cfcfcf")
    for ax, (title, W) in zip(axes, panels, strict=True):
        M = score_matrix(data.E, W, tokens)
        vmax = float(np.abs(M[seen]).max()) if seen.any() else 0.0
        vmax = vmax or 1.0
        im = ax.imshow(np.ma.masked_array(M, ~seen), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        if n <= 10:  # small enough to print the numbers
            for i, j in zip(*np.nonzero(seen), strict=True):
                ax.text(j, i, f"{M[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if abs(M[i, j]) > 0.6 * vmax else "black")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(n), labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(n), labels, fontsize=fontsize)
        ax.set_xlabel("query token k (column)", fontsize=8)
        ax.set_ylabel("key token a (row)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    fig.tight_layout()
    what = "W^svm, W^fin and the trained W" if data.W_trained is not None else "W^svm and W^fin"
    return Figure(
        "heatmaps", "Score matrices",
        f"M = E W Eᵀ for {what}: entry (a, k) is the attention score of key token a when the query is k "
        f"(s_t = x_tᵀ W x_last). Shown: {note}. Grey cells: token a never occurs with query k, so the data "
        "do not constrain that score. Each panel has its own symmetric colour scale.",
        f"Heatmaps of the score matrices of {what}, rows key tokens, columns query tokens, "
        "blue negative, red positive.",
        png_data_uri(fig))


# --------------------------------------------------------------------------- 4. windows
def windows_figure(rows: list[WindowComparison]) -> Figure | None:
    """Bars: automaton's distribution next to the trained model's, per token, for each window."""
    shown = [r for r in rows if r.model is not None]
    if not shown:
        return None
    cols = min(3, len(shown))
    nrows = -(-len(shown) // cols)
    fig = MplFigure(figsize=(5.2 * cols, 3.0 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, r in zip(axes, shown, strict=False):  # spare axes hidden below
        tokens = list(dict.fromkeys(r.window))
        x = np.arange(len(tokens))
        ax.bar(x - 0.2, [r.automaton.get(t, 0.0) for t in tokens], 0.4, color=COLORS["svm"], label="automaton")
        ax.bar(x + 0.2, [r.model.get(t, 0.0) for t in tokens], 0.4, color=COLORS["train"], label="trained model")
        ax.set_xticks(x, [_short(t) for t in tokens], fontsize=8, rotation=30 if len(tokens) > 3 else 0)
        ax.set_ylim(0, 1.05)
        ax.tick_params(axis="y", labelsize=8)
        status = "no dominant SCC" if r.status != "determined" else f"TV {r.tv:.3f}"
        ax.set_title(textwrap.shorten(" ".join(r.window), 40) + f"  ({status})", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "windows", "Next-token distributions on new windows",
        "Next-token distribution on a few new windows: the automaton's (hard retrieval of the dominant SCC, "
        "then soft composition with W^fin) and the trained model's attention per token. Windows without "
        "a dominant SCC are not predicted by the theory (no green bars).",
        "Grouped bar charts, one per window: for each token of the window, the automaton's predicted "
        "probability (green) next to the trained model's attention (blue).",
        png_data_uri(fig))


def all_figures(data: ReportData, rows: list[WindowComparison]) -> list[Figure]:
    figures = [convergence_figure(data)] if data.verify is not None and data.checkpoints else []
    figures += [condensation_figure(data), heatmaps_figure(data), windows_figure(rows)]
    return [f for f in figures if f is not None]
