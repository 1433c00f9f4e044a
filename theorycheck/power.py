"""Slightly wrong predictions, to measure what a verdict can tell apart (issue "Verdicts that mean
something"; used by tests/test_power.py and benchmarks/bench_power.py).

Every family is judged on the *same* trained trajectory as the true prediction
(``verify.judge_trajectory``), so a difference in verdicts is caused by the prediction alone.

* ``swap``: one pair of SCC priorities exchanged in one query (the top and the bottom SCC of
  a query with at least two SCCs): M = E W^svm E^T, the two SCCs' values in column k swapped,
  W' = E^+ M' E^+T;
* ``svm_5pct``: a feasible W^svm error of 5 % on the scores that occur, orthogonal to S_fin:
  W' = lambda (W^svm + 0.05 ||W^svm|| N), N a random unit matrix in the span of the occurring
  (token, query) pairs with constant values on every SCC (so Pi_fin N = 0), lambda >= 1 the
  smallest scaling that keeps every Graph-SVM margin >= 1;
* ``fin_x0.95``, ``fin_x1.05``: W^fin scaled;
* ``fin_noise_5pct``: W^fin + 0.05 ||W^fin|| V, V a random unit matrix of S_fin;
* ``fin_zero``: W^fin replaced by 0 (only where W^fin != 0).
"""

from __future__ import annotations

import numpy as np

FAMILIES = ("swap", "svm_5pct", "fin_x0.95", "fin_x1.05", "fin_noise_5pct", "fin_zero")


def swap_top_bottom(pred, rng: np.random.Generator) -> np.ndarray | None:
    from theorycheck.verify import swap_scc_values

    g = pred.graphs
    candidates = [int(q) for q in g.queries if len(g.sccs_of_query(int(q))) >= 2]
    if not candidates or pred.svm is None:
        return None
    q = candidates[int(rng.integers(len(candidates)))]
    sccs = g.sccs_of_query(q)
    return swap_scc_values(pred, pred.W_svm, q, sccs[0], sccs[-1])


def feasible_svm_error(pred, rng: np.random.Generator, size: float = 0.05, tries: int = 50) -> np.ndarray | None:
    from theorycheck.svm import check_constraints

    if pred.svm is None or pred.svm.norm == 0:
        return None
    g = pred.graphs
    W = pred.W_svm
    for _ in range(tries):
        per_scc = rng.standard_normal(int(g.scc.max()) + 1)
        N = pred.score_map.adjoint(per_scc[g.scc])
        N = N - pred.subspace.project(N)
        n = np.linalg.norm(N)
        if n == 0:
            return None
        W2 = W + size * pred.svm.norm * N / n
        margin, _ = check_constraints(W2, pred.corpus.E, g)
        if margin > 0:
            return W2 / min(margin, 1.0)
    return None


def wrong_predictions(pred, seed: int = 0) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """family -> (W^svm', W^fin') with None meaning "the true one"; families that do not
    apply to this dataset (no two SCCs, W^fin = 0, ...) are left out."""
    rng = np.random.default_rng([seed, 17])
    out: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    swapped = swap_top_bottom(pred, rng)
    if swapped is not None:
        out["swap"] = (swapped, None)
    noisy = feasible_svm_error(pred, rng)
    if noisy is not None:
        out["svm_5pct"] = (noisy, None)
    W_fin = pred.W_fin
    norm = float(np.linalg.norm(W_fin))
    if norm > 1e-9:
        out["fin_x0.95"] = (None, 0.95 * W_fin)
        out["fin_x1.05"] = (None, 1.05 * W_fin)
        c = rng.standard_normal(pred.subspace.coords(W_fin).size)
        if pred.subspace.orthonormal:
            c = pred.subspace.center(c)  # block sums 0: a point of S_fin
        V = pred.subspace.matrix(c)
        V_norm = np.linalg.norm(V)
        if V_norm > 0:
            out["fin_noise_5pct"] = (None, W_fin + 0.05 * norm * V / V_norm)
        out["fin_zero"] = (None, np.zeros_like(W_fin))
    return out


def judge_families(pred, config, heldout=None, seed: int = 0, tolerances=None) -> dict:
    """Train once, then judge the true prediction and every wrong family on that trajectory.

    Returns {"truth": Judgement, family: Judgement, ...} (theorycheck.verify.Judgement)."""
    from theorycheck.verify import applicability, judge_trajectory, replace_predictions, verify

    result = verify(pred, config, tolerances, heldout, with_resolution=True)
    out = {"truth": result}
    evidence = None
    for name, (W_svm, W_fin) in wrong_predictions(pred, seed).items():
        wrong = replace_predictions(pred, W_svm=W_svm, W_fin=W_fin)
        j = judge_trajectory(result.trajectory, wrong, config, tolerances, heldout, applicability(pred, config),
                             result.train.interrupted, with_resolution=False, evidence=evidence)
        evidence = j.evidence  # the evidence does not depend on the prediction
        out[name] = j
    return out
