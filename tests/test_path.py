"""Regularization path W_R = argmin_{||W||_F <= R} L(W) (THEORY.md §5.2, prediction P16).

Each W_R is certified independently: L is convex and the norm constraint is active, so
W_R is optimal iff the gradient of L (per-position implementation, tests/reference.py)
is a non-positive multiple of W_R: grad L(W_R) = -mu W_R with mu > 0.  One point is also
compared with the exp-cone/second-order-cone cvxpy formulation.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import position_loss, windows_of

from theorycheck.corpus.synthetic import synthetic
from theorycheck.path import (
    PathTrace,
    PenalisedLoss,
    frobenius_cos,
    path_point_cvxpy,
    path_points,
    path_step,
    regularization_path,
    solve_radius,
)
from theorycheck.predictions import analyze

RADII = (1.0, 2.0, 5.0, 10.0)


def path_matrices(pred, radii, method="path"):
    """W_R along the radii, each warm-started from the previous one: ``path`` as
    regularization_path continues (KKT-Newton, the nested method where it fails), ``nested``
    the Newton-CG per mu with a secant search on mu alone.  Returns [(W, mu, method used)]."""
    problem, states = path_states(pred, radii, method)
    return [(problem.to_matrix(x), mu, used) for x, mu, used in states]


def path_states(pred, radii, method="path"):
    """(the PenalisedLoss, [(x, mu, method used)] along the radii) for :func:`path_matrices`."""
    problem = PenalisedLoss(pred.stats, pred.score_map, in_pair_space=pred.orthonormal)
    x, mu, out, previous = np.zeros(problem.size()), 1.0, [], None
    for R in radii:
        if method == "path":
            x, mu, _, used = path_step(problem, R, x, mu, previous)
        else:
            (x, mu, _), used = solve_radius(problem, R, x, mu), "nested"
        previous = R
        out.append((x, mu, used))
    return problem, out


@pytest.fixture(scope="module")
def toys(example):
    out = {name: analyze(example(name), radii=RADII + (20.0,)) for name in ("cycle", "mix")}
    out["unit-norm"] = analyze(synthetic(n=20, T=5, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=1),
                               radii=(1.0, 2.0, 5.0, 10.0, 20.0, 50.0))
    # one-hot, 10 queries: the KKT-Newton's per-query step lengths act on 10 blocks
    out["queries"] = analyze(synthetic(n=150, T=6, K=10, embeddings="one-hot", graphs="cyclic", seed=0),
                             radii=RADII + (20.0,))
    return out


@pytest.mark.parametrize("name", ["cycle", "mix"])
def test_path_tends_to_svm_direction_and_finite_component(toys, name):
    points = [p for p in toys[name].path if p.resolved]
    assert [p.R for p in points][:4] == list(RADII)
    cos = np.array([p.cos_svm for p in points])
    fin = np.array([p.fin_distance for p in points])
    assert np.all(np.diff(cos) > 0) and cos[-1] > 0.998
    assert np.all(np.diff(fin) < 0) and fin[-1] < 1e-3
    for p in points:
        assert p.norm == pytest.approx(p.R, rel=1e-6)


def test_path_tail_on_a_general_embedding_instance(toys):
    # unit-norm embeddings, d = 8 > K = 6: cos rises monotonically; the S_fin part may first move away
    # from W^fin (it does here up to R = 2) but must close in along the tail.
    points = toys["unit-norm"].path
    assert all(p.resolved for p in points)
    cos = np.array([p.cos_svm for p in points])
    fin = np.array([p.fin_distance for p in points])
    assert np.all(np.diff(cos) > 0) and cos[-1] > 0.98
    assert np.all(np.diff(fin[2:]) < 0) and fin[-1] < 1e-2


@pytest.mark.parametrize("scale", [0.125, 1024.0])
def test_default_path_on_scaled_embeddings_is_the_unit_path_rescaled(toys, scale):
    # scores are bilinear in E: W_R on c E is W_{c^2 R} on E / c^2, with mu scaled by c^4.  The default
    # radii ("auto") are 1..50 / c^2 and the path is solved on E / c, so the points map exactly.  Before,
    # the defaults stayed 1..50 on c E (at c = 1024: radii of 5e7 in unit terms) and the path was solved
    # in raw units, where its absolute gradient tolerance meant something else
    import dataclasses

    unit = toys["unit-norm"]
    pred = analyze(dataclasses.replace(unit.corpus, E=unit.corpus.E * scale))
    assert len(pred.path) == len(unit.path) == 6
    for p, q in zip(pred.path, unit.path, strict=True):
        assert p.R * scale**2 == q.R and p.resolved
        assert p.mu / scale**4 == pytest.approx(q.mu, rel=1e-12)
        assert p.loss == pytest.approx(q.loss, rel=1e-12)
        assert p.cos_svm == pytest.approx(q.cos_svm, abs=1e-12)
        assert p.fin_distance * scale**2 == pytest.approx(q.fin_distance, rel=1e-9, abs=1e-14)
        assert p.norm * scale**2 == pytest.approx(q.norm, rel=1e-12)


@pytest.mark.parametrize("method", ["path", "nested"])
@pytest.mark.parametrize("name", ["cycle", "mix", "unit-norm", "queries"])
def test_path_points_satisfy_kkt_with_an_independent_gradient(toys, name, method):
    pred = toys[name]
    windows, labels = windows_of(pred.corpus)
    for (W, mu, _), R, point in zip(path_matrices(pred, RADII, method), RADII, pred.path, strict=False):
        assert np.linalg.norm(W) == pytest.approx(R, rel=1e-6)  # PathPoint.resolved tolerance
        loss, grad = position_loss(W, pred.corpus.E, windows, labels)
        assert loss == pytest.approx(point.loss, rel=1e-10)
        mu_hat = -np.sum(grad * W) / R**2
        assert mu_hat > 0 and mu_hat == pytest.approx(mu, rel=1e-5)
        assert np.linalg.norm(grad + mu_hat * W) <= 1e-6 * np.linalg.norm(grad)
        # both solvers stop at ||grad L + mu W|| <= 1e-11: they agree with the path to far better than 1e-9
        assert frobenius_cos(W, pred.W_svm) == pytest.approx(point.cos_svm, abs=1e-9)


@pytest.mark.parametrize("name", ["cycle", "mix", "unit-norm", "queries"])
def test_kkt_newton_and_nested_solver_agree(toys, name):
    pred = toys[name]
    path, nested = path_matrices(pred, RADII, "path"), path_matrices(pred, RADII, "nested")
    # the KKT-Newton carries the path wherever the loss is not flat (mu of the cycle at R = 10: 3e-7)
    assert [used for _, _, used in path][:3] == ["kkt"] * 3
    for (W_k, mu_k, _), (W_n, mu_n, _) in zip(path, nested, strict=True):
        assert np.linalg.norm(W_k - W_n) <= 1e-7 * np.linalg.norm(W_n)
        assert mu_k == pytest.approx(mu_n, rel=1e-6)


@pytest.mark.parametrize("name", ["mix", "unit-norm", "queries"])
def test_path_point_agrees_with_cvxpy(toys, name):
    pred = toys[name]
    (W, _, _), = path_matrices(pred, (5.0,))
    W_ref = path_point_cvxpy(pred.stats, pred.score_map, 5.0)
    assert np.linalg.norm(W_ref - W) <= 1e-4 * np.linalg.norm(W)


def test_penalised_loss_blocks_are_the_queries(toys):
    # the per-query split the KKT-Newton's step lengths rely on: L is the sum of the blocks' shares
    pred = toys["queries"]
    problem = PenalisedLoss(pred.stats, pred.score_map, in_pair_space=True)
    coord_block, n_blocks = problem.blocks()
    queries = pred.stats.pair_query
    assert n_blocks == np.unique(queries).size == 10
    for b in range(n_blocks):
        assert np.unique(queries[coord_block == b]).size == 1
    x = np.random.default_rng(0).normal(size=problem.size())
    loss, grad, block_loss = problem.loss_grad_blocks(x)
    windows, labels = windows_of(pred.corpus)
    ref_loss, ref_grad = position_loss(problem.to_matrix(x), pred.corpus.E, windows, labels)
    assert loss == pytest.approx(ref_loss, rel=1e-12) and block_loss.sum() == pytest.approx(ref_loss, rel=1e-12)
    assert np.allclose(problem.to_matrix(grad), ref_grad, rtol=0, atol=1e-12)
    # each block's share is the loss of the windows of its query alone
    for b in range(n_blocks):
        q = queries[coord_block == b][0]  # one-hot: the query's token is its index
        mine = [i for i, w in enumerate(windows) if w[-1] == q]
        sub_loss, _ = position_loss(problem.to_matrix(x), pred.corpus.E, [windows[i] for i in mine],
                                    [labels[i] for i in mine])
        assert block_loss[b] == pytest.approx(sub_loss * len(mine) / len(windows), rel=1e-12)


@pytest.mark.parametrize("name", ["mix", "unit-norm", "queries"])
def test_analyze_traces_the_path_beside_the_svm_as_the_sequential_path(toys, name):
    # analyze solves the radii in a thread beside W^svm and W^fin; the answer is the one the
    # sequential regularization_path gives from the finished predictions (the same arithmetic, up
    # to BLAS's summation order in d×d products, which depends on its thread count)
    pred = toys[name]
    radii = tuple(p.R for p in pred.path)
    sequential = regularization_path(pred.stats, pred.score_map, pred.orthonormal, pred.W_svm, pred.W_fin,
                                     pred.subspace, radii)
    assert len(pred.path) == len(sequential) == len(radii) > 0
    for threaded, alone in zip(pred.path, sequential, strict=True):
        a, b = threaded.as_dict(), alone.as_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-14), key


@pytest.mark.parametrize("embeddings", ["one-hot", "orthonormal"])
def test_path_points_in_pair_space_equal_the_dense_diagnostics(embeddings):
    # for E E^T = I the diagnostics come from the pair scores alone; each is checked against
    # the dense W_R = sum_p x_p e_a e_k^T formed here, and the cos / norm / S_fin coordinates
    # taken from it directly (the projection by least squares on the span of S_fin's basis)
    pred = analyze(synthetic(n=60, T=5, K=7, d=7 if embeddings == "one-hot" else 11, embeddings=embeddings,
                             graphs="cyclic", seed=3), radii=(1.0, 5.0, 20.0))
    assert pred.orthonormal and pred.subspace.dim > 0 and len(pred.path) == 3
    E, graphs, sub = pred.corpus.E, pred.graphs, pred.subspace
    problem, states = path_states(pred, [p.R for p in pred.path])
    assert problem.in_pair_space
    trace = PathTrace(problem, tuple((p.R, mu, p.loss, x) for p, (x, mu, _) in zip(pred.path, states, strict=True)))
    # S_fin's spanning set: e_a e_k^T - e_b e_k^T for cyclic pairs (a, k), (b, k) of one block
    basis = []
    for blk in range(sub.n_blocks):
        members = sub.pairs[sub.block_index == blk]
        for p in members[1:]:
            basis.append(np.outer(E[graphs.pair_token[p]] - E[graphs.pair_token[members[0]]], E[graphs.pair_query[p]]))
    B = np.array([b.ravel() for b in basis]).T
    fin = B @ np.linalg.lstsq(B, pred.W_fin.ravel(), rcond=None)[0]
    for point, (_, _, _, x) in zip(path_points(trace, pred.W_svm, pred.W_fin, sub), trace.solved, strict=True):
        W = sum(x[p] * np.outer(E[graphs.pair_token[p]], E[graphs.pair_query[p]]) for p in range(x.size))
        projected = B @ np.linalg.lstsq(B, W.ravel(), rcond=None)[0]
        assert point.norm == pytest.approx(np.linalg.norm(W), rel=1e-12)
        assert point.cos_svm == pytest.approx(np.sum(W * pred.W_svm) / np.linalg.norm(W) / np.linalg.norm(pred.W_svm),
                                              rel=1e-12)
        assert point.fin_distance == pytest.approx(np.linalg.norm(projected - fin), rel=1e-9, abs=1e-12)


def background_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "theorycheck-background" and t.is_alive()]


def test_no_path_and_no_thread_left_when_the_svm_is_infeasible(example):
    pred = analyze(example("infeasible"), radii=RADII)
    assert pred.svm is None and pred.path == ()
    assert background_threads() == []


def test_no_thread_left_when_the_svm_raises(example, monkeypatch):
    import theorycheck.predictions as predictions

    def broken(*_args, **_kwargs):
        raise RuntimeError("solver broke")

    monkeypatch.setattr(predictions, "solve_graph_svm", broken)
    with pytest.raises(RuntimeError, match="solver broke"):
        analyze(example("mix"), radii=RADII)
    assert background_threads() == []


def test_frobenius_cos():
    A = np.array([[1.0, 0.0], [0.0, 0.0]])
    B = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert frobenius_cos(A, B) == pytest.approx(1 / np.sqrt(2), abs=1e-15)
    assert frobenius_cos(A, np.zeros((2, 2))) == 0.0
