"""Exact rational linear algebra (theorycheck.symbolic.exact) against independent computations."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from theorycheck.symbolic.exact import (
    exact_gram,
    floor_dyadic,
    independent_rows,
    matmul,
    nullspace,
    positive_definite,
    positive_definite_fast,
    solve,
    solve_consistent,
    sqrt_upper,
    to_fractions,
)


def fraction_matrix(rows):
    return np.array([[Fraction(int(x)) if isinstance(x, (int, np.integer)) else Fraction(x) for x in row]
                     for row in rows], dtype=object)


def hilbert(n: int) -> np.ndarray:
    return np.array([[Fraction(1, i + j + 1) for j in range(n)] for i in range(n)], dtype=object)


def test_exact_gram_equals_fraction_dot_products():
    E = np.random.default_rng(0).standard_normal((4, 3)) * np.array([1.0, 1e-5, 3e4])
    G = exact_gram(E)
    for i in range(4):
        for j in range(4):
            assert G[i, j] == sum(Fraction(E[i, t]) * Fraction(E[j, t]) for t in range(3))


def test_matmul_equals_fraction_sums():
    rng = np.random.default_rng(1)
    A, B = to_fractions(rng.standard_normal((3, 4))), to_fractions(rng.standard_normal((4, 2)))
    C = matmul(A, B)
    for i in range(3):
        for j in range(2):
            assert C[i, j] == sum(A[i, t] * B[t, j] for t in range(4))
    assert matmul(A, B[:, 0]).tolist() == C[:, 0].tolist()


def test_solve_is_exact_on_an_ill_conditioned_system():
    H = hilbert(9)  # condition number ~5e11: float solves lose most digits
    x_true = np.array([Fraction(k - 4, k + 1) for k in range(9)], dtype=object)
    b = matmul(H, x_true)
    assert solve(H, b).tolist() == x_true.tolist()


def test_solve_refuses_a_singular_system_and_detects_inconsistency():
    A = fraction_matrix([[1, 2], [2, 4]])
    with pytest.raises(np.linalg.LinAlgError):
        solve(A, [1, 2])
    x, cols = solve_consistent(A, [1, 2])  # consistent: x = (1, 0)
    assert x.tolist() == [1, 0] and cols == [0]
    assert solve_consistent(A, [1, 3])[0] is None


def test_independent_rows_and_nullspace_agree_with_rank():
    rng = np.random.default_rng(2)
    base = rng.integers(-3, 4, size=(3, 6))
    A = fraction_matrix(np.vstack([base, base[0] + 2 * base[1], base[2] - base[1]]))  # rank 3
    keep = independent_rows(A)
    assert keep == [0, 1, 2]
    kernel = nullspace(A)
    assert len(kernel) == 6 - 3
    for v in kernel:
        assert all(x == 0 for x in matmul(A, v))


def test_positive_definite_is_exact_where_floats_are_not():
    H = hilbert(14)  # positive definite, but numpy's Cholesky fails on it
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(np.array(H, dtype=float))
    assert positive_definite(H) == (True, -1)
    assert positive_definite(fraction_matrix([[1, 2], [2, 1]])) == (False, 1)
    assert positive_definite(fraction_matrix([[1, 0], [0, 0]])) == (False, 1)
    assert positive_definite(fraction_matrix([[-1]])) == (False, 0)


def test_rounding_helpers_bound_from_the_right_side():
    for x in (Fraction(2), Fraction(1, 3), Fraction(10**30 + 7, 3), Fraction(1, 10**40)):
        up = sqrt_upper(x)
        assert Fraction(up) ** 2 >= x
        assert up <= math.sqrt(float(x)) * (1 + 1e-14)
        low = floor_dyadic(x)
        assert low <= x and x - low <= x * Fraction(1, 2**40)
    assert sqrt_upper(Fraction(0)) == 0.0


def test_fast_definiteness_test_is_sound_and_sharp_enough():
    assert positive_definite_fast(hilbert(14))  # lambda_min ~ 1e-19, far above the rounding
    big = hilbert(8) * Fraction(2**300) + Fraction(1, 3)  # entries of ~300 bits: the congruence path
    assert positive_definite_fast(big)
    assert not positive_definite_fast(fraction_matrix([[1, 1], [1, 1]]) * Fraction(2**300))
    singular = fraction_matrix([[1, 1], [1, 1]])
    assert not positive_definite_fast(singular)
    assert positive_definite_fast(singular + fraction_matrix([[Fraction(1, 10**40), 0], [0, 0]]))  # det 1e-40
    assert not positive_definite_fast(singular - fraction_matrix([[Fraction(1, 10**40), 0], [0, 0]]))
    rng = np.random.default_rng(3)
    for _ in range(40):  # whenever the fast test says "definite", the exact test agrees
        B = rng.integers(-3, 4, size=(6, 5)).astype(object) * 2**45  # large entries: the congruence path
        A = fraction_matrix(B @ B.T) + fraction_matrix(np.diag(rng.integers(-1, 2, size=6)).astype(object) * 2**88)
        if positive_definite_fast(A):
            assert positive_definite(A)[0]


def test_fraction_free_elimination_on_random_rank_deficient_systems():
    import sympy as sp

    rng = np.random.default_rng(4)
    for trial in range(30):
        m, n, r = rng.integers(2, 7), rng.integers(2, 7), rng.integers(1, 4)
        A = fraction_matrix(rng.integers(-5, 6, size=(m, r)) @ rng.integers(-5, 6, size=(r, n)))
        A = A * Fraction(int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        rank = sp.Matrix([[sp.Rational(int(x.numerator), int(x.denominator)) for x in row] for row in A]).rank()
        assert len(independent_rows(A)) == rank
        b = matmul(A, to_fractions(rng.integers(-3, 4, size=n)))  # consistent by construction
        x, cols = solve_consistent(A, b)
        assert x is not None and len(cols) == rank
        assert matmul(A, x).tolist() == b.tolist()
        if rank < m:  # a right-hand side outside the column space is detected
            kernel_left = nullspace(A.T)[0]
            assert solve_consistent(A, b + kernel_left)[0] is None, trial
