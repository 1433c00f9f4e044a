"""Rich rendering of analyze results (shared by analyze, verify and report)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from theorycheck.commands.common import console


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def render_results(results: dict, detail: list[str] | None = None) -> None:
    corpus = results["corpus"]
    t = Table(title="Corpus", show_header=False, title_justify="left")
    t.add_row("source", escape(str(corpus.get("source"))))
    t.add_row("windows (realizable / read)", f"{corpus['windows']} / {corpus['windows_read']}")
    t.add_row("dropped: label not in window", f"{corpus['unrealizable_dropped']} ({100 * corpus['unrealizable_fraction']:.1f}%)")
    t.add_row("vocabulary K, dimension d", f"{corpus['vocabulary']}, {corpus['dimension']}")
    emb = results["embeddings"]
    t.add_row("embeddings", f"{escape(str(emb['kind']))} (rank {emb['rank']}, orthonormal: {emb['orthonormal']})")
    console.print(t)

    g = results["graphs"]
    t = Table(title="Token-priority graphs", show_header=False, title_justify="left")
    for key in ("graphs", "edges", "cross_scc_edges", "intra_scc_edges", "sccs", "cyclic_sccs",
                "acyclic_graphs", "cyclic_graphs", "largest_scc", "max_priority_depth"):
        t.add_row(key.replace("_", " "), _fmt(g[key]))
    console.print(t)

    t = Table(title="Predictions", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    svm = results.get("svm")
    if svm:
        t.add_row("||W^svm||_F", _fmt(svm["norm"]))
        t.add_row("Graph-SVM min margin (=1)", _fmt(svm["min_margin"]))
        t.add_row("Graph-SVM max violation", f"{svm['max_violation']:.2e}")
        t.add_row("Graph-SVM KKT residual", f"{svm['kkt_residual']:.2e}")
        t.add_row("solver", escape(f"{svm['method']} [{svm['status']}]"))
    else:
        t.add_row("Graph-SVM", "[red]infeasible[/] (certificate in results.json)")
    fin = results["finite"]
    t.add_row("dim S_fin", _fmt(fin["dimension"]))
    t.add_row("||W^fin||_F", _fmt(fin["norm"]))
    t.add_row("inf L = Lbar(W^fin)", _fmt(fin["loss_infimum"]))
    t.add_row("W^fin gradient norm / moment residual", f"{fin['gradient_norm']:.1e} / {fin['moment_residual']:.1e}")
    t.add_row("W^fin status", escape(str(fin["status"])))
    console.print(t)

    if results.get("path"):
        t = Table(title="Regularization path W_R = argmin_{||W||<=R} L(W)", title_justify="left")
        for col in ("R", "cos(W_R, W^svm)", "||Pi_fin W_R - W^fin||", "loss", "resolved"):
            t.add_column(col, justify="right")
        for p in results["path"]:
            t.add_row(_fmt(p["R"]), f"{p['cos_svm']:.6f}", f"{p['fin_distance']:.3e}", f"{p['loss']:.6g}",
                      "yes" if p["resolved"] else "[yellow]no (loss flat)[/]")
        console.print(t)

    t = Table(title="Assumptions", title_justify="left")
    t.add_column("assumption")
    t.add_column("holds")
    t.add_column("detail")
    for a in results["assumptions"]:
        t.add_row(escape(a["name"]), "[green]yes[/]" if a["holds"] else "[red]no[/]", escape(str(a["detail"])))
    console.print(t)

    if detail:
        wanted = None if "all" in detail else set(detail)
        for q in results["queries"]:
            if wanted is not None and q["query"] not in wanted:
                continue
            t = Table(title=escape(f"G^({q['query']}): {q['tokens']} tokens, {q['edges']} edges"), title_justify="left")
            t.add_column("priority level", justify="right")
            t.add_column("SCC (tokens)")
            for level, scc in zip(q["levels"], q["sccs"]):
                t.add_row(str(level), escape(" ".join(scc)))
            console.print(t)
