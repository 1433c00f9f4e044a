"""The cyclic subspace S_fin and W^fin (THEORY.md §4; predictions P6, P7, P8, P17).

Independent facts: closed forms on the toys (derived in the comments), a per-position
implementation of the reduced loss of §4.3 (tests/reference.py) differentiated by central
finite differences along an orthonormal basis of S_fin built here by SVD, moment matching
(§4.4) evaluated from that implementation, BFGS from a random start, and the exp-cone
reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import cyclic_basis, position_loss, random_windows, scc_maps, unit_rows, windows_of
from scipy.optimize import minimize

from theorycheck.corpus import corpus_from_windows
from theorycheck.corpus.synthetic import synthetic
from theorycheck.finite import CyclicSubspace, solve_finite, solve_finite_cvxpy
from theorycheck.graphs import build_graphs

LN2 = np.log(2.0)


def fin(corpus):
    return solve_finite(corpus, build_graphs(corpus))


# --------------------------------------------------------------------------- closed forms


def test_cycle_closed_form(example):
    # O_i = {a, b} for all three windows [a b q] (labels a, a, b).  With u = W[a,q] - W[b,q] each window
    # puts softmax mass p = e^u / (e^u + 1) on a; the loss -(2 log p + log(1-p))/3 is minimal at p = 2/3,
    # u = ln 2.  S_fin = span{(e_a - e_b) e_q^T} so W[a,q] + W[b,q] = 0 and every other entry is 0.
    # inf L = -(2/3 ln 2/3 + 1/3 ln 1/3) = ln 3 - (2/3) ln 2.
    corpus = example("cycle")
    a, b, q = (corpus.vocab.index(t) for t in "abq")
    sol = fin(corpus)
    W = sol.W
    assert W[a, q] - W[b, q] == pytest.approx(LN2, abs=1e-10)
    assert W[a, q] + W[b, q] == pytest.approx(0.0, abs=1e-12)
    W_rest = W.copy()
    W_rest[[a, b], q] = 0
    assert np.abs(W_rest).max() == 0.0
    assert sol.loss == pytest.approx(np.log(3) - 2 / 3 * LN2, abs=1e-12)
    assert sol.dim == 1 and sol.status == "optimal" and sol.n_cyclic_windows == 3


def test_mix_closed_form_with_token_counts(example):
    # Reduced windows of the {a,b} block of G^(q): {a:2, b:1} labelled b and {a:1, b:1} labelled a.
    # With x = exp(W[a,q] - W[b,q]): pi_1(a) = 2x/(2x+1), pi_2(a) = x/(x+1).  Moment matching for a
    # (labelled once): 2x/(2x+1) + x/(x+1) = 1  <=>  2x^2 = 1, x = 1/sqrt 2, W[a,q] - W[b,q] = -ln(2)/2.
    # Then both labels get probability 1/(1+sqrt 2) = sqrt 2 - 1 and inf L = (2/4) ln(1 + sqrt 2).
    corpus = example("mix")
    a, b, q = (corpus.vocab.index(t) for t in "abq")
    sol = fin(corpus)
    assert sol.W[a, q] - sol.W[b, q] == pytest.approx(-LN2 / 2, abs=1e-10)
    assert sol.W[a, q] + sol.W[b, q] == pytest.approx(0.0, abs=1e-12)
    assert np.linalg.norm(sol.W) == pytest.approx(LN2 / 2 / np.sqrt(2), abs=1e-10)
    assert sol.loss == pytest.approx(0.5 * np.log(1 + np.sqrt(2)), abs=1e-12)


def test_contradictory_duplicates_give_zero(make_corpus):
    # §4.4: {a,b} labelled a once and b once -> by the symmetry a <-> b the unique minimiser is 0, loss ln 2.
    corpus = make_corpus([(["a", "b", "q"], "a"), (["a", "b", "q"], "b")], "abq")
    sol = fin(corpus)
    assert sol.dim == 1
    assert np.abs(sol.W).max() <= 1e-12
    assert sol.loss == pytest.approx(LN2, abs=1e-12)


# --------------------------------------------------------------------------- P6 / P7 on random data


def cases():
    """(name, corpus, windows, labels): cyclic instances with a non-zero W^fin."""
    out = []
    for emb, d in (("one-hot", 6), ("orthonormal", 8), ("unit-norm", 8)):
        corpus = synthetic(n=20, T=4, K=6, d=d, embeddings=emb, graphs="cyclic", seed=11)
        out.append((f"synthetic-{emb}", corpus, *windows_of(corpus)))
    # repeated tokens inside windows (log-count terms) with general embeddings
    rng = np.random.default_rng(5)
    windows, labels = random_windows(rng, n=24, T=5, K=5)
    corpus = corpus_from_windows(windows, labels, tuple("abcde"), E=unit_rows(rng, 5, 7))
    out.append(("repeats-unit-norm", corpus, windows, labels))
    return out


CASES = cases()


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def solved(request):
    _, corpus, windows, labels = request.param
    sccs = scc_maps(windows, labels)
    basis = cyclic_basis(corpus.E, sccs)
    return corpus, windows, labels, sccs, basis, fin(corpus)


def test_instances_are_not_trivial(solved):
    *_, basis, sol = solved
    assert basis.shape[1] >= 2 and np.linalg.norm(sol.W) > 0.1


def test_dimension_of_the_cyclic_subspace(solved):
    # §4.1: dim S_fin = sum over cyclic SCCs of (|C| - 1) for linearly independent E
    corpus, windows, labels, sccs, basis, sol = solved
    expected = sum(len(c) - 1 for scc in sccs.values() for c in set(scc.values()))
    assert basis.shape[1] == expected == sol.dim == CyclicSubspace(corpus.E, build_graphs(corpus)).dim


def test_coordinates_are_isometric_projections(solved):
    corpus, *_, basis, _ = solved
    sub = CyclicSubspace(corpus.E, build_graphs(corpus))
    W = np.random.default_rng(0).standard_normal((corpus.d, corpus.d))
    projected = (basis @ (basis.T @ W.ravel())).reshape(W.shape)
    assert np.linalg.norm(sub.coords(W)) == pytest.approx(np.linalg.norm(projected), rel=1e-10)
    np.testing.assert_allclose(sub.project(W), projected, atol=1e-10)


def test_w_fin_lies_in_the_cyclic_subspace(solved):
    *_, basis, sol = solved
    w = sol.W.ravel()
    assert np.linalg.norm(w - basis @ (basis.T @ w)) <= 1e-10 * max(1.0, np.linalg.norm(w))


def test_loss_value_and_finite_difference_gradient_vanish(solved):
    corpus, windows, labels, sccs, basis, sol = solved
    E = corpus.E

    def reduced(W):
        return position_loss(W, E, windows, labels, sccs)[0]

    assert reduced(sol.W) == pytest.approx(sol.loss, rel=1e-12)
    h = 1e-5
    fd = np.array([(reduced(sol.W + h * b.reshape(sol.W.shape)) - reduced(sol.W - h * b.reshape(sol.W.shape)))
                   / (2 * h) for b in basis.T])
    assert np.abs(fd).max() <= 1e-8
    _, grad = position_loss(sol.W, E, windows, labels, sccs)
    assert np.linalg.norm(basis.T @ grad.ravel()) <= 1e-10
    # the same finite differences do see a gradient away from the optimum (the check has teeth)
    shifted = sol.W + 0.1 * basis[:, 0].reshape(sol.W.shape)
    assert abs(reduced(shifted + h * basis[:, 0].reshape(sol.W.shape)) - reduced(shifted)) / h > 1e-4


def test_moment_matching(solved):
    # §4.4: per (k, cyclic C, a in C): sum over windows with k_i = k, y_i in C of (pi_i(a) - 1[a = y_i]) = 0
    corpus, windows, labels, sccs, _, sol = solved
    E = corpus.E
    residual = {}
    for w, y in zip(windows, labels, strict=True):
        k = w[-1]
        block = sccs[k][y]
        if len(block) < 2:
            continue
        keep = [t for t in w if t in block]
        s = E[keep] @ sol.W @ E[k]
        p = np.exp(s - s.max())
        p /= p.sum()
        for a in block:
            key = (k, block, a)
            residual[key] = residual.get(key, 0.0) + p[[t == a for t in keep]].sum() - (a == y)
    assert residual and max(abs(v) for v in residual.values()) <= 1e-8


def test_agrees_with_bfgs_from_a_random_start(solved):
    corpus, windows, labels, sccs, basis, sol = solved
    shape = sol.W.shape

    def f(c):
        value, grad = position_loss((basis @ c).reshape(shape), corpus.E, windows, labels, sccs)
        return value, basis.T @ grad.ravel()

    start = np.random.default_rng(1).standard_normal(basis.shape[1])
    result = minimize(f, start, jac=True, method="BFGS", options={"gtol": 1e-11, "maxiter": 2000})
    W_bfgs = (basis @ result.x).reshape(shape)
    assert np.linalg.norm(W_bfgs - sol.W) <= 1e-5 * max(1.0, np.linalg.norm(sol.W))


def test_agrees_with_the_exponential_cone_reference(solved):
    corpus, *_, sol = solved
    W_ref = solve_finite_cvxpy(corpus, build_graphs(corpus))
    assert np.linalg.norm(W_ref - sol.W) <= 1e-3 * max(1.0, np.linalg.norm(sol.W))


# --------------------------------------------------------------------------- P8 and P17


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_cyclic_subspace_and_w_fin_scale_with_the_embeddings(scale):
    # the loss sees E W E^T only, so W^fin(c E) = W^fin(E) / c^2 on the same S_fin; its dimension
    # is sum (|C| - 1) at every scale (at c = 1e-3 an absolute rank floor had made S_fin = {0})
    corpus = synthetic(n=20, T=4, K=6, d=8, embeddings="unit-norm", graphs="cyclic", seed=11)
    from dataclasses import replace

    scaled = replace(corpus, E=corpus.E * scale)
    graphs = build_graphs(corpus)
    sccs = scc_maps(*windows_of(corpus))
    expected = sum(len(c) - 1 for scc in sccs.values() for c in set(scc.values()))
    assert CyclicSubspace(scaled.E, graphs).dim == CyclicSubspace(corpus.E, graphs).dim == expected > 0
    unit, at_scale = fin(corpus), fin(scaled)
    assert np.linalg.norm(at_scale.W * scale**2 - unit.W) <= 1e-6 * np.linalg.norm(unit.W)
    # the gradient is reported in the units of E / s: the same verdict "optimal" at every scale
    assert at_scale.status == unit.status == "optimal"
    assert at_scale.gradient_norm == pytest.approx(unit.gradient_norm, rel=1e-3, abs=1e-14)


@pytest.mark.parametrize("embeddings,d", [("one-hot", 8), ("unit-norm", 8)])
def test_acyclic_data_has_trivial_finite_component(embeddings, d):
    corpus = synthetic(n=4, T=6, K=8, d=d, embeddings=embeddings, graphs="acyclic", seed=2)
    windows, labels = windows_of(corpus)
    assert cyclic_basis(corpus.E, scc_maps(windows, labels)).shape[1] == 0
    sol = fin(corpus)
    assert sol.dim == 0 and not sol.W.any() and sol.status.startswith("trivial")


@pytest.mark.parametrize("embeddings,d", [("one-hot", 6), ("unit-norm", 8)])
def test_uniform_duplication_leaves_w_fin_unchanged(embeddings, d):
    corpus = synthetic(n=20, T=4, K=6, d=d, embeddings=embeddings, graphs="cyclic", seed=11)
    windows, labels = windows_of(corpus)
    tripled = corpus_from_windows(windows * 3, labels * 3, corpus.vocab, E=corpus.E)
    W, W3 = fin(corpus).W, fin(tripled).W
    assert np.linalg.norm(W3 - W) <= 1e-6 * np.linalg.norm(W)


def test_non_uniform_duplication_inside_a_cyclic_block_changes_w_fin(make_corpus):
    # cycle toy with the b-labelled window duplicated: labels a, a, b, b -> symmetric -> W^fin = 0 (was ln 2 apart)
    samples = [(["a", "b", "q"], "a")] * 2 + [(["a", "b", "q"], "b")] * 2
    corpus = make_corpus(samples, "abcq")
    assert np.abs(fin(corpus).W).max() <= 1e-12
    corpus = make_corpus(samples[:3], "abcq")
    assert np.linalg.norm(fin(corpus).W) == pytest.approx(LN2 / np.sqrt(2), abs=1e-10)


# --------------------------------------------------------------------------- the block Newton at size


@pytest.fixture(scope="module")
def many_blocks():
    corpus = synthetic(n=300, T=8, K=16, d=16, embeddings="one-hot", graphs="cyclic", seed=21).realizable()
    windows, labels = windows_of(corpus)
    sccs = scc_maps(windows, labels)
    return corpus, windows, labels, sccs


def test_block_newton_kkt_on_many_blocks_of_different_sizes(many_blocks):
    """Gradient of the reduced loss (per-position, tests/reference.py) orthogonal to S_fin at
    W^fin, on an instance whose (query, SCC) blocks have several sizes (batched solves)."""
    corpus, windows, labels, sccs = many_blocks
    sub = CyclicSubspace(corpus.E, build_graphs(corpus))
    sizes = np.bincount(sub.block_index)
    assert sub.n_blocks >= 10 and len(set(sizes.tolist())) >= 3
    sol = fin(corpus)
    assert sol.status == "optimal"
    basis = cyclic_basis(corpus.E, sccs)
    loss, grad = position_loss(sol.W, corpus.E, windows, labels, sccs)
    assert loss == pytest.approx(sol.loss, rel=1e-12)
    assert np.linalg.norm(basis.T @ grad.ravel()) <= 1e-10
    # and the check has teeth: one block moved off its optimum shows a gradient
    moved = sol.W + 0.05 * basis[:, 0].reshape(sol.W.shape)
    assert np.linalg.norm(basis.T @ position_loss(moved, corpus.E, windows, labels, sccs)[1].ravel()) > 1e-5


def test_warm_start_and_zero_start_reach_the_same_w_fin(many_blocks, monkeypatch):
    import theorycheck.finite as finite

    corpus = many_blocks[0]
    warm = fin(corpus)
    monkeypatch.setattr(finite, "WARM_START", False)
    cold = fin(corpus)
    assert cold.status == warm.status == "optimal"
    assert np.linalg.norm(warm.W - cold.W) <= 1e-8 * max(1.0, np.linalg.norm(cold.W))
    assert warm.iterations <= cold.iterations


def _sorted_reduced_windows(corpus):
    """The reduced, merged windows over the block-sorted coordinates, as _solve_finite_blocks sees them."""
    from dataclasses import replace

    import theorycheck.finite as finite

    graphs = build_graphs(corpus)
    sub = CyclicSubspace(corpus.E, graphs)
    stats, _ = finite.reduced_stats(corpus, graphs, sub)
    lay = finite._BlockLayout(sub.block_index)
    merged = finite.merge_duplicate_windows(stats)
    return sub, lay, replace(merged, entry_pair=lay.pos[merged.entry_pair], n_pairs=lay.block.size,
                             pair_query=lay.block)


def test_scaling_sweeps_never_raise_the_loss_and_reach_the_newton_minimiser(many_blocks, monkeypatch):
    """Generalized iterative scaling with feature sum C = 1 (Darroch & Ratcliff 1972): every full
    sweep lowers the reduced loss, and the sweeps converge to the minimiser that block Newton
    finds (checked there by KKT).  A step three times as long (C = 1/3, not a valid bound)
    raises the loss: the check can tell a right step from a wrong one."""
    import theorycheck.finite as finite
    from theorycheck.model import evaluate

    corpus = many_blocks[0]
    sub, lay, stats = _sorted_reduced_windows(corpus)
    labelled = np.bincount(stats.entry_pair[stats.label_entry], stats.weight, minlength=lay.block.size)
    assert labelled.min() > 0 and np.array_equal(labelled, finite.label_mass(stats))
    monkeypatch.setattr(finite, "SCALING_SWEEPS", 1)
    c = finite._moment_start(stats, lay, labelled)
    losses = [evaluate(c, stats).loss]
    for _ in range(400):
        c, ev, done = finite._scaling_sweeps(c, stats, lay, labelled)
        if done == 0:  # refused only once the loss cannot fall any more in floating point
            assert np.linalg.norm(lay.center(ev.grad)) <= 1e-7  # loss changes ~ |g|^2, below rounding
            break
        losses.append(ev.loss)
    assert len(losses) > 20 and np.all(np.diff(losses) <= 0)
    newton = fin(corpus)
    assert sub.orthonormal  # one-hot: the coordinates are the block-centred scores
    assert np.abs(lay.center(c) - lay.center(newton.coords[lay.perm])).max() <= 1e-5
    assert losses[-1] == pytest.approx(newton.loss, rel=1e-12)
    # C = 1 is what makes the step safe: three times the step raises the loss at once here
    start = finite._moment_start(stats, lay, labelled)
    ev = evaluate(start, stats)
    with np.errstate(all="ignore"):
        tripled = evaluate(lay.center(start + 3.0 * np.log(labelled / (labelled + ev.grad))), stats).loss
    assert not tripled <= ev.loss


def test_cholesky_and_lu_block_solves_give_the_same_w_fin(many_blocks, monkeypatch):
    """Blocks from CHOLESKY_MIN_SIZE on are solved by LAPACK dposv: all blocks that way, or none,
    give one W^fin; and a block that is not positive definite falls back to LU."""
    import theorycheck.finite as finite

    corpus = many_blocks[0]
    monkeypatch.setattr(finite, "CHOLESKY_MIN_SIZE", 1)
    cholesky = fin(corpus)
    monkeypatch.setattr(finite, "CHOLESKY_MIN_SIZE", 10**9)
    lu = fin(corpus)
    assert cholesky.status == lu.status == "optimal"
    assert np.linalg.norm(cholesky.W - lu.W) <= 1e-10 * max(1.0, np.linalg.norm(lu.W))
    monkeypatch.setattr(finite, "CHOLESKY_MIN_SIZE", 1)
    indefinite = np.array([[[1.0, 2.0], [2.0, 1.0]], [[2.0, 0.0], [0.0, 3.0]]])
    rhs = np.array([[[1.0], [0.0]], [[4.0], [3.0]]])
    step = np.zeros(4)
    finite._solve_in_threads([(0, 2, 2, np.arange(2), indefinite, rhs, 8.0)], step)
    np.testing.assert_allclose(step, [-1 / 3, 2 / 3, 2.0, 1.0], rtol=1e-14)


@pytest.mark.parametrize("threads", [False, True])
def test_block_hessians_equal_the_sum_of_window_covariances(many_blocks, monkeypatch, threads):
    """_BlockHessians against H_b = sum_i w_i (diag pi_i - pi_i pi_i^T) summed window by window
    in dense arithmetic, at random probabilities and unequal weights; on one thread and with the
    blocks split over worker threads (the parts must tile the blocks: nothing counted twice)."""
    from dataclasses import replace

    import theorycheck.finite as finite
    import theorycheck.model as model

    corpus = many_blocks[0]
    graphs = build_graphs(corpus)
    sub = CyclicSubspace(corpus.E, graphs)
    stats, _ = finite.reduced_stats(corpus, graphs, sub)
    lay = finite._BlockLayout(sub.block_index)
    stats = replace(stats, entry_pair=lay.pos[stats.entry_pair], pair_query=lay.block)
    rng = np.random.default_rng(5)
    stats = replace(stats, weight=rng.uniform(0.5, 2.0, stats.n_windows))
    monkeypatch.setattr(finite, "HESSIAN_THREADS_MIN_WORK", 0.0 if threads else np.inf)
    monkeypatch.setattr(model, "_worker_count", lambda: 2)
    hessians = finite._BlockHessians(stats, lay)
    assert len(hessians.parts) == (2 if threads else 1)
    for _ in range(2):  # the second call reuses the fixed structures
        prob = rng.random(stats.entry_pair.size)
        n = lay.block.size
        dense = np.zeros((n, n))
        for i in range(stats.n_windows):
            idx = stats.entry_pair[stats.indptr[i]:stats.indptr[i + 1]]
            p = prob[stats.indptr[i]:stats.indptr[i + 1]]
            dense[np.ix_(idx, idx)] += stats.weight[i] * (np.diag(p) - np.outer(p, p))
        flat = hessians(prob)
        for b in range(lay.n_blocks):
            lo, size = lay.start[b], lay.sizes[b]
            block = flat[lay.flat_start[b]:lay.flat_start[b] + size * size].reshape(size, size)
            np.testing.assert_allclose(block, dense[lo:lo + size, lo:lo + size], atol=1e-13)
        off_block = dense.copy()
        for b in range(lay.n_blocks):
            lo, size = lay.start[b], lay.sizes[b]
            off_block[lo:lo + size, lo:lo + size] = 0.0
        assert not off_block.any()  # the windows' terms lie inside the blocks


@pytest.mark.parametrize("kernel", [True, False])
def test_fixed_pattern_product_is_the_dense_product_as_values_change(kernel):
    """_FixedPatternProduct (the numeric pass only, on kept buffers) against the dense product
    A B, three times with new values on the same patterns; and its fallback (each call A @ B),
    taken where scipy's kernel is not reachable."""
    import scipy.sparse as sp

    import theorycheck.finite as finite

    rng = np.random.default_rng(11)
    A = sp.random(40, 30, density=0.15, format="csr", random_state=rng)
    B = sp.random(30, 25, density=0.2, format="csr", random_state=rng)
    A.indices, A.indptr = A.indices.astype(np.int32), A.indptr.astype(np.int32)
    B.indices, B.indptr = B.indices.astype(np.int32), B.indptr.astype(np.int32)
    product = finite._FixedPatternProduct(A, B)
    if not kernel:
        product.kernel = None
    else:
        assert product.kernel is not None
    for _ in range(3):
        A.data[:] = rng.standard_normal(A.nnz)
        B.data[:] = rng.standard_normal(B.nnz)
        indptr, indices, data = product()
        C = sp.csr_matrix((data.copy(), indices.copy(), indptr.copy()), shape=(40, 25))
        np.testing.assert_allclose(C.toarray(), A.toarray() @ B.toarray(), atol=1e-13)
        assert C.nnz <= (abs(A).astype(bool).astype(float) @ abs(B).astype(bool).astype(float)).nnz


# --------------------------------------------------------------------------- general E: the two routes
def test_independent_generators_take_the_cholesky_route_and_match_the_newton_cg_route(monkeypatch):
    # E with independent rows: the Gram of the generators is definite, W -> block-centred cyclic
    # scores is a bijection on S_fin, and W^fin is the one-hot problem's scores mapped back.  The
    # Newton-CG in S_fin coordinates (the route for dependent generators) must reach the same W^fin.
    import theorycheck.finite as finite

    corpus = synthetic(n=30, T=5, K=7, d=9, embeddings="unit-norm", graphs="cyclic", seed=4)
    graphs = build_graphs(corpus)
    sub = CyclicSubspace(corpus.E, graphs)
    assert sub.scores_bijective and sub.cholesky is not None
    sol = solve_finite(corpus, graphs, sub)
    assert "Cholesky" in sol.details["method"] and sol.status == "optimal"
    monkeypatch.setattr(CyclicSubspace, "scores_bijective", property(lambda self: False))
    newton_cg = finite.solve_finite(corpus, graphs, sub)
    assert "method" not in newton_cg.details  # the Newton-CG route
    assert np.linalg.norm(newton_cg.W - sol.W) <= 1e-9 * np.linalg.norm(sol.W)
    # the Cholesky whitening and the eigenvector frame span the same S_fin, isometrically
    frame = sub.frame
    gram, _ = sub._generator_gram()
    np.testing.assert_allclose(frame.T @ gram @ frame, np.eye(sub.dim), atol=1e-9)
    c = np.random.default_rng(2).standard_normal(sub.dim)
    np.testing.assert_allclose(sub.coords(sub.matrix(c)), c, atol=1e-10)
    assert np.linalg.norm(sub.matrix(c)) == pytest.approx(np.linalg.norm(c), rel=1e-10)
    g = np.random.default_rng(3).standard_normal(sub.pairs.size)  # <scores(c), g> = <c, scores_adjoint(g)>
    assert sub.scores(c) @ g == pytest.approx(c @ sub.scores_adjoint(g), rel=1e-10)
    np.testing.assert_allclose(sub.scores(c), sub.score_map.scores(sub.matrix(c)), atol=1e-10)


def test_dependent_generators_use_newton_cg_in_the_eigenvector_frame():
    # K = 10 tokens in d = 4: the generators are dependent (dim S_fin 16 < sum (|C| - 1) = 33), the scores
    # no longer determine a point of S_fin, and W^fin is the minimiser over the SVD basis built here
    corpus = synthetic(n=60, T=5, K=10, d=4, embeddings="unit-norm", graphs="cyclic", seed=0)
    graphs = build_graphs(corpus)
    sub = CyclicSubspace(corpus.E, graphs)
    windows, labels = windows_of(corpus)
    sccs = scc_maps(windows, labels)
    basis = cyclic_basis(corpus.E, sccs)
    assert not sub.scores_bijective and sub.dim == basis.shape[1] < sum(
        len(c) - 1 for scc in sccs.values() for c in set(scc.values()))
    sol = solve_finite(corpus, graphs, sub)
    assert sol.status == "optimal" and np.linalg.norm(sol.W) > 0.1
    w = sol.W.ravel()
    assert np.linalg.norm(w - basis @ (basis.T @ w)) <= 1e-10 * np.linalg.norm(w)
    _, grad = position_loss(sol.W, corpus.E, windows, labels, sccs)
    assert np.linalg.norm(basis.T @ grad.ravel()) <= 1e-9
    with pytest.raises(ValueError, match="dependent generators"):
        sub.coords_of_scores(np.zeros(sub.pairs.size))


def test_projection_through_the_gram_inverse_is_the_orthogonal_projection(monkeypatch):
    """prepare_repeated_projections (Gamma^-1 by LAPACK potri, one symmetric mat-vec per
    projection) against the triangular-solve route and against the orthogonal projection onto an
    SVD basis of S_fin built here; idempotent, residual orthogonal; and a no-op where it must be."""
    import theorycheck.finite as finite
    from theorycheck.train import FinSplit, TrainConfig, train

    corpus = synthetic(n=30, T=5, K=7, d=9, embeddings="unit-norm", graphs="cyclic", seed=4).realizable()
    graphs = build_graphs(corpus)
    windows, labels = windows_of(corpus)
    basis = cyclic_basis(corpus.E, scc_maps(windows, labels))
    W = np.random.default_rng(5).standard_normal((9, 9))
    reference = (basis @ (basis.T @ W.ravel())).reshape(9, 9)
    solves = CyclicSubspace(corpus.E, graphs)
    assert solves.cholesky is not None
    solves.prepare_repeated_projections(0)  # too few calls to pay for potri
    assert solves.gram_inverse is None
    inverse = CyclicSubspace(corpus.E, graphs)
    inverse.prepare_repeated_projections(10**6)
    assert inverse.gram_inverse is not None
    for sub in (solves, inverse):
        P = sub.project(W)
        assert np.abs(P - reference).max() <= 1e-12 * np.abs(reference).max()
        assert np.abs(sub.project(P) - P).max() <= 1e-12 * np.abs(P).max()
        assert np.abs(basis.T @ (W - P).ravel()).max() <= 1e-12 * np.abs(W).max()
    monkeypatch.setattr(finite, "INVERSE_LIMIT", 0)
    capped = CyclicSubspace(corpus.E, graphs)
    capped.prepare_repeated_projections(10**6)
    assert capped.gram_inverse is None
    one_hot = synthetic(n=30, T=5, K=7, d=7, embeddings="one-hot", graphs="cyclic", seed=4).realizable()
    orthonormal = CyclicSubspace(one_hot.E, build_graphs(one_hot))
    orthonormal.prepare_repeated_projections(10**6)
    assert orthonormal.gram_inverse is None
    monkeypatch.setattr(finite, "INVERSE_LIMIT", 12_000)
    # split-ngd prepares it itself, and trains to the same W as through the triangular solves
    from theorycheck.model import ScoreMap, window_stats

    stats, score_map = window_stats(corpus, graphs), ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)
    prepared = FinSplit(CyclicSubspace(corpus.E, graphs), graphs.scc)
    unprepared = FinSplit(CyclicSubspace(corpus.E, graphs), graphs.scc)
    monkeypatch.setattr(unprepared.subspace, "prepare_repeated_projections", lambda calls: None)
    config = TrainConfig(steps=300)
    W_prepared = train(stats, score_map, False, config, split=prepared).W
    W_unprepared = train(stats, score_map, False, config, split=unprepared).W
    assert prepared.subspace.gram_inverse is not None and unprepared.subspace.gram_inverse is None
    assert np.abs(W_prepared - W_unprepared).max() <= 1e-10 * np.abs(W_unprepared).max()
