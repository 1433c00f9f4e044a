"""Newton-CG with backtracking for the smooth convex problems of the pipeline.

Used for W^fin with general E (§4.3) and the regularization path (§5.2).  Exact
Hessian-vector products; CG inner solves (:func:`conjugate_gradient`, Jacobi-preconditioned
where a caller passes the diagonal) with forcing term min(0.5, sqrt||g||); Armijo backtracking.  Near the optimum, where loss differences sink below float64
resolution, a step is accepted when it lowers the gradient norm instead.
(W^fin for orthonormal E has its own block Newton solver, :mod:`theorycheck.finite`.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Vector = np.ndarray


def norm_without_blas(x: Vector) -> float:
    """||x||_2 of a 1-D vector by einsum: no BLAS (OpenBLAS wakes its threads for every dnrm2:
    2.3 ms for 43,000 entries on a busy 2-core machine against 0.2 ms) and no temporary.
    Inside :func:`theorycheck.runtime.single_threaded_blas` BLAS is as fast; use it there."""
    return float(np.sqrt(np.einsum("i,i->", x, x)))


@dataclass(frozen=True)
class NewtonResult:
    x: Vector
    value: float
    gradient_norm: float
    iterations: int
    converged: bool
    diverging: bool


def conjugate_gradient(hvp: Callable[[Vector], Vector], b: Vector, tol: float, maxiter: int,
                       inv_diag: Vector | None = None) -> Vector:
    """Preconditioned CG for H x = b, H symmetric PSD (stops at non-positive curvature)."""
    x = np.zeros_like(b)
    r = b.copy()
    z = r * inv_diag if inv_diag is not None else r.copy()
    p = z.copy()
    rz = float(r @ z)
    for _ in range(maxiter):
        if np.linalg.norm(r) <= tol:
            break
        Hp = hvp(p)
        curvature = float(p @ Hp)
        if curvature <= 1e-300 * max(1.0, float(p @ p)):
            return x if x.any() else b
        alpha = rz / curvature
        x += alpha * p
        r -= alpha * Hp
        z = r * inv_diag if inv_diag is not None else r
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x


def newton_cg(
    value_grad: Callable[[Vector], tuple[float, Vector]],
    hvp: Callable[[Vector, Vector], Vector],
    x0: Vector,
    gtol: float = 1e-12,
    maxiter: int = 200,
    divergence_norm: float = 1e6,
    cg_maxiter: int = 1000,
) -> NewtonResult:
    """Minimise a smooth convex function (unpreconditioned CG inner solves)."""
    x = x0.astype(np.float64).copy()
    f, g = value_grad(x)
    gnorm = float(np.linalg.norm(g))
    it = 0
    for it in range(1, maxiter + 1):
        if gnorm <= gtol:
            return NewtonResult(x, f, gnorm, it - 1, True, False)
        forcing = min(0.5, np.sqrt(gnorm)) * gnorm
        p = conjugate_gradient(lambda v: hvp(x, v), -g, forcing, min(x.size, cg_maxiter))  # noqa: B023 - used at once
        slope = float(g @ p)
        if slope >= 0:
            p, slope = -g, -gnorm**2
        t = 1.0
        accepted = False
        for _ in range(60):
            x_new = x + t * p
            f_new, g_new = value_grad(x_new)
            gnorm_new = float(np.linalg.norm(g_new))
            if np.isfinite(f_new) and (f_new <= f + 1e-4 * t * slope
                                       or (f_new <= f + 1e-14 * max(1.0, abs(f)) and gnorm_new < gnorm)):
                accepted = True
                break
            t *= 0.5
        if not accepted:
            return NewtonResult(x, f, gnorm, it, gnorm <= gtol, False)
        x, f, g, gnorm = x_new, f_new, g_new, gnorm_new
        if np.linalg.norm(x) > divergence_norm:
            return NewtonResult(x, f, gnorm, it, False, True)
    return NewtonResult(x, f, gnorm, it, gnorm <= gtol, False)

