"""Exact rational linear algebra for the certificates (``fractions.Fraction``).

Float64 data are converted with ``Fraction(x)``, which is exact (every float is a
dyadic rational), so a statement proved here is a statement about the numbers
actually stored.  Matrices are numpy object arrays of Fractions; row operations are
vectorised over rows, which keeps dense elimination usable up to a few hundred rows.
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


def is_zero_row(row: np.ndarray) -> bool:
    return not any(x != 0 for x in row)


def independent_rows(A: np.ndarray) -> list[int]:
    """Indices of a maximal linearly independent set of rows of A (first come, first kept)."""
    A = np.array(A, dtype=object)
    m = A.shape[0]
    if m == 0:
        return []
    basis: list[np.ndarray] = []  # reduced rows, each with its pivot column
    pivots: list[int] = []
    keep = []
    for i in range(m):
        row = A[i].copy()
        for p, b in zip(pivots, basis, strict=True):
            if row[p] != 0:
                row = row - row[p] * b
        nz = [j for j, x in enumerate(row) if x != 0]
        if nz:
            p = nz[0]
            row = row / row[p]
            # keep earlier basis rows reduced in the new pivot column
            basis = [b - b[p] * row if b[p] != 0 else b for b in basis]
            basis.append(row)
            pivots.append(p)
            keep.append(i)
    return keep


def solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with A x = b for a square nonsingular rational A (Gauss-Jordan); raises if singular."""
    A = np.array(A, dtype=object)
    n = A.shape[0]
    aug = np.empty((n, n + 1), dtype=object)
    aug[:, :n] = A
    aug[:, n] = np.asarray(b, dtype=object)
    for col in range(n):
        pivot = next((r for r in range(col, n) if aug[r, col] != 0), None)
        if pivot is None:
            raise np.linalg.LinAlgError("singular rational system")
        if pivot != col:
            aug[[col, pivot]] = aug[[pivot, col]]
        aug[col] = aug[col] / aug[col, col]
        for r in range(n):
            if r != col and aug[r, col] != 0:
                aug[r] = aug[r] - aug[r, col] * aug[col]
    return aug[:, n].copy()


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
    """Exact LDL^T test: (True, -1) iff every pivot is > 0 (A symmetric rational).

    Otherwise (False, i) with i the first pivot <= 0 (Sylvester's criterion: the
    leading principal minors are the products of the pivots).
    """
    R = np.array(A, dtype=object)
    n = R.shape[0]
    for k in range(n):
        pivot = R[k, k]
        if pivot <= 0:
            return False, k
        if k + 1 < n:
            col = R[k + 1:, k]
            factors = col / pivot
            R[k + 1:, k + 1:] = R[k + 1:, k + 1:] - np.outer(factors, R[k, k + 1:])
    return True, -1


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
