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


@pytest.mark.parametrize("T", [1000, 4000, 10_000, 100_000])
@pytest.mark.parametrize("C", [0.3, 0.6, 1.0, 2.0])
def test_logarithmic_approach_is_never_settled(T, C):
    """c(t) = 1 - C/ln t, the slowest rate THEORY §5.3 measures: the linear-in-log(t)
    extrapolation needs at most log2(T) doublings (docstring of evidence.py), so a run on
    such a curve is never judged settled, whatever C and T, and never reported."""
    steps = checkpoint_steps(T, 25)[1:].astype(float)
    steps = steps[steps >= 2]
    c = 1.0 - C / np.log(steps)
    headings = 1.0 - C / np.log(steps)  # a heading turning towards U just as slowly
    f = direction_claim("direction", "", steps, c, headings)
    assert f.status in (HOLDS, INCONCLUSIVE)
    assert f.evidence["settled"] is False
    if c[-1] < 0.95:
        assert f.status == INCONCLUSIVE and f.score > 0


def test_direction_settled_below_the_claim_is_violated():
    steps = checkpoint_steps(4000, 25)[1:].astype(float)
    from_above = 0.8 + 0.1 / steps  # converging to 0.8 from above
    from_below = 0.8 - 0.1 / steps  # creeping up to 0.8 like 1/t
    for c in (from_above, from_below):
        f = direction_claim("direction", "", steps, c, np.full(steps.size, 0.8))
        assert f.status == VIOLATED
        assert f.value == pytest.approx(c[-1]) and f.score == pytest.approx((0.95 - c[-1]) / 0.05)


def test_heading_alone_can_settle_a_slow_direction():
    """cos(W, U) creeping up steeply like 1/log t (so the direction rule cannot decide) while the
    increments hold a fixed heading at cos 0.866 with U: settled by the heading."""
    steps = checkpoint_steps(4000, 25)[1:].astype(float)
    steps = steps[steps >= 50]
    c = 0.866 - 3.0 / np.log(steps)
    assert direction_claim("d", "", steps, c).status == INCONCLUSIVE  # no heading information
    assert direction_claim("d", "", steps, c, np.full(steps.size, 0.866)).status == VIOLATED


def test_moving_along_the_claim_is_never_violated():
    steps = checkpoint_steps(4000, 25)[1:].astype(float)
    c = np.full(steps.size, 0.7)
    heading = np.full(steps.size, 0.5)
    heading[-1] = 0.96  # the last increment points along U
    assert direction_claim("d", "", steps, c, heading).status == INCONCLUSIVE


def test_alternative_must_be_closer():
    steps = checkpoint_steps(4000, 25)[1:].astype(float)
    c = np.full(steps.size, 0.85)
    far = direction_claim("d", "", steps, c, c, alternative=np.full(steps.size, 0.86), alternative_name="V")
    near = direction_claim("d", "", steps, c, c, alternative=np.full(steps.size, 0.99), alternative_name="V")
    assert far.status == INCONCLUSIVE and far.evidence["closer_to_alternative"] is False
    assert near.status == VIOLATED and near.evidence["alternative_cos"] == 0.99


def test_distance_claims():
    steps = checkpoint_steps(10_000, 25)[1:].astype(float)
    assert distance_claim("f", "", steps, 1.0 / steps, 1e-5).status == INCONCLUSIVE  # still decaying like 1/t
    assert distance_claim("f", "", steps, 1.0 / steps, 1e-3).status == HOLDS
    stuck = distance_claim("f", "", steps, 0.05 + 1.0 / steps**2, 2e-2)
    assert stuck.status == VIOLATED and stuck.evidence["loglog_slope"] > -0.1
    assert stuck.score == pytest.approx(np.log10((0.05 + 1e-8) / 2e-2))


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
