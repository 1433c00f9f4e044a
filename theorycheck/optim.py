"""Newton-CG with backtracking for the smooth convex problems of the pipeline.

Used for W^fin (§4.3) and the regularization path (§5.2).  Exact Hessian-vector
products; Jacobi-preconditioned CG inner solves with forcing term min(0.5, sqrt||g||);
Armijo backtracking.  Near the optimum, where loss differences sink below float64
resolution, a step is accepted when it lowers the gradient norm instead.
``project`` keeps iterates in a subspace (e.g. zero block sums) when the objective is
invariant along its complement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Vector = np.ndarray


@dataclass(frozen=True)
class NewtonResult:
    x: Vector
    value: float
    gradient_norm: float
    iterations: int
    converged: bool
    diverging: bool


def conjugate_gradient(hvp: Callable[[Vector], Vector], b: Vector, tol: float, maxiter: int,
                       inv_diag: Vector | None = None, project: Callable[[Vector], Vector] | None = None) -> Vector:
    """Preconditioned CG for H x = b, H symmetric PSD (stops at non-positive curvature)."""
    proj = project or (lambda v: v)
    x = np.zeros_like(b)
    r = b.copy()
    z = proj(r * inv_diag) if inv_diag is not None else r.copy()
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
        z = proj(r * inv_diag) if inv_diag is not None else r
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
    diag: Callable[[Vector], Vector] | None = None,
    project: Callable[[Vector], Vector] | None = None,
    cg_maxiter: int = 1000,
    blocks: tuple[np.ndarray, Callable[[Vector], Vector]] | None = None,
) -> NewtonResult:
    """Minimise a smooth convex function.

    ``blocks = (coordinate_block, block_values)`` declares the objective separable:
    the sum over blocks of block_values(x), block b depending only on coordinates with
    coordinate_block == b.  The line search then backtracks each block on its own, so
    one badly scaled block does not shorten every other block's Newton step.
    """
    x = x0.astype(np.float64).copy()
    f, g = value_grad(x)
    gnorm = float(np.linalg.norm(g))
    it = 0
    for it in range(1, maxiter + 1):
        if gnorm <= gtol:
            return NewtonResult(x, f, gnorm, it - 1, True, False)
        forcing = min(0.5, np.sqrt(gnorm)) * gnorm
        inv_diag = None
        if diag is not None:
            dg = diag(x)
            inv_diag = 1.0 / np.maximum(dg, 1e-12 * max(float(dg.max()), 1e-300))
        p = conjugate_gradient(lambda v: hvp(x, v), -g, forcing, min(x.size, cg_maxiter), inv_diag, project)  # noqa: B023 - used at once
        slope = float(g @ p)
        if slope >= 0:
            p, slope = -g, -gnorm**2
        if blocks is not None:
            x_new = _blockwise_search(x, p, g, blocks)
            f_new, g_new = value_grad(x_new)
            gnorm_new = float(np.linalg.norm(g_new))
            if not (f_new <= f + 1e-14 * max(1.0, abs(f)) and (f_new < f or gnorm_new < gnorm)):
                return NewtonResult(x, f, gnorm, it, gnorm <= gtol, False)
            x, f, g, gnorm = x_new, f_new, g_new, gnorm_new
            continue
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


def _blockwise_search(x: Vector, p: Vector, g: Vector, blocks) -> Vector:
    """Armijo backtracking with one step length per block of a separable objective."""
    coord_block, block_values = blocks
    n_blocks = int(coord_block.max()) + 1 if coord_block.size else 0
    base = block_values(x)
    slope = np.bincount(coord_block, g * p, minlength=n_blocks)
    t = np.ones(n_blocks)
    pending = np.ones(n_blocks, dtype=bool)
    for _ in range(60):
        trial = block_values(x + t[coord_block] * p)
        ok = np.isfinite(trial) & (trial <= base + 1e-4 * t * slope + 1e-15 * np.maximum(1.0, np.abs(base)))
        pending &= ~ok
        if not pending.any():
            break
        t[pending] *= 0.5
    t[pending] = 0.0
    return x + t[coord_block] * p
