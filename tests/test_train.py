"""Training loop: parametrisations, optimisers, checkpoints, interruption, reproducibility."""

import numpy as np
import pytest

import theorycheck
from theorycheck.corpus.synthetic import synthetic
from theorycheck.errors import InputError
from theorycheck.model import ScoreMap, evaluate
from theorycheck.train import FullParams, TrainConfig, checkpoint_steps, train


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
                   monitor=lambda s, W: (seen.append(s) or {"norm": float(np.linalg.norm(W))}, False), on_step=interrupt)
    assert result.interrupted and result.steps_done == 150
    assert result.checkpoints[-1]["step"] == 150 and result.checkpoints[0]["step"] == 0


def test_early_stop_stops_at_first_checkpoint_that_holds(cyclic_orthonormal):
    pred = cyclic_orthonormal
    result = train(pred.stats, pred.score_map, True, TrainConfig(steps=1000, early_stop=True),
                   monitor=lambda s, W: ({}, s >= 100))
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
