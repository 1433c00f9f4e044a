"""The certified radius around W^fin: it must contain the true minimiser, known independently.

Independent facts: the 2:1 two-cycle has W^fin[a, q] = -W^fin[b, q] = log(2)/2 (moment
matching, THEORY.md §4.4: 3 pi_a = 2 with pi_a = e^{u_a}/(e^{u_a} + e^{u_b}) and u_a = -u_b in
S_fin); cvxpy's exponential-cone reference is an independent solver; the true W^fin lies
in every certified ball, so any two balls must intersect.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from theorycheck.corpus import load_corpus
from theorycheck.corpus.synthetic import synthetic
from theorycheck.corpus.types import corpus_from_windows
from theorycheck.finite import CyclicSubspace, solve_finite, solve_finite_cvxpy
from theorycheck.graphs import build_graphs
from theorycheck.symbolic.finite_bound import certify_finite

A, B, C, Q = range(4)


@pytest.fixture(scope="module")
def two_cycle():
    corpus = corpus_from_windows([[A, B, Q], [A, B, Q], [A, B, Q]], [A, A, B], ("a", "b", "c", "q"))
    graphs = build_graphs(corpus)
    return corpus, graphs, solve_finite(corpus, graphs)


def distance_to_truth(W) -> float:
    """||W - W^fin||_F with W^fin[a,q] = -W^fin[b,q] = log(2)/2, in 50-digit arithmetic."""
    with mpmath.workdps(50):
        half_log2 = mpmath.log(2) / 2
        total = mpmath.mpf(0)
        for (i, j), x in np.ndenumerate(W):
            target = half_log2 if (i, j) == (A, Q) else -half_log2 if (i, j) == (B, Q) else 0
            total += (mpmath.mpf(float(x)) - target) ** 2
        return float(mpmath.sqrt(total))


def test_newton_solution_is_certified_to_float_precision(two_cycle):
    corpus, graphs, fin = two_cycle
    bound = certify_finite(corpus, graphs, fin.W)
    assert bound.status == "certified" and bound.dim == 1
    assert bound.radius < 1e-8
    assert distance_to_truth(fin.W) <= bound.radius
    # the Hessian of 3 Lbar at u_a - u_b = log 2 is 3 pi_a pi_b = 2/3 per unit of (u_a - u_b), i.e.
    # 4/3 in the isometric coordinate (u_a - u_b)/sqrt(2): the certified mu is a lower bound, close to it
    assert 4 / 3 * 0.99 <= bound.convexity_bound <= 4 / 3


@pytest.mark.parametrize("delta", [1e-3, 1e-2, -0.1])
def test_perturbed_points_get_larger_radii_that_still_contain_the_truth(two_cycle, delta):
    corpus, graphs, fin = two_cycle
    direction = np.zeros((4, 4))
    direction[A, Q], direction[B, Q] = 1 / math.sqrt(2), -1 / math.sqrt(2)  # unit vector of S_fin
    at_newton = certify_finite(corpus, graphs, fin.W)
    moved = fin.W + delta * direction
    bound = certify_finite(corpus, graphs, moved)
    assert bound.status == "certified"
    truth = distance_to_truth(moved)
    assert truth <= bound.radius <= 10 * truth  # contains W^fin, and is informative
    assert bound.radius > at_newton.radius
    assert abs(delta) > at_newton.radius  # the Newton ball rules the moved point out


def test_a_point_far_from_the_minimiser_is_not_certified(two_cycle):
    corpus, graphs, fin = two_cycle
    moved = fin.W.copy()
    moved[A, Q], moved[B, Q] = moved[A, Q] + 0.5, moved[B, Q] - 0.5
    bound = certify_finite(corpus, graphs, moved)
    assert bound.status == "not certified" and not bound.certified
    assert bound.radius == math.inf and "strong convexity could not be certified" in bound.message


def test_a_perturbation_off_s_fin_is_covered_by_the_centre_distance(two_cycle):
    corpus, graphs, fin = two_cycle
    moved = fin.W.copy()
    moved[C, A] += 1e-3  # orthogonal to S_fin: the centre distance carries it
    bound = certify_finite(corpus, graphs, moved)
    assert bound.status == "certified"
    assert abs(bound.centre_distance - 1e-3) <= 1e-12
    assert distance_to_truth(moved) <= bound.radius


@pytest.mark.parametrize("embeddings,seed", [("orthonormal", 0), ("orthonormal", 2), ("unit-norm", 0),
                                             ("unit-norm", 2)])
def test_paper_style_data_newton_and_cvxpy_balls_agree(embeddings, seed):
    corpus = synthetic(n=6, T=4, K=6, d=8, embeddings=embeddings, graphs="cyclic", seed=seed)
    graphs = build_graphs(corpus)
    subspace = CyclicSubspace(corpus.E, graphs)
    assert subspace.dim > 0
    newton = solve_finite(corpus, graphs, subspace).W
    reference = solve_finite_cvxpy(corpus, graphs, subspace)
    at_newton = certify_finite(corpus, graphs, newton, subspace)
    at_reference = certify_finite(corpus, graphs, reference, subspace)
    assert at_newton.status == at_reference.status == "certified"
    assert at_newton.radius < 1e-8
    gap = float(np.linalg.norm(reference - newton))
    assert gap <= at_reference.radius  # the cvxpy ball contains the Newton solution
    assert at_reference.radius <= 1e3 * gap + 1e-9  # and is not vacuous


def test_one_hot_text_corpus_is_certified_block_by_block():
    corpus = load_corpus(None, window=3, vocab=12).realizable()
    graphs = build_graphs(corpus)
    subspace = CyclicSubspace(corpus.E, graphs)
    fin = solve_finite(corpus, graphs, subspace)
    bound = certify_finite(corpus, graphs, fin.W, subspace)
    assert bound.status == "certified" and "independent blocks" in bound.message
    assert bound.radius < 1e-6
    # the true W^fin lies in both balls, so they must intersect
    rng = np.random.default_rng(0)
    step = subspace.matrix(subspace.center(rng.standard_normal(subspace.pairs.size)))
    step *= 1e-3 / np.linalg.norm(step)
    moved = certify_finite(corpus, graphs, fin.W + step, subspace)
    assert moved.status == "certified"
    assert moved.radius + bound.radius >= 1e-3 * (1 - 1e-12)


def test_acyclic_data_are_trivial_and_limits_are_reported(two_cycle):
    corpus = corpus_from_windows([[A, B, Q], [B, C, Q]], [A, B], ("a", "b", "c", "q"))
    graphs = build_graphs(corpus)
    bound = certify_finite(corpus, graphs, np.zeros((4, 4)))
    assert bound.status == "trivial" and bound.radius == 0.0 and bound.certified
    corpus, graphs, fin = two_cycle
    too_large = certify_finite(corpus, graphs, fin.W, max_dim=0)
    assert too_large.status == "too large" and "limit 0" in too_large.message
