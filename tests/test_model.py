"""The loss and gradient of THEORY.md §1.3-§1.5 / §5.1 against independent implementations."""

import math

import numpy as np
import pytest

from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.graphs import build_graphs
from theorycheck.model import ScoreMap, evaluate, evaluate_shifted, hessp, window_stats


def direct_loss_and_grad(windows, labels, E, W):
    """Per-position implementation: s_t = x_t^T W x_last, a = softmax(s),
    l = -log sum_{t: tau_t = y} a_t, grad_W l = sum_t (a_t - 1[tau_t = y] a_t / p) x_t x_last^T."""
    total, grad = 0.0, np.zeros_like(W)
    for tokens, y in zip(windows, labels):
        X = E[tokens]
        xbar = E[tokens[-1]]
        s = X @ W @ xbar
        a = np.exp(s - s.max())
        a /= a.sum()
        hit = np.array([t == y for t in tokens])
        p = a[hit].sum()
        total += -math.log(p)
        coef = a - np.where(hit, a / p, 0.0)
        grad += np.outer(X.T @ coef, xbar)
    n = len(windows)
    return total / n, grad / n


def build(windows, labels, K, E=None):
    corpus = corpus_from_windows(windows, labels, tuple(f"t{i}" for i in range(K)), E=E).realizable()
    graphs = build_graphs(corpus)
    return corpus, graphs, window_stats(corpus, graphs), ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)


@pytest.mark.parametrize("embeddings", ["one-hot", "unit-norm"])
def test_loss_and_gradient_match_per_position_implementation(embeddings):
    rng = np.random.default_rng(3)
    K, d = 5, 7
    E = np.eye(K) if embeddings == "one-hot" else rng.normal(size=(K, d))
    windows = [list(rng.integers(0, K, size=rng.integers(2, 7))) for _ in range(30)]
    labels = [int(w[rng.integers(len(w))]) for w in windows]
    corpus, graphs, stats, smap = build(windows, labels, K, E)
    W = rng.normal(size=(E.shape[1], E.shape[1]))
    ev = evaluate(smap.scores(W), stats)
    loss, grad = direct_loss_and_grad(windows, labels, E, W)
    assert ev.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(smap.adjoint(ev.grad), grad, atol=1e-13)


def test_gradient_matches_central_finite_differences():
    corpus = synthetic(n=10, T=5, K=6, d=8, embeddings="unit-norm", seed=4).realizable()
    graphs = build_graphs(corpus)
    stats = window_stats(corpus, graphs)
    smap = ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)
    rng = np.random.default_rng(0)
    W = rng.normal(size=(8, 8))
    g = smap.adjoint(evaluate(smap.scores(W), stats).grad)
    h = 1e-6
    for _ in range(10):
        D = rng.normal(size=(8, 8))
        fd = (evaluate(smap.scores(W + h * D), stats, False).loss - evaluate(smap.scores(W - h * D), stats, False).loss) / (2 * h)
        assert fd == pytest.approx(np.sum(g * D), rel=1e-6, abs=1e-10)


def test_hessian_vector_product_matches_gradient_differences():
    corpus = synthetic(n=12, T=4, K=6, seed=5).realizable()
    graphs = build_graphs(corpus)
    stats = window_stats(corpus, graphs)
    rng = np.random.default_rng(1)
    m = rng.normal(size=stats.n_pairs)
    v = rng.normal(size=stats.n_pairs)
    h = 1e-6
    fd = (evaluate(m + h * v, stats).grad - evaluate(m - h * v, stats).grad) / (2 * h)
    np.testing.assert_allclose(hessp(evaluate(m, stats).entry_prob, stats, v), fd, atol=1e-8)


def test_gradient_does_not_cancel_when_the_label_takes_all_attention():
    # window (a, b, q) labelled a; scores: a 40 above b and q.  1 - pi_a = 2e^-40/(1+2e^-40).
    corpus, graphs, stats, smap = build([[0, 1, 2]], [0], 3)
    W = np.zeros((3, 3))
    W[0, 2] = 40.0
    ev = evaluate(smap.scores(W), stats)
    exact_other = math.exp(-40) / (1 + 2 * math.exp(-40))
    G = smap.adjoint(ev.grad)
    assert G[0, 2] == pytest.approx(-2 * exact_other, rel=1e-14)  # naive 1 - pi_a would give 0 or noise
    assert G[1, 2] == pytest.approx(exact_other, rel=1e-14)
    assert ev.loss == pytest.approx(math.log1p(2 * math.exp(-40)), rel=1e-14)


def test_fast_and_shifted_paths_agree_and_extreme_scores_fall_back():
    corpus = synthetic(n=40, T=6, K=8, seed=6).realizable()
    graphs = build_graphs(corpus)
    stats = window_stats(corpus, graphs)
    rng = np.random.default_rng(2)
    for scale in (1.0, 50.0, 2000.0):  # 2000 drives labels below the underflow guard
        m = scale * rng.normal(size=stats.n_pairs)
        fast, exact = evaluate(m, stats), evaluate_shifted(m, stats)
        assert np.isfinite(fast.loss)
        assert fast.loss == pytest.approx(exact.loss, rel=1e-12)
        np.testing.assert_allclose(fast.grad, exact.grad, atol=1e-15)


def test_deduplication_changes_no_value():
    windows = [[0, 1, 2], [1, 0, 2], [0, 1, 2], [2, 1, 2]]
    labels = [0, 0, 1, 2]
    corpus, graphs, stats, smap = build(windows, labels, 3)
    merged = stats.deduplicated()
    assert merged.n_windows == 3  # the first two are the same multiset with the same label
    m = np.random.default_rng(0).normal(size=stats.n_pairs)
    a, b = evaluate(m, stats), evaluate(m, merged)
    assert a.loss == pytest.approx(b.loss, rel=1e-14)
    np.testing.assert_allclose(a.grad, b.grad, atol=1e-16)


def test_convexity_midpoint_inequality():
    """P9: the identity head + log-loss objective is convex in W."""
    corpus = synthetic(n=15, T=5, K=6, d=8, embeddings="unit-norm", seed=7).realizable()
    graphs = build_graphs(corpus)
    stats = window_stats(corpus, graphs)
    smap = ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)
    rng = np.random.default_rng(3)
    for _ in range(50):
        W1, W2 = 5 * rng.normal(size=(2, 8, 8))
        mid = evaluate(smap.scores((W1 + W2) / 2), stats, False).loss
        ends = 0.5 * (evaluate(smap.scores(W1), stats, False).loss + evaluate(smap.scores(W2), stats, False).loss)
        assert mid <= ends + 1e-12


# --------------------------------------------------------------------------- the sparse-matrix paths
def repeated_stats(seed, n=60, T=7, K=6, d=None):
    """Windows with repeated tokens (counts > 1), duplicates (non-uniform weights after merging)."""
    rng = np.random.default_rng(seed)
    windows = [list(rng.integers(0, K, size=T)) for _ in range(n)]
    windows += windows[: n // 3]  # exact duplicates
    labels = [int(w[rng.integers(len(w))]) for w in windows]
    E = None if d is None else rng.normal(size=(K, d))
    return windows, labels, build(windows, labels, K, E)


@pytest.mark.parametrize("scale", [0.5, 30.0])
def test_design_path_matches_per_position_implementation_and_entry_path(scale):
    windows, labels, (corpus, graphs, stats, smap) = repeated_stats(8)
    merged = stats.deduplicated()
    assert merged.n_windows < stats.n_windows and not np.all(merged.weight == merged.weight[0])
    rng = np.random.default_rng(4)
    W = scale * rng.normal(size=(corpus.d, corpus.d))
    m = smap.scores(W)
    merged.design()  # from here on evaluate takes the sparse-matrix path
    fast = evaluate(m, merged)
    by_entries = evaluate(m, window_stats(corpus, graphs))  # a fresh stats: first call, per-entry sums
    exact = evaluate_shifted(m, merged)
    loss, grad = direct_loss_and_grad(windows, labels, corpus.E, W)
    assert fast.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(smap.adjoint(fast.grad), grad, atol=1e-13)
    np.testing.assert_allclose(fast.grad, by_entries.grad, atol=1e-15)
    np.testing.assert_allclose(fast.entry_prob, exact.entry_prob, atol=1e-14)
    np.testing.assert_allclose(fast.window_loss, exact.window_loss, rtol=1e-12, atol=1e-300)
    assert evaluate(m, merged, probabilities=False).entry_prob is None


def test_row_split_products_are_bitwise_the_single_product(monkeypatch):
    import scipy.sparse as sp

    from theorycheck import model

    rng = np.random.default_rng(0)
    A = sp.random(500, 300, density=0.05, format="csr", random_state=1)
    x = rng.normal(size=300)
    monkeypatch.setattr(model, "PARALLEL_MIN_NNZ", 0)
    monkeypatch.setattr(model, "_worker_count", lambda: 3)
    split = model.RowSplitMatrix(A)
    assert len(split.parts) == 3
    assert (split @ x).tobytes() == (A @ x).tobytes()


def test_hessian_operator_matches_entry_hessian_and_gradient_differences():
    from theorycheck.model import hessian_operator

    _, _, (corpus, graphs, stats, smap) = repeated_stats(9)
    merged = stats.deduplicated()
    rng = np.random.default_rng(5)
    m = rng.normal(size=merged.n_pairs)
    hvp, diag = hessian_operator(m, merged)
    prob = evaluate_shifted(m, merged).entry_prob
    eye = np.eye(merged.n_pairs)
    H = np.array([hessp(prob, merged, e) for e in eye])
    np.testing.assert_allclose(np.array([hvp(e) for e in eye]), H, atol=1e-15)
    np.testing.assert_allclose(diag, np.diag(H), atol=1e-15)
    v = rng.normal(size=merged.n_pairs)
    h = 1e-6
    fd = (evaluate_shifted(m + h * v, merged).grad - evaluate_shifted(m - h * v, merged).grad) / (2 * h)
    np.testing.assert_allclose(hvp(v), fd, atol=1e-8)


def test_vectorised_merge_equals_grouping_by_dictionary():
    from theorycheck.model import merge_identical_windows

    _, _, (_, _, stats, _) = repeated_stats(10, n=80, T=4, K=3)  # few tokens: many identical windows
    merged = merge_identical_windows(stats)
    groups: dict = {}
    for i in range(stats.n_windows):
        lo, hi = stats.indptr[i], stats.indptr[i + 1]
        key = (tuple(stats.entry_pair[lo:hi]), tuple(stats.entry_logc[lo:hi]), int(stats.label_entry[i] - lo))
        groups.setdefault(key, []).append(i)
    assert merged.n_windows == len(groups) < stats.n_windows
    firsts = sorted(g[0] for g in groups.values())
    expected_weight = [sum(stats.weight[j] for j in g) for g in sorted(groups.values(), key=lambda g: g[0])]
    np.testing.assert_allclose(merged.weight, expected_weight, rtol=1e-15)
    for new, old in enumerate(firsts):
        lo, hi = stats.indptr[old], stats.indptr[old + 1]
        np.testing.assert_array_equal(merged.entry_pair[merged.indptr[new]:merged.indptr[new + 1]],
                                      stats.entry_pair[lo:hi])


def test_merge_is_skipped_only_when_few_windows_could_merge():
    """min_merged_fraction: n minus the distinct first fingerprints bounds the merges, so a
    threshold just below the true merged fraction still merges (the same result as without it),
    and one at or above it returns the stats untouched."""
    from theorycheck.model import merge_identical_windows

    _, _, (_, _, stats, _) = repeated_stats(10, n=80, T=4, K=3)
    full = merge_identical_windows(stats)
    fraction = 1 - full.n_windows / stats.n_windows
    assert 0.2 < fraction < 1
    below = merge_identical_windows(stats, min_merged_fraction=fraction - 1e-9)
    assert below.n_windows == full.n_windows
    np.testing.assert_array_equal(below.weight, full.weight)
    np.testing.assert_array_equal(below.entry_pair, full.entry_pair)
    assert merge_identical_windows(stats, min_merged_fraction=fraction) is stats
    assert merge_identical_windows(stats, min_merged_fraction=0.999) is stats


def test_query_block_transpose_is_the_transpose_product(monkeypatch):
    from theorycheck import model

    _, _, (_, _, stats, _) = repeated_stats(11, n=200, T=6, K=9)
    merged = stats.deduplicated()
    monkeypatch.setattr(model, "PARALLEL_MIN_NNZ", 0)
    monkeypatch.setattr(model, "_worker_count", lambda: 3)
    design = model.WindowDesign.of(merged)
    assert isinstance(design.others_t, model.QueryBlockTranspose) and len(design.others_t.parts) >= 2
    x = np.random.default_rng(1).normal(size=merged.n_windows)
    np.testing.assert_allclose(design.others_t @ x, design.others.matrix.T @ x, rtol=1e-15, atol=1e-15)


def test_balanced_groups_deal_the_largest_first_onto_the_least_loaded():
    """Hand-dealt: 5 -> A, 4 -> B, 3 -> B (4 < 5), 3 -> A (5 < 7), 1 -> B (7 < 8): 8 and 8;
    ties go to the lowest-numbered group, and equal costs keep their order."""
    from theorycheck.model import balanced_groups

    assert balanced_groups([5, 4, 3, 3, 1], 2).tolist() == [0, 1, 1, 0, 1]
    assert balanced_groups([2, 2, 2], 3).tolist() == [0, 1, 2]
    assert balanced_groups([1.0, 7.0], 1).tolist() == [0, 0]
