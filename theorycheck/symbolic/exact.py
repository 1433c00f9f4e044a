"""Exact rational linear algebra for the certificates (``fractions.Fraction``).

Float64 data are converted with ``Fraction(x)``, which is exact (every float is a
dyadic rational), so a statement proved here is a statement about the numbers
actually stored.  Matrices are numpy object arrays of Fractions.  Products and
eliminations scale them to integer matrices first (one common denominator) and use
fraction-free (Bareiss) elimination: float-derived rationals have denominators of
hundreds of bits, and a gcd per Fraction operation would dominate the cost.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

ZERO = Fraction(0)
ONE = Fraction(1)


def to_fractions(array) -> np.ndarray:
    """Exact Fractions of a float (or int) array, as an object array of the same shape."""
    arr = np.asarray(array)
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    for i, x in enumerate(arr.reshape(-1).tolist()):
        flat[i] = Fraction(x)
    return out


def exact_gram(E: np.ndarray) -> np.ndarray:
    """G = E E^T exactly, computed over integers after scaling E by a power of two."""
    E = np.asarray(E, dtype=np.float64)
    K = E.shape[0]
    if E.size == 0:
        return np.full((K, K), ZERO, dtype=object)
    scale = 0
    for x in E.reshape(-1).tolist():
        if x != 0.0:
            den = Fraction(x).denominator
            scale = max(scale, den.bit_length() - 1)
    ints = np.empty(E.shape, dtype=object)
    flat = ints.reshape(-1)
    for i, x in enumerate(E.reshape(-1).tolist()):
        f = Fraction(x)
        flat[i] = f.numerator * ((1 << scale) // f.denominator)
    product = ints @ ints.T
    denominator = 1 << (2 * scale)
    out = np.empty((K, K), dtype=object)
    for i in range(K):
        for j in range(K):
            out[i, j] = Fraction(int(product[i, j]), denominator)
    return out


def integer_matrix(A: np.ndarray) -> tuple[np.ndarray, int]:
    """(A_int, den) with A = A_int / den, A_int an object array of Python ints."""
    A = np.asarray(A, dtype=object)
    den = 1
    for x in A.reshape(-1):
        q = int(Fraction(x).denominator)
        if den % q:
            den = den * q // math.gcd(den, q)
    out = np.empty(A.shape, dtype=object)
    flat = out.reshape(-1)
    for i, x in enumerate(A.reshape(-1)):
        f = Fraction(x)
        flat[i] = int(f.numerator) * (den // int(f.denominator))
    return out, den


def matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Exact A @ B for rational object arrays (1-D or 2-D), computed over integers.

    Scaling both factors to integers first avoids a gcd per multiply-add, which is what
    makes Fraction matrix products slow on float-derived data.
    """
    A, B = np.asarray(A, dtype=object), np.asarray(B, dtype=object)
    if A.size == 0 or B.size == 0:
        shape = A.shape[:-1] + B.shape[1:]
        return np.full(shape, ZERO, dtype=object)
    A_int, dA = integer_matrix(A)
    B_int, dB = integer_matrix(B)
    product = A_int @ B_int
    den = dA * dB
    out = np.empty(product.shape, dtype=object)
    flat = out.reshape(-1)
    for i, x in enumerate(np.asarray(product).reshape(-1)):
        flat[i] = Fraction(int(x), den)
    return out


def _bareiss(R: np.ndarray, pivoting: bool = True) -> tuple[list[int], list[int]]:
    """Fraction-free (Bareiss) forward elimination of the integer matrix ``R`` in place.

    Returns (pivot rows, pivot columns); every division is exact, so entries stay
    integers (determinants of minors) and no gcd is ever taken.
    """
    m, n = R.shape
    prev = 1
    row = 0
    pivot_rows, pivot_cols = [], []
    order = list(range(m))
    for col in range(n):
        if row >= m:
            break
        if R[row, col] == 0:
            if not pivoting:
                continue
            swap = next((r for r in range(row + 1, m) if R[r, col] != 0), None)
            if swap is None:
                continue
            R[[row, swap]] = R[[swap, row]]
            order[row], order[swap] = order[swap], order[row]
        p = R[row, col]
        if row + 1 < m:
            below = R[row + 1:, col + 1:] * p - np.outer(R[row + 1:, col], R[row, col + 1:])
            R[row + 1:, col + 1:] = below // prev if prev != 1 else below
            R[row + 1:, col] = 0
        pivot_rows.append(order[row])
        pivot_cols.append(col)
        prev = p
        row += 1
    return pivot_rows, pivot_cols


def independent_rows(A: np.ndarray) -> list[int]:
    """Indices of a maximal linearly independent set of rows of A (pivot columns of A^T)."""
    A = np.asarray(A, dtype=object)
    if A.shape[0] == 0:
        return []
    R, _ = integer_matrix(A.T)
    _, cols = _bareiss(R)
    return cols


def solve_consistent(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | None, list[int]]:
    """A solution of A x = b (rational, any shape) with x = 0 off the pivot columns.

    One Bareiss elimination of the integer-scaled augmented matrix [A | b].  Returns
    (x, pivot columns), or (None, pivot columns) when the system is inconsistent.
    """
    A = np.asarray(A, dtype=object)
    m, n = A.shape
    aug = np.empty((m, n + 1), dtype=object)
    aug[:, :n] = A
    aug[:, n] = np.asarray(b, dtype=object)
    R, _ = integer_matrix(aug)
    _, cols = _bareiss(R)
    if cols and cols[-1] == n:
        return None, cols[:-1]
    x = [ZERO] * n
    for i in range(len(cols) - 1, -1, -1):
        c = cols[i]
        acc = Fraction(R[i, n])
        for j in cols[i + 1:]:
            if R[i, j] != 0:
                acc -= R[i, j] * x[j]
        x[c] = acc / R[i, c]
    return np.array(x + [ZERO], dtype=object)[:-1], cols


def solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with A x = b for a square nonsingular rational A; raises LinAlgError if singular."""
    x, cols = solve_consistent(A, b)
    if x is None or len(cols) < np.asarray(A).shape[1]:
        raise np.linalg.LinAlgError("singular rational system")
    return x


def nullspace(A: np.ndarray) -> list[np.ndarray]:
    """A basis of {x : A x = 0} (reduced row echelon form over the rationals)."""
    A = np.array(A, dtype=object)
    m, n = A.shape
    R = A.copy()
    pivots = []
    row = 0
    for col in range(n):
        if row >= m:
            break
        pivot = next((r for r in range(row, m) if R[r, col] != 0), None)
        if pivot is None:
            continue
        if pivot != row:
            R[[row, pivot]] = R[[pivot, row]]
        R[row] = R[row] / R[row, col]
        for r in range(m):
            if r != row and R[r, col] != 0:
                R[r] = R[r] - R[r, col] * R[row]
        pivots.append(col)
        row += 1
    free = [c for c in range(n) if c not in set(pivots)]
    basis = []
    for f in free:
        x = np.full(n, ZERO, dtype=object)
        x[f] = ONE
        for r, p in enumerate(pivots):
            x[p] = -R[r, f]
        basis.append(x)
    return basis


def positive_definite(A: np.ndarray) -> tuple[bool, int]:
    """Exact test that a symmetric rational A is positive definite: (True, -1), or (False, i).

    Sylvester's criterion: all leading principal minors > 0.  Bareiss elimination
    without pivoting produces exactly those minors as its pivots; i is the first
    minor that is <= 0.
    """
    R, _ = integer_matrix(A)
    n = R.shape[0]
    prev = 1
    for k in range(n):
        p = R[k, k]
        if p <= 0:
            return False, k
        if k + 1 < n:
            below = R[k + 1:, k + 1:] * p - np.outer(R[k + 1:, k], R[k, k + 1:])
            R[k + 1:, k + 1:] = below // prev if prev != 1 else below
        prev = p
    return True, -1


def positive_definite_fast(A: np.ndarray) -> bool:
    """A sufficient, rigorous test that a symmetric rational A is positive definite.

    See :func:`positive_definite_fast_int`; A is first scaled to an integer matrix
    (positive definiteness does not depend on a positive scale).
    """
    A = np.asarray(A, dtype=object)
    if A.shape[0] == 0:
        return True
    return positive_definite_fast_int(integer_matrix(A)[0])


def positive_definite_fast_int(M: np.ndarray) -> bool:
    """A sufficient, rigorous test that a symmetric integer matrix M is positive definite.

    Congruence plus Gershgorin: with X = L^-T from a float64 Cholesky factor L of M
    (X read exactly as dyadic rationals), B = X^T M X is computed exactly over the
    integers and is close to the identity.  If every Gershgorin disc of B lies in
    (0, inf), B is positive definite, hence X is nonsingular and M = X^-T B X^-1 is too
    (Sylvester's law of inertia).  Exact integer products of n x n matrices instead of an
    elimination whose integers grow to n times their size; small matrices (< 40 bits) use
    the exact test directly.  It can only err towards "not shown" (ill-conditioned M).
    """
    M = np.asarray(M, dtype=object)
    n = M.shape[0]
    if n == 0:
        return True
    largest = max(abs(int(x)) for x in M.reshape(-1))
    if largest == 0:
        return False
    if largest.bit_length() < 40 or n <= 3:
        return positive_definite(M)[0]
    shift = largest.bit_length() - 60
    M_f = np.array([[float(int(x) >> shift) for x in row] for row in M])
    try:
        L = np.linalg.cholesky(M_f)
    except np.linalg.LinAlgError:
        return False
    from scipy.linalg import solve_triangular

    X = solve_triangular(L, np.eye(n), lower=True).T  # X^T M_f X ~ I
    if not np.all(np.isfinite(X)):
        return False
    X_int, _ = integer_matrix(to_fractions(X))
    B = X_int.T @ (M @ X_int)
    for i in range(n):
        off = sum(abs(int(B[i, j])) for j in range(n) if j != i)
        if not int(B[i, i]) > off:
            return False
    return True


def fraction_str(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def sqrt_upper(x: Fraction) -> float:
    """A float >= sqrt(x) for a non-negative rational x (rounded up by one ulp after isqrt)."""
    if x < 0:
        raise ValueError("sqrt of a negative number")
    if x == 0:
        return 0.0
    # sqrt(p/q) = sqrt(p q) / q; isqrt gives floor, +1 bounds from above
    p, q = x.numerator, x.denominator
    shift = max(0, 120 - (p * q).bit_length() // 2)
    root = math.isqrt(p * q << (2 * shift)) + 1  # >= sqrt(p q) * 2^shift
    value = Fraction(root, q << shift)
    f = float(value)
    return f if Fraction(f) >= value else math.nextafter(f, math.inf)


def floor_dyadic(x: Fraction, bits: int = 48) -> Fraction:
    """The largest m / 2^e <= x with an m of about ``bits`` bits (keeps rationals small)."""
    if x == 0:
        return ZERO
    e = bits - (abs(x.numerator).bit_length() - x.denominator.bit_length())
    scaled = x * (Fraction(2) ** e)
    return Fraction(math.floor(scaled)) / (Fraction(2) ** e)
