"""falsify building blocks: evidence rules, extra heads, candidates (no training runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theorycheck.corpus import load_corpus
from theorycheck.falsify.candidate import (
    Candidate,
    compress_dimension,
    make_candidate,
    mutate,
    random_candidate,
    remove_token,
    shrink_steps,
)
from theorycheck.falsify.conjectures import li_assumption_failures
from theorycheck.falsify.evidence import (
    HOLDS,
    INCONCLUSIVE,
    VIOLATED,
    direction_claim,
    distance_claim,
)
from theorycheck.falsify.heads import HEAD_LOSSES, evaluate_head, train_head
from theorycheck.falsify.output import write_counterexample
from theorycheck.graphs import build_graphs
from theorycheck.model import ScoreMap, window_stats
from theorycheck.train import TrainConfig, checkpoint_steps, train

# --------------------------------------------------------------------------- evidence rules


def _diverging_run(T: int, offset: float, turn: np.ndarray | None = None):
    """W(t) = s U + offset log(s) N with s = log(1 + t): a diverging part whose increments turn
    towards U like 1/s (the log-log term of Soudry et al. 2018), N orthogonal to U."""
    steps = checkpoint_steps(T, 25)[1:].astype(float)
    U = np.zeros((3, 3))
    U[0, 0] = 1.0
    N = np.zeros((3, 3))
    N[1, 0] = 1.0
    s = np.log1p(steps)
    return steps, [si * U + offset * np.log(si + 1.0) * N for si in s], U, N


def _rotated(U, V, degrees):
    t = np.radians(degrees)
    return np.cos(t) * U + np.sin(t) * V


def no_finite_part(W):
    return np.zeros_like(W)


@pytest.mark.parametrize("T", [1000, 10_000, 100_000])
@pytest.mark.parametrize("offset", [0.0, 0.3, 1.0])
def test_direction_claim_never_refutes_the_true_limit(T, offset):
    steps, Ws, U, _ = _diverging_run(T, offset)
    f = direction_claim("direction", "", steps, Ws, no_finite_part, U)
    assert f.status in (HOLDS, INCONCLUSIVE)
    if offset == 0.0:  # increments exactly along U: no turning, angle 0
        assert f.status == HOLDS and f.value == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_direction_claim_refutes_a_direction_off_the_run(offset):
    """A claim 10° off the limit, towards a direction the run never turns in (transverse)."""
    steps, Ws, U, _ = _diverging_run(100_000, offset)
    M = np.zeros((3, 3))
    M[2, 2] = 1.0
    f = direction_claim("direction", "", steps, Ws, no_finite_part, _rotated(U, M, 10.0))
    assert f.status == VIOLATED
    assert f.evidence["limit_lower_bound_deg"] > f.tolerance and f.score > 0


def test_direction_claim_with_a_fixed_heading_is_decided():
    """Increments along a fixed direction at 30° from the claim: VIOLATED; at 1°: HOLDS."""
    steps = checkpoint_steps(4000, 25)[1:].astype(float)
    U = np.eye(3)[0][:, None] * np.eye(3)[0][None, :]
    V = np.zeros((3, 3))
    V[1, 1] = 1.0
    heading = _rotated(U, V, 30.0)
    Ws = [np.log1p(t) * heading for t in steps]
    assert direction_claim("d", "", steps, Ws, no_finite_part, U).status == VIOLATED
    assert direction_claim("d", "", steps, Ws, no_finite_part, _rotated(heading, U, -1.0)).status == HOLDS
    alt = direction_claim("d", "", steps, Ws, no_finite_part, U, alternative=heading, alternative_name="V")
    assert alt.evidence["alternative_angle_deg"] == pytest.approx(0.0, abs=1e-6)


def test_direction_claim_is_inconclusive_while_the_run_still_turns():
    """A run turning fast (not yet located) never refutes anything."""
    steps = checkpoint_steps(300, 25)[1:].astype(float)
    rng = np.random.default_rng(0)
    Ws = [t * np.eye(3) + rng.standard_normal((3, 3)) * t for t in steps]  # heading jumps at every checkpoint
    f = direction_claim("d", "", steps, Ws, no_finite_part, np.ones((3, 3)))
    assert f.status == INCONCLUSIVE


def test_distance_claims():
    steps = checkpoint_steps(10_000, 25)[1:].astype(float)
    assert distance_claim("f", "", steps, 1.0 / steps, 1e-5).status == INCONCLUSIVE  # 1e-4 left, still decaying
    assert distance_claim("f", "", steps, 1.0 / steps, 1e-3).status == HOLDS
    stuck = distance_claim("f", "", steps, 0.05 + 1.0 / steps**2, 2e-2)
    assert stuck.status == VIOLATED and stuck.evidence["remaining_bound"] < 0.03


# --------------------------------------------------------------------------- extra heads
def _problem(seed: int, kind: str = "unit-norm"):
    c = random_candidate(np.random.default_rng(seed), embeddings=(kind,), n=(3, 5), T=(3, 5), K=(3, 5))
    corpus = c.corpus()
    graphs = build_graphs(corpus)
    return c, corpus, window_stats(corpus, graphs), ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)


@pytest.mark.parametrize("head,loss", HEAD_LOSSES)
def test_head_gradients_match_finite_differences(head, loss):
    _, _, stats, score_map = _problem(3)
    rng = np.random.default_rng(4)
    m = rng.normal(size=stats.n_pairs)
    grad = evaluate_head(m, stats, score_map, head, loss).grad
    h = 1e-6
    numeric = np.array([(evaluate_head(m + h * e, stats, score_map, head, loss).loss
                         - evaluate_head(m - h * e, stats, score_map, head, loss).loss) / (2 * h)
                        for e in np.eye(stats.n_pairs)])
    assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("head,loss", HEAD_LOSSES)
def test_head_losses_match_position_wise_formulas(head, loss):
    """THEORY.md §1.3-§1.5 written over positions: s = X W xbar, a = softmax(s), f = X^T a."""
    c, corpus, stats, score_map = _problem(5)
    E = corpus.E
    W = np.random.default_rng(6).normal(size=(c.d, c.d))
    per_window = []
    for window, y in zip(c.windows, c.labels, strict=True):
        X = E[list(window)]
        s = X @ W @ E[window[-1]]
        a = np.exp(s - s.max())
        a /= a.sum()
        if head == "iden":
            p = a[np.array(window) == y].sum()
            per_window.append(-np.log(p) if loss == "log" else (1 - p) ** 2)
        else:
            z = E @ (X.T @ a)
            q = np.exp(z - z.max())
            q /= q.sum()
            per_window.append(-np.log(q[y]) if loss == "ce" else (1 - q[y]) ** 2)
    got = evaluate_head(score_map.scores(W), stats, score_map, head, loss).loss
    assert got == pytest.approx(np.mean(per_window), rel=1e-12)


def test_train_head_matches_the_verify_trainer_for_the_identity_log_case():
    """Same init draw, same NGD steps: two implementations of the same loop agree."""
    _, corpus, stats, score_map = _problem(7)
    config = TrainConfig(optimizer="ngd", lr=0.1, steps=60, seed=3, checkpoints=5)
    mine = train_head(stats, score_map, "iden", "log", config)
    ref = train(stats, score_map, False, config)
    assert np.allclose(mine.matrices[-1], ref.W, atol=1e-12)


# --------------------------------------------------------------------------- candidates
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["one-hot", "orthonormal", "unit-norm", "equi-correlated"]))
def test_candidate_round_trips_and_shrink_steps_are_simpler(seed, kind):
    c = random_candidate(np.random.default_rng(seed), embeddings=(kind,))
    assert Candidate.from_json(json.loads(json.dumps(c.to_json()))) == c
    for _, child in shrink_steps(c):
        assert child.size_key() <= c.size_key() and child != c
        assert all(len(w) >= 2 for w in child.windows)
        assert not child.unrealizable_windows()  # simplifications keep every label in its window


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_compress_dimension_keeps_the_gram_matrix(seed):
    c = random_candidate(np.random.default_rng(seed), embeddings=("orthonormal", "unit-norm"), extra_dims=(1, 3))
    small = compress_dimension(c)
    assert small is not None and small.d == c.K
    assert np.allclose(small.embeddings @ small.embeddings.T, c.embeddings @ c.embeddings.T, atol=1e-12)


def test_remove_token_by_hand():
    c = make_candidate([[0, 1, 2], [2, 3, 1], [3, 0]], [0, 3, 3], np.eye(4))
    out = remove_token(c, 1)
    # window 0 loses token 1; window 1 has query 1 and goes; ids 2, 3 become 1, 2
    assert out.windows == ((0, 1), (2, 0)) and out.labels == (0, 2) and out.K == 3 and out.d == 3


def test_mutation_may_break_realizability_and_the_check_catches_it():
    broken = 0
    for i in range(200):
        parent = random_candidate(np.random.default_rng([1, i]))
        op, child = mutate(parent, np.random.default_rng([2, i]))
        failures = li_assumption_failures(child)
        assert bool(failures) == bool(child.unrealizable_windows())
        broken += bool(failures)
        if op != "retoken":
            assert not failures  # only `retoken` can drop a label from its window
    assert broken > 0


def test_counterexample_files_round_trip_through_load_corpus(tmp_path):
    c = random_candidate(np.random.default_rng(11), embeddings=("unit-norm",), T=(4, 6), K=(3, 3))
    write_counterexample(c, tmp_path)
    corpus = load_corpus(tmp_path / "counterexample.jsonl", embeddings_path=tmp_path / "embeddings.json")
    back = Candidate.from_corpus(corpus, c.train_seed)
    assert np.array_equal(back.embeddings, c.embeddings)  # floats survive JSON exactly
    assert back.labels == c.labels
    assert [sorted(w) for w in back.windows] == [sorted(w) for w in c.windows]
    assert [w[-1] for w in back.windows] == [w[-1] for w in c.windows]
    assert (back.corpus().counts != c.corpus().counts).nnz == 0
