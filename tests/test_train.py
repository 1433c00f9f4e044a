"""Training loop: parametrisations, optimisers, checkpoints, interruption, reproducibility."""

import numpy as np
import pytest

import theorycheck
from theorycheck.corpus.synthetic import synthetic
from theorycheck.errors import InputError
from theorycheck.model import ScoreMap, evaluate
from theorycheck.train import FinSplit, FullParams, TrainConfig, checkpoint_steps, train


@pytest.fixture(scope="module")
def cyclic_orthonormal():
    return theorycheck.analyze(synthetic(n=6, T=4, K=6, d=8, embeddings="orthonormal", graphs="cyclic", seed=1), radii=None)


def manual_gd(pred, lr, steps, normalized, W0):
    """Reference loop on the full d×d matrix: W <- W - lr g (or lr g/||g||_F)."""
    W = W0.copy()
    for _ in range(steps):
        g = pred.score_map.adjoint(evaluate(pred.score_map.scores(W), pred.stats).grad)
        W = W - lr * (g / (np.linalg.norm(g) + np.finfo(float).eps) if normalized else g)
    return W


@pytest.mark.parametrize("optimizer,lr", [("gd", 1.0), ("ngd", 0.05)])
def test_pair_space_training_equals_full_matrix_gd(cyclic_orthonormal, optimizer, lr):
    """For orthonormal E the pair-score loop is GD on W (||E^T G E||_F = ||G||_F)."""
    pred = cyclic_orthonormal
    config = TrainConfig(optimizer=optimizer, lr=lr, steps=60, seed=3)
    result = train(pred.stats, pred.score_map, True, config)
    assert result.parametrization == "pairs"
    rng = np.random.default_rng(3)
    W0 = rng.uniform(-1 / np.sqrt(8), 1 / np.sqrt(8), size=(8, 8))
    np.testing.assert_allclose(result.W, manual_gd(pred, lr, 60, optimizer == "ngd", W0), atol=1e-12)


def test_adam_matches_a_textbook_implementation(cyclic_orthonormal):
    pred = cyclic_orthonormal
    result = train(pred.stats, pred.score_map, True, TrainConfig(optimizer="adam", lr=0.02, steps=30, seed=5))
    W = np.random.default_rng(5).uniform(-1 / np.sqrt(8), 1 / np.sqrt(8), size=(8, 8))
    m = np.zeros_like(W)
    v = np.zeros_like(W)
    for t in range(1, 31):
        g = pred.score_map.adjoint(evaluate(pred.score_map.scores(W), pred.stats).grad)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        W = W - 0.02 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(result.W, W, atol=1e-12)


def test_factorised_gradient_is_the_chain_rule():
    corpus = synthetic(n=8, T=4, K=5, d=6, embeddings="unit-norm", seed=2).realizable()
    pred = theorycheck.analyze(corpus, radii=None)
    from theorycheck.train import FactoredParams

    params = FactoredParams(pred.score_map, 6, 3)
    theta = np.random.default_rng(0).normal(size=2 * 6 * 3)
    g = params.grad(theta, evaluate(params.scores(theta), pred.stats).grad)
    h = 1e-6
    for j in range(0, theta.size, 5):
        e = np.zeros_like(theta)
        e[j] = h
        fd = (evaluate(params.scores(theta + e), pred.stats, False).loss - evaluate(params.scores(theta - e), pred.stats, False).loss) / (2 * h)
        assert fd == pytest.approx(g[j], rel=1e-5, abs=1e-10)


def test_zero_init_gd_stays_in_span_of_gradients_and_is_seed_independent(cyclic_orthonormal):
    pred = cyclic_orthonormal
    a = train(pred.stats, pred.score_map, True, TrainConfig(optimizer="gd", lr=1.0, steps=20, init="zero", seed=1))
    b = train(pred.stats, pred.score_map, True, TrainConfig(optimizer="gd", lr=1.0, steps=20, init="zero", seed=2))
    np.testing.assert_array_equal(a.W, b.W)


def test_same_seed_same_trajectory_bytes(cyclic_orthonormal):
    pred = cyclic_orthonormal
    cfg = TrainConfig(optimizer="ngd", lr=0.01, steps=200, seed=7)
    a = train(pred.stats, pred.score_map, True, cfg)
    b = train(pred.stats, pred.score_map, True, cfg)
    assert a.W.tobytes() == b.W.tobytes()


def test_checkpoints_are_log_spaced_and_end_at_the_budget():
    steps = checkpoint_steps(4000, 25)
    assert steps[0] == 0 and steps[-1] == 4000
    assert np.all(np.diff(steps) > 0)
    ratios = steps[2:] / steps[1:-1]
    assert ratios.max() <= 2.0 and ratios[-5:].max() < 1.5  # roughly geometric


def test_ctrl_c_keeps_the_partial_trajectory(cyclic_orthonormal):
    pred = cyclic_orthonormal

    def interrupt(step):
        if step == 150:
            raise KeyboardInterrupt

    seen = []
    result = train(pred.stats, pred.score_map, True, TrainConfig(steps=1000),
                   monitor=lambda s, W: (seen.append(s) or {"norm": float(np.linalg.norm(W))}, False), on_step=interrupt,
                   split=FinSplit(pred.subspace, pred.graphs.scc))
    assert result.interrupted and result.steps_done == 150
    assert result.checkpoints[-1]["step"] == 150 and result.checkpoints[0]["step"] == 0


def test_early_stop_stops_at_first_checkpoint_that_holds(cyclic_orthonormal):
    pred = cyclic_orthonormal
    result = train(pred.stats, pred.score_map, True, TrainConfig(steps=1000, early_stop=True),
                   monitor=lambda s, W: ({}, s >= 100), split=FinSplit(pred.subspace, pred.graphs.scc))
    assert result.stopped_early and 100 <= result.steps_done < 1000


@pytest.mark.parametrize("kwargs", [{"optimizer": "sgd"}, {"lr": -1.0}, {"steps": 0}, {"init": "ones"},
                                    {"factorized_width": 2, "init": "zero"}, {"backend": "jax"}])
def test_bad_configurations_are_input_errors(kwargs):
    with pytest.raises(InputError):
        TrainConfig(**kwargs).validate()


def test_general_embeddings_use_the_full_matrix():
    pred = theorycheck.analyze(synthetic(n=6, T=4, K=6, d=8, embeddings="unit-norm", seed=1), radii=None)
    result = train(pred.stats, pred.score_map, pred.orthonormal, TrainConfig(optimizer="gd", lr=1.0, steps=5, seed=0))
    assert result.parametrization == "full"
    W0 = FullParams(ScoreMap(pred.corpus.E, pred.graphs.pair_token, pred.graphs.pair_query), 8).initial_matrix(
        TrainConfig(seed=0), np.random.default_rng(0))
    np.testing.assert_allclose(result.W, manual_gd(pred, 1.0, 5, False, W0), atol=1e-13)


@pytest.mark.parametrize("optimizer,lr", [("gd", 0.5), ("ngd", 0.05)])
def test_training_matches_an_independent_per_position_loop(optimizer, lr):
    """The production step (sparse window sums, merged duplicates, pair space, threads) against
    GD on the d×d matrix with the per-position gradient of tests/reference.py."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from reference import position_loss, windows_of

    corpus = synthetic(n=80, T=6, K=7, d=7, embeddings="one-hot", graphs="cyclic", seed=4).realizable()
    pred = theorycheck.analyze(corpus, radii=None)
    windows, labels = windows_of(pred.corpus)
    config = TrainConfig(optimizer=optimizer, lr=lr, steps=150, seed=2, schedule="constant")
    result = train(pred.stats, pred.score_map, True, config)
    W = np.random.default_rng(2).uniform(-1 / np.sqrt(7), 1 / np.sqrt(7), size=(7, 7))
    W0 = W.copy()
    for _ in range(150):
        _, g = position_loss(W, pred.corpus.E, windows, labels)
        W = W - lr * (g / (np.linalg.norm(g) + np.finfo(float).eps) if optimizer == "ngd" else g)
    assert np.linalg.norm(W - W0) > 0.5  # the run moves: the comparison is not between two starts
    np.testing.assert_allclose(result.W, W, atol=1e-12)


# --------------------------------------------------------------------------- split-ngd
#
# split-ngd steps on S_fin (GD, clipped to the schedule's length) and on its complement (normalised,
# constant length) separately.  Its complement step needs Pi_perp ∇L without the cancellation of
# (I - Pi) ∇L, which model.leak_gradient computes from the attention that leaks out of each label's SCC.

def cyclic_prediction(embeddings: str, seed: int = 2):
    return theorycheck.analyze(synthetic(n=10, T=4, K=6, d=8, embeddings=embeddings, graphs="cyclic", seed=seed),
                               radii=None)


def perp_part(pred, W):
    return W - pred.subspace.project(W)


@pytest.mark.parametrize("embeddings", ["orthonormal", "unit-norm"])
def test_leak_gradient_is_the_gradient_off_s_fin(embeddings):
    from theorycheck.model import leak_gradient

    pred = cyclic_prediction(embeddings)
    st, sm = pred.stats, pred.score_map
    W = np.random.default_rng(0).normal(size=(8, 8))  # moderate margins: (I - Pi) G is accurate here
    m = sm.scores(W)
    ev = evaluate(m, st)
    ell, log_c = leak_gradient(m, st, FinSplit(pred.subspace, pred.graphs.scc).outside(st), ev.window_loss)
    G = sm.adjoint(ev.grad)
    leak = np.exp(log_c) * sm.adjoint(ell)
    np.testing.assert_allclose(perp_part(pred, leak), perp_part(pred, G), atol=1e-13 * np.linalg.norm(G))
    rest = G - leak  # what is left of the gradient lies in S_fin
    np.testing.assert_allclose(pred.subspace.project(rest), rest, atol=1e-13 * np.linalg.norm(G))


def split_loss_fast(st, outside, m, shards=1):
    """SplitLoss's sparse route, asserting that it ran (no fallback) on ``shards`` query ranges
    (1, or at least 2 where more are asked for)."""
    from theorycheck.model import SplitLoss

    split_loss = SplitLoss(st, outside, shards=shards)
    assert split_loss.usable
    assert len(split_loss.shards) == 1 if shards == 1 else len(split_loss.shards) >= 2
    fast = split_loss._fast(m)
    assert fast is not None
    return fast


@pytest.mark.parametrize("route", ["log-domain", "sparse", "sparse, 3 query ranges"])
@pytest.mark.parametrize("scale", [60.0, 3000.0])
def test_leak_gradient_keeps_its_direction_where_float_cancels_or_underflows(scale, route):
    # W = W^fin + scale W^svm: the leak is ~exp(-60) (below the rounding of 1 - sum pi) or
    # ~exp(-3000) (below exp's range).  Reference: the attention in 60-digit arithmetic.
    # Both routes: LeakMap per entry in the log domain, SplitLoss by sparse products.
    import mpmath

    from theorycheck.model import leak_gradient

    pred = cyclic_prediction("unit-norm", seed=4)
    st, sm = pred.stats, pred.score_map
    W = pred.W_fin + scale * pred.W_svm / np.linalg.norm(pred.W_svm)
    m = sm.scores(W)
    outside = FinSplit(pred.subspace, pred.graphs.scc).outside(st)
    if route == "log-domain":
        ell, log_c = leak_gradient(m, st, outside, evaluate(m, st).window_loss)
    else:  # with query ranges each scaled on its own, then to the largest scale
        _, ell, log_c = split_loss_fast(st, outside, m, shards=3 if "ranges" in route else 1)
    # scaled to order one (log-domain: its largest term is 1; sparse: its largest entry is 1):
    # a caller's squared norm must not underflow
    if route == "log-domain":
        assert 1e-3 < np.abs(ell).max() < 1e3
    else:
        assert np.abs(ell).max() == pytest.approx(1.0, rel=1e-15)
    mpmath.mp.dps = 60
    z = m[st.entry_pair] + st.entry_logc
    exact = [mpmath.mpf(0)] * st.n_pairs
    for i in range(st.n_windows):
        lo, hi = int(st.indptr[i]), int(st.indptr[i + 1])
        total = mpmath.fsum(mpmath.exp(mpmath.mpf(z[j])) for j in range(lo, hi))
        leak = mpmath.mpf(0)
        for j in range(lo, hi):
            if outside[j]:
                share = mpmath.mpf(st.weight[i]) * mpmath.exp(mpmath.mpf(z[j])) / total
                exact[st.entry_pair[j]] += share
                leak += share
        exact[st.entry_pair[st.label_entry[i]]] -= leak
    top = max(abs(v) for v in exact)
    assert float(mpmath.log(top)) == pytest.approx(log_c + np.log(np.abs(ell).max()), abs=1e-9)
    reference = np.array([float(v / top) for v in exact])
    got = ell / np.abs(ell).max()
    np.testing.assert_allclose(got, reference, atol=1e-12)
    direction = perp_part(pred, sm.adjoint(got))
    assert np.linalg.norm(direction) > 0.1  # the complement's step survives


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("embeddings", ["orthonormal", "unit-norm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_split_loss_equals_the_loss_gradient_and_leak_computed_apart(embeddings, seed, shards):
    # SplitLoss's one pass (inside / outside count matrices, two shifts) against evaluate's loss and
    # gradient and the per-entry log-domain leak, at a random point; on one query range and on
    # several computed in threads and put together.
    from theorycheck.model import leak_gradient

    pred = cyclic_prediction(embeddings, seed=seed + 2)
    st = pred.stats
    m = pred.score_map.scores(np.random.default_rng(seed).normal(size=(8, 8)))
    outside = FinSplit(pred.subspace, pred.graphs.scc).outside(st)
    ev, ell, log_c = split_loss_fast(st, outside, m, shards)
    reference = evaluate(m, st)
    assert ev.loss == pytest.approx(reference.loss, rel=1e-13)
    np.testing.assert_allclose(ev.window_loss, reference.window_loss, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ev.grad, reference.grad, atol=1e-13 * np.abs(reference.grad).max())
    ell_ref, log_c_ref = leak_gradient(m, st, outside, reference.window_loss)
    np.testing.assert_allclose(np.exp(log_c) * ell, np.exp(log_c_ref) * ell_ref,
                               atol=1e-13 * np.exp(log_c_ref) * np.abs(ell_ref).max())


@pytest.mark.parametrize("shards", [1, 3])
def test_split_loss_falls_back_where_outside_scores_tower_over_the_label_scc(shards):
    # W = W^fin - 3000 W^svm: the tokens outside each label's SCC outscore it by thousands, beyond
    # the two shifts' reach (exp(M_out - M_in) overflows): the sparse route declines and the
    # fallback (evaluate + log-domain leak) gives the loss, the gradient and the leak.
    from theorycheck.model import SplitLoss, leak_gradient

    pred = cyclic_prediction("unit-norm", seed=4)
    st = pred.stats
    m = pred.score_map.scores(pred.W_fin - 3000.0 * pred.W_svm / np.linalg.norm(pred.W_svm))
    outside = FinSplit(pred.subspace, pred.graphs.scc).outside(st)
    split_loss = SplitLoss(st, outside, shards=shards)
    assert split_loss.usable and split_loss._fast(m) is None
    ev, ell, log_c = split_loss(m)
    reference = evaluate(m, st)
    assert ev.loss == pytest.approx(reference.loss, rel=1e-13) and ev.loss > 100
    np.testing.assert_allclose(ev.grad, reference.grad, atol=1e-13 * np.abs(reference.grad).max())
    ell_ref, log_c_ref = leak_gradient(m, st, outside, reference.window_loss)
    np.testing.assert_array_equal(ell, ell_ref)
    assert log_c == log_c_ref


@pytest.mark.parametrize("count", [2, 3, 5, 50])
def test_query_ranges_cover_every_pair_once_and_keep_each_query_whole(count):
    # SplitLoss's ranges: contiguous pair ranges from 0 to n_pairs, every window in exactly one,
    # the pairs of a window's query inside its range, none without a window.
    from theorycheck.model import _query_ranges

    st = cyclic_prediction("orthonormal", seed=3).stats
    ranges = _query_ranges(st, count)
    assert 2 <= len(ranges) <= count
    assert ranges[0][1] == 0 and ranges[-1][2] == st.n_pairs
    assert all(a[2] == b[1] for a, b in zip(ranges[:-1], ranges[1:]))
    seen = np.concatenate([windows for windows, _, _ in ranges])
    np.testing.assert_array_equal(np.sort(seen), np.arange(st.n_windows))
    rows = st.rows()
    for windows, p0, p1 in ranges:
        assert windows.size > 0
        entries = np.isin(rows, windows)
        assert np.all((st.entry_pair[entries] >= p0) & (st.entry_pair[entries] < p1))
        queries = np.unique(st.pair_query[p0:p1])
        assert not np.isin(st.pair_query[:p0], queries).any() and not np.isin(st.pair_query[p1:], queries).any()


def test_split_ngd_takes_the_same_steps_on_query_ranges_in_threads(monkeypatch):
    # The default sharding (one query range per worker thread from PARALLEL_MIN_NNZ entries) on a
    # small corpus: the trajectory equals the one-range run up to rounding.
    import theorycheck.model as model

    pred = cyclic_prediction("orthonormal", seed=3)
    split = FinSplit(pred.subspace, pred.graphs.scc)
    config = TrainConfig(steps=300, optimizer="split-ngd", lr=0.1)
    one = train(pred.stats, pred.score_map, True, config, split=split)
    monkeypatch.setattr(model, "PARALLEL_MIN_NNZ", 0)
    monkeypatch.setattr(model, "_worker_count", lambda: 3)
    several = train(pred.stats, pred.score_map, True, config, split=split)
    assert np.linalg.norm(one.W) > 5  # it moved along W^svm
    np.testing.assert_allclose(several.W, one.W, rtol=0, atol=1e-10 * np.linalg.norm(one.W))


@pytest.mark.parametrize("embeddings", ["orthonormal", "unit-norm"])
def test_curvature_bound_bounds_the_hessian_in_w(embeddings):
    # B >= the largest eigenvalue of the Hessian of L in W, at random points and near W^fin (dense
    # Hessian from Hessian-vector products: the covariance diag(pi) - pi pi^T per window, §5.1).
    from theorycheck.model import hessp
    from theorycheck.train import curvature_bound

    pred = cyclic_prediction(embeddings)
    st, sm = pred.stats, pred.score_map
    B = curvature_bound(st, sm)
    d = pred.W_fin.shape[0]
    basis = np.eye(d * d)
    largest = 0.0
    rng = np.random.default_rng(3)
    for W in [pred.W_fin, *(scale * rng.normal(size=(d, d)) for scale in (0.1, 1.0, 3.0))]:
        prob = evaluate(sm.scores(W), st).entry_prob
        H = np.array([sm.adjoint(hessp(prob, st, sm.scores(e.reshape(d, d)))).ravel() for e in basis])
        largest = max(largest, float(np.linalg.eigvalsh(0.5 * (H + H.T)).max()))
    assert 0 < largest <= B
    assert B <= 1.0 + 1e-12  # unit rows: max ||x_a||^2 ||x_k||^2 = 1


@pytest.mark.parametrize("embeddings", ["orthonormal", "unit-norm"])
def test_split_ngd_reaches_w_fin_and_turns_its_growth_towards_w_svm(embeddings):
    # The limits are the independent solvers' (Graph-SVM QP, W^fin Newton): ||Pi W - W^fin|| falls to
    # rounding and the last increments of W_perp point along W^svm.

    pred = cyclic_prediction(embeddings, seed=4)
    assert np.linalg.norm(pred.W_fin) > 0.1
    kept = {}
    result = train(pred.stats, pred.score_map, pred.orthonormal, TrainConfig(steps=8000, seed=1),
                   monitor=lambda s, W: (kept.__setitem__(s, W.copy()) or {}, False),
                   split=FinSplit(pred.subspace, pred.graphs.scc))
    assert np.linalg.norm(pred.subspace.project(result.W) - pred.W_fin) <= 1e-9
    steps = sorted(kept)
    increment = perp_part(pred, kept[steps[-1]] - kept[steps[-2]])
    cos = np.sum(increment * pred.W_svm) / np.linalg.norm(increment) / np.linalg.norm(pred.W_svm)
    assert np.degrees(np.arccos(min(cos, 1.0))) < 0.5
    assert np.linalg.norm(perp_part(pred, result.W)) >= 0.9 * 0.05 * 8000  # the complement grows like lr·t


def test_split_ngd_on_pair_scores_equals_split_ngd_on_w():
    # For orthonormal E the pair-score loop and the d×d loop are the same iteration (Pi_fin in both spaces).

    pred = cyclic_prediction("orthonormal", seed=4)
    split = FinSplit(pred.subspace, pred.graphs.scc)
    config = TrainConfig(steps=300, seed=2)
    pairs = train(pred.stats, pred.score_map, True, config, split=split)
    full = train(pred.stats, pred.score_map, False, config, split=split)
    assert (pairs.parametrization, full.parametrization) == ("pairs", "full")
    np.testing.assert_allclose(pairs.W, full.W, atol=1e-10)


@pytest.mark.parametrize("kwargs", [{"factorized_width": 2}, {"backend": "torch"}])
def test_split_ngd_refuses_parametrisations_it_does_not_split(kwargs):
    with pytest.raises(InputError, match="--optimizer ngd"):
        TrainConfig(optimizer="split-ngd", **kwargs).validate()


def test_split_ngd_needs_the_corpus_subspace(cyclic_orthonormal):
    pred = cyclic_orthonormal
    with pytest.raises(ValueError, match="FinSplit"):
        train(pred.stats, pred.score_map, True, TrainConfig(steps=3))
