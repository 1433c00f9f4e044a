"""Both theories on one corpus (THEORY-scansnap.md §6.4).

* Tian et al. apply when the preconditions of the core checks hold (the next token
  determines the query, plain SGD, ...); Li et al. apply when ``theorycheck.analyze``
  finds realizable windows, linearly independent embeddings and a feasible Graph-SVM.
* When both apply, each class (m, n) gets two predictions of what attention ends up on:
  Li: the highest-priority SCC of G^(m) present in the class' windows (hard retrieval;
  the most frequent such SCC over the class' windows); Tian: the distinct token with the
  largest c~_{l|n}(0) = P-hat(l|m,n) e^{z_ml(0)} (scanning, P4), common tokens suppressed.
  The trained Y/Z model's own winner argmax_l c_{l|n}(t_end) is shown next to both.
* When only one applies, the failed preconditions of the other are listed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from theorycheck.corpus.types import Corpus
from theorycheck.errors import AssumptionViolated
from theorycheck.scansnap.stats import ScanSnapStats

CORE_CHECKS = ("P2", "P3", "P4", "P5", "P6", "P7")
MAX_WINDOWS_PER_CLASS = 500
MAX_CLASSES = 50


def tian_applicability(checks: dict) -> dict:
    applies = any(checks[k]["outcome"] != "NOT APPLICABLE" for k in CORE_CHECKS if k in checks)
    # the preconditions every core check shares (P2 carries exactly those)
    failed = {name: p["detail"] for name, p in checks.get("P2", {}).get("preconditions", {}).items()
              if p["required"] and not p["holds"]}
    return {"applies": bool(applies), "failed_preconditions": failed}


def li_applicability(corpus: Corpus):
    """(summary dict, Predictions or None) from ``theorycheck.analyze`` without the path."""
    from theorycheck import analyze

    try:
        pred = analyze(corpus, radii=())
    except AssumptionViolated as exc:
        return {"applies": False, "failed_preconditions": {"realizable labels": str(exc)}}, None
    failed = {a["name"]: a["detail"] for a in pred.assumptions if not a["holds"]}
    return {"applies": not failed, "failed_preconditions": failed,
            "realizable_windows": pred.corpus.n, "graphs": pred.graphs.summary()}, pred


def _li_levels(pred, query: int) -> dict[int, tuple[int, int]]:
    """token -> (priority level, SCC position) in G^(query); level 0 = highest priority."""
    detail = pred.graphs.query_details((), only=[query])
    if not detail:
        return {}
    d = detail[0]
    return {t: (lvl, pos) for pos, (toks, lvl) in enumerate(zip(d["scc_indices"], d["levels"])) for t in toks}


def li_class_prediction(corpus: Corpus, pred, rows: np.ndarray, query: int) -> tuple[list[int] | None, float]:
    """Most frequent highest-priority SCC present in the windows ``rows`` (Li's hard retrieval),
    and the fraction of those windows that retrieve it."""
    levels = _li_levels(pred, query)
    if not levels:
        return None, 0.0
    votes: Counter = Counter()
    counts = corpus.counts
    for i in rows[:MAX_WINDOWS_PER_CLASS]:
        toks = counts.indices[counts.indptr[i]:counts.indptr[i + 1]]
        ranked = [(levels[t][0], levels[t][1]) for t in toks.tolist() if t in levels]
        if not ranked:
            continue
        best = min(r[0] for r in ranked)
        top_sccs = {r[1] for r in ranked if r[0] == best}
        if len(top_sccs) == 1:  # otherwise the window has no dominant SCC: Li leaves it undetermined
            votes[top_sccs.pop()] += 1
    if not votes:
        return None, 0.0
    pos, n = votes.most_common(1)[0]
    members = [t for t, (_, p) in levels.items() if p == pos]
    return sorted(members), n / min(rows.size, MAX_WINDOWS_PER_CLASS)


def _follows(tian: bool, li: bool) -> str:
    return "both" if tian and li else "Tian" if tian else "Li" if li else "neither"


def compare_theories(corpus: Corpus, stats: ScanSnapStats, traj, checks: dict) -> dict:
    tian = tian_applicability(checks)
    li, pred = li_applicability(corpus)
    out = {"tian": tian, "li": li, "both_apply": bool(tian["applies"] and li["applies"]), "per_class": []}
    if not out["both_apply"]:
        missing = [name for name, th in (("Tian et al.", tian), ("Li et al.", li)) if not th["applies"]]
        reasons = {name: list((tian if name.startswith("Tian") else li)["failed_preconditions"]) for name in missing}
        out["summary"] = ("neither theory applies" if len(missing) == 2 else f"only {'Li' if missing[0].startswith('Tian') else 'Tian'} et al. applies") + \
            "; " + "; ".join(f"{k} fails: {', '.join(v)}" for k, v in reasons.items())
        return out
    vocab = stats.vocab
    c0 = traj.attention(stats, 0)
    cT = traj.attention(stats, -1)
    # Corpus windows of each class (same (query, next) key as stats; stats dropped query-only windows)
    key = corpus.last * stats.M + corpus.label
    agree = []
    for c in range(min(stats.C, MAX_CLASSES)):
        m, n = int(stats.class_query[c]), int(stats.class_next[c])
        rows = np.flatnonzero(key == m * stats.M + n)
        dts = np.flatnonzero(stats.distinct[c])
        tian_winner = int(dts[np.argmax(c0[c, dts])]) if dts.size else None
        li_scc, li_share = li_class_prediction(corpus, pred, rows, m)
        trained = int(np.argmax(cT[c]))
        levels = _li_levels(pred, m)
        support = [t for t in np.flatnonzero(stats.support[c]) if t in levels]
        rank_rho = None
        if len(support) >= 3:
            from theorycheck.scansnap.checks import spearman

            rank_rho = spearman([-levels[t][0] for t in support], stats.P[c, support])
        same = None if (tian_winner is None or li_scc is None) else tian_winner in li_scc
        if same is not None:
            agree.append(same)
        out["per_class"].append({
            "class": stats.class_label(c),
            "tian_winner": vocab[tian_winner] if tian_winner is not None else None,
            "tian_frequency_order": [vocab[t] for t in dts[np.argsort(-c0[c, dts], kind="stable")]][:10],
            "tian_common_suppressed": [vocab[t] for t in np.flatnonzero(stats.common[c])][:10],
            "li_top_scc": [vocab[t] for t in li_scc] if li_scc is not None else None,
            "li_share_of_windows": li_share,
            "li_scc_order": (pred.graphs.query_details(vocab, only=[m]) or [{}])[0].get("sccs", [])[:8],
            "trained_yz_winner": vocab[trained],
            "trained_follows": _follows(trained == tian_winner, li_scc is not None and trained in li_scc),
            "agree": same,
            "spearman_li_priority_vs_frequency": rank_rho,
        })
    out["agreement_fraction"] = float(np.mean(agree)) if agree else None
    n_diff = sum(1 for a in agree if not a)
    out["summary"] = (f"both theories apply; their predicted winners agree on {len(agree) - n_diff} of {len(agree)} "
                      "classes" + (f" and differ on {n_diff} (Li: SCC order, Tian: co-occurrence frequency)"
                                   if n_diff else ""))
    return out
