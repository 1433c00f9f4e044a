"""Predictions of Thrampoulidis (NeurIPS 2024) for a linear decoder: W^mm, W^⋆ and the two
conditions (THEORY-ntp.md §2-§4).

Everything is solved in the coordinates C = W B of the contexts' span (contexts.py): logits
L = C Hr^T, L[z, j] = C_z · Hr_j, and ||W|| = ||C|| for every W whose rows lie in the span,
which the minimum-norm solutions do.

* F = span{(e_z - e_z') Hr_j^T : j, z, z' in S_j}; the compatibility equations are
  L[z, j] - L[z0_j, j] = log p_{j,z} - log p_{j,z0_j} for z in S_j (z0_j its first support token);
  W^⋆ is their minimum-norm solution, which lies in F.
* W^mm = argmin ||C||_F s.t. L[z, j] = L[z0_j, j] (z in S_j), L[z0_j, j] - L[v, j] >= 1 (v not in S_j).

Independent contexts (Hr = I) split into one column per context, solved in closed form
(THEORY-ntp §4): with s = |S_j|, W^mm[z, j] = (V - s)/V on S_j and -s/V off it, and
W^⋆[z, j] = log p_{j,z} - mean_{S_j} log p.  Otherwise the equations are solved by an SVD
(exact minimum norm), separability by an LP (HiGHS) and W^mm by a QP (cvxpy, Clarabel),
whose KKT conditions are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from theorycheck.errors import InputError
from theorycheck.theories.ntp2024.contexts import Contexts

GENERAL_LIMIT = 40_000  # unknowns V·r of the dense general path
CONSTRAINT_LIMIT = 5_000_000  # nonzeros of the LP / QP margin rows (2r per constraint)
COMPATIBLE_TOL = 1e-8  # relative least-squares residual that counts as solved


@dataclass(frozen=True, eq=False)
class FiniteSpace:
    """Projection onto F in the coordinates C, and isometric coordinates of Pi_F C.

    Independent contexts: Pi_F keeps each column's support entries minus their mean.
    General: Q (V·r × dim F) an orthonormal basis of F in vec(C) (row-major)."""

    ctx: Contexts
    Q: np.ndarray | None  # None for independent contexts

    @property
    def dim(self) -> int:
        if self.Q is not None:
            return int(self.Q.shape[1])
        return int(np.sum(np.maximum(self.ctx.support_sizes - 1, 0)))

    def project(self, C: np.ndarray) -> np.ndarray:
        if self.Q is not None:
            return (self.Q @ (self.Q.T @ C.ravel())).reshape(C.shape)
        P = self.ctx.P
        cols = np.repeat(np.arange(self.ctx.m), np.diff(P.indptr))
        values = C[P.indices, cols]
        sums = np.add.reduceat(values, P.indptr[:-1]) if values.size else np.zeros(0)
        means = sums / np.maximum(np.diff(P.indptr), 1)
        out = np.zeros_like(C)
        out[P.indices, cols] = values - np.repeat(means, np.diff(P.indptr))
        return out

    def coords(self, C: np.ndarray) -> np.ndarray:
        """A vector with ||coords(A) - coords(B)|| = ||Pi_F A - Pi_F B||_F."""
        if self.Q is not None:
            return self.Q.T @ C.ravel()
        P = self.ctx.P
        cols = np.repeat(np.arange(self.ctx.m), np.diff(P.indptr))
        return self.project(C)[P.indices, cols]


@dataclass(frozen=True, eq=False)
class NtpPredictions:
    """What the theory predicts for the contexts (all V×d arrays in the convention logits = W h)."""

    contexts: Contexts
    C_mm: np.ndarray  # W^mm B
    C_star: np.ndarray  # W^⋆ B
    finite: FiniteSpace
    assumptions: tuple[dict, ...]
    solver: dict = field(default_factory=dict)

    @property
    def W_mm(self) -> np.ndarray:
        return self.contexts.to_matrix(self.C_mm)

    @property
    def W_star(self) -> np.ndarray:
        return self.contexts.to_matrix(self.C_star)

    @property
    def applicable(self) -> bool:
        return all(a["holds"] is True for a in self.assumptions)

    def rescaled(self, contexts: Contexts, factor: float) -> NtpPredictions:
        """The predictions for ``contexts`` = these contexts / ``factor`` (W^mm and W^⋆ times
        ``factor``; F and the assumptions unchanged)."""
        return replace(self, contexts=contexts, C_mm=self.C_mm * factor, C_star=self.C_star * factor,
                       finite=FiniteSpace(contexts, self.finite.Q))

    def summary(self) -> dict:
        return {"W_mm_norm": float(np.linalg.norm(self.C_mm)), "W_star_norm": float(np.linalg.norm(self.C_star)),
                "entropy": self.contexts.entropy, "dim_F": self.finite.dim, "solver": self.solver}


# --------------------------------------------------------------------------- the constraint rows
def support_pairs(ctx: Contexts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(j, z, z0_j) for every z in S_j other than its first token z0_j."""
    P = ctx.P
    sizes = np.diff(P.indptr)
    j = np.repeat(np.arange(ctx.m), sizes)
    first = np.repeat(P.indices[P.indptr[:-1]], sizes)
    keep = P.indices != first
    return j[keep], P.indices[keep], first[keep]


def outside_pairs(ctx: Contexts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(j, z0_j, v) for every v not in S_j."""
    mask = np.ones((ctx.m, ctx.V), dtype=bool)
    mask[np.repeat(np.arange(ctx.m), np.diff(ctx.P.indptr)), ctx.P.indices] = False
    j, v = np.nonzero(mask)
    z0 = ctx.P.indices[ctx.P.indptr[:-1]][j]
    return j, z0, v


def difference_rows(ctx: Contexts, j: np.ndarray, plus: np.ndarray, minus: np.ndarray) -> sp.csr_matrix:
    """Rows a with a · vec(C) = L[plus, j] - L[minus, j] (vec row-major: C[z, a] at z·r + a)."""
    r = ctx.r
    n = j.size
    rows = np.repeat(np.arange(n), 2 * r)
    cols = np.concatenate([(plus[:, None] * r + np.arange(r)), (minus[:, None] * r + np.arange(r))], axis=1).ravel()
    vals = np.concatenate([ctx.Hr[j], -ctx.Hr[j]], axis=1).ravel()
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, ctx.V * r))


def log_ratios(ctx: Contexts, j: np.ndarray, z: np.ndarray, z0: np.ndarray) -> np.ndarray:
    logp = ctx.log_p
    return np.asarray(logp[j, z]).ravel() - np.asarray(logp[j, z0]).ravel()


# --------------------------------------------------------------------------- independent contexts
def independent_predictions(ctx: Contexts) -> tuple[np.ndarray, np.ndarray]:
    """(C_mm, C_star) in closed form, one column per context (THEORY-ntp §4)."""
    V, m = ctx.V, ctx.m
    s = ctx.support_sizes.astype(np.float64)
    P = ctx.P
    cols = np.repeat(np.arange(m), np.diff(P.indptr))
    on_support = np.zeros((V, m), dtype=bool)
    on_support[P.indices, cols] = True
    C_mm = np.where(on_support, ((V - s) / V)[None, :], (-s / V)[None, :])
    logp = ctx.log_p.data
    means = np.add.reduceat(logp, P.indptr[:-1]) / s
    C_star = np.zeros((V, m))
    C_star[P.indices, cols] = logp - np.repeat(means, np.diff(P.indptr))
    return C_mm, C_star


# --------------------------------------------------------------------------- general contexts
def general_finite(ctx: Contexts) -> tuple[np.ndarray, FiniteSpace, float]:
    """(C_star, F, relative residual): the minimum-norm solution of the compatibility
    equations A vec(C) = c by the SVD of A, and the basis of F = row space of A."""
    j, z, z0 = support_pairs(ctx)
    shape = (ctx.V, ctx.r)
    if j.size == 0:
        return np.zeros(shape), FiniteSpace(ctx, np.zeros((ctx.V * ctx.r, 0))), 0.0
    A = difference_rows(ctx, j, z, z0).toarray()
    c = log_ratios(ctx, j, z, z0)
    U, sigma, Vt = np.linalg.svd(A, full_matrices=False)
    rank = int(np.sum(sigma > 1e-10 * sigma[0])) if sigma.size and sigma[0] > 0 else 0
    x = Vt[:rank].T @ ((U[:, :rank].T @ c) / sigma[:rank])
    residual = float(np.linalg.norm(A @ x - c) / max(1.0, float(np.linalg.norm(c))))
    return x.reshape(shape), FiniteSpace(ctx, Vt[:rank].T.copy()), residual


def separable(ctx: Contexts) -> tuple[bool, str]:
    """NTP-separability as LP feasibility (HiGHS): A_eq x = 0, A_out x >= 1."""
    from scipy.optimize import linprog

    j, z, z0 = support_pairs(ctx)
    jo, z0o, v = outside_pairs(ctx)
    if jo.size == 0:
        return True, "every context's support is the whole vocabulary: no inequality, W^mm = 0"
    A_eq = difference_rows(ctx, j, z, z0) if j.size else None
    A_out = difference_rows(ctx, jo, z0o, v)
    res = linprog(np.zeros(ctx.V * ctx.r), A_ub=-A_out, b_ub=-np.ones(jo.size),
                  A_eq=A_eq, b_eq=np.zeros(j.size) if j.size else None, bounds=(None, None), method="highs")
    if res.status == 0:
        return True, f"LP feasible ({jo.size} margin constraints, {j.size} equalities)"
    if res.status == 2:
        return False, (f"no W separates the supports: the LP with {jo.size} margin constraints and {j.size} "
                       "equalities is infeasible (HiGHS)")
    raise InputError(f"the separability LP did not finish ({res.message}); rescale the embeddings")


def general_mm(ctx: Contexts) -> tuple[np.ndarray, dict]:
    """W^mm by the QP min ||C||^2 s.t. A_eq x = 0, A_out x >= 1 (cvxpy, Clarabel), with its
    KKT check: stationarity 2x = A_out^T lambda - A_eq^T nu, lambda >= 0, complementarity."""
    import cvxpy as cp

    j, z, z0 = support_pairs(ctx)
    jo, z0o, v = outside_pairs(ctx)
    n = ctx.V * ctx.r
    if jo.size == 0:
        return np.zeros((ctx.V, ctx.r)), {"method": "none", "status": "no inequality"}
    A_out = difference_rows(ctx, jo, z0o, v)
    x = cp.Variable(n)
    cons = [A_out @ x >= 1]
    A_eq = difference_rows(ctx, j, z, z0) if j.size else None
    if A_eq is not None:
        cons.append(A_eq @ x == 0)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x)), cons)
    problem.solve(solver="CLARABEL")
    if problem.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        raise InputError(f"the NTP-SVM QP ended '{problem.status}'; rescale the embeddings")
    xv = np.asarray(x.value, dtype=np.float64)
    lam = np.maximum(np.asarray(cons[0].dual_value, dtype=np.float64), 0.0)
    nu = np.asarray(cons[1].dual_value, dtype=np.float64) if A_eq is not None else np.zeros(0)
    stationarity = 2 * xv - A_out.T @ lam + (A_eq.T @ nu if A_eq is not None else 0.0)  # cvxpy: L = f + nu^T A_eq x - lam^T (A x - 1)
    margins = A_out @ xv - 1
    eq = A_eq @ xv if A_eq is not None else np.zeros(1)
    info = {"method": "qp (cvxpy, Clarabel)", "status": problem.status, "variables": n,
            "margin_constraints": int(jo.size), "equalities": int(j.size),
            "max_violation": float(max(-margins.min(initial=0.0), np.abs(eq).max(initial=0.0), 0.0)),
            "kkt_residual": float(np.linalg.norm(stationarity) / max(1.0, 2 * float(np.linalg.norm(xv)))),
            "complementarity": float(np.abs(lam * margins).max(initial=0.0))}
    return xv.reshape(ctx.V, ctx.r), info


# --------------------------------------------------------------------------- the stage
def compatibility_assumption(residual: float, how: str) -> dict:
    holds = residual <= COMPATIBLE_TOL
    detail = (f"least-squares residual {residual:.2e} of the log-ratio equations ({how})" if holds else
              f"the log-ratio equations have no exact solution: relative least-squares residual {residual:.2e} "
              f"> {COMPATIBLE_TOL:g} ({how}); the finite part W^⋆ does not exist")
    return {"name": "NTP_H-compatibility", "holds": holds, "detail": detail}


def predict(ctx: Contexts) -> NtpPredictions:
    """W^mm, W^⋆, F and the two conditions of THEORY-ntp §2 for ``ctx``."""
    if ctx.independent:
        C_mm, C_star = independent_predictions(ctx)
        why = "orthonormal context embeddings: one independent problem per context, closed form"
        assumptions = (
            {"name": "NTP_H-compatibility", "holds": True, "detail": why + " (exact, THEORY-ntp §4)"},
            {"name": "NTP-separability", "holds": True, "detail": why + ("" if ctx.full_support.all() else
             "; a margin of 1 is met by raising each context's support")},
        )
        return NtpPredictions(ctx, C_mm, C_star, FiniteSpace(ctx, None), assumptions,
                              {"method": "closed form per context (THEORY-ntp §4)", "contexts": ctx.m})
    unit_ctx, scale = ctx.unit_scale()
    if scale != 1.0:  # C(H) = C(H / s) / s, and the LP's and QP's tolerances mean at unit scale what they
        # mean for unit-norm contexts (at H x 1e3, W^mm was 2e-4 off; at H x 1e-6 the QP called a
        # separable problem infeasible)
        unit = predict(unit_ctx)
        return replace(unit.rescaled(ctx, 1.0 / scale), solver={**unit.solver, "context_scale": scale})
    unknowns = ctx.V * ctx.r
    if unknowns > GENERAL_LIMIT:
        raise InputError(f"these contexts are not orthonormal, and the general NTP-SVM path solves for V·r = "
                         f"{ctx.V}·{ctx.r} = {unknowns} unknowns, above its limit {GENERAL_LIMIT}; use --context last "
                         "with one-hot or orthonormal embeddings, or a smaller --vocab")
    C_star, finite, residual = general_finite(ctx)
    compat = compatibility_assumption(residual, f"SVD, dim F = {finite.dim}")
    solver: dict = {"method": "general: SVD for W^⋆, LP for separability, QP for W^mm", "contexts": ctx.m}
    C_mm = np.zeros((ctx.V, ctx.r))
    if not compat["holds"]:  # the theorem does not apply already; the LP would only cost time
        sep = {"name": "NTP-separability", "holds": None,
               "detail": "not checked: NTP_H-compatibility fails, so the theorem does not apply already"}
        return NtpPredictions(ctx, C_mm, C_star, finite, (compat, sep), solver)
    margins = int(ctx.m * ctx.V - ctx.P.nnz)
    if 2 * ctx.r * margins > CONSTRAINT_LIMIT:
        raise InputError(f"the separability LP and the NTP-SVM QP would have {margins} margin constraints of "
                         f"{2 * ctx.r} nonzeros each, above the general path's limit; use --context last with "
                         "one-hot or orthonormal embeddings, or a smaller --vocab")
    ok, detail = separable(ctx)
    sep = {"name": "NTP-separability", "holds": ok, "detail": detail}
    if ok:
        C_mm, info = general_mm(ctx)
        solver["qp"] = info
    return NtpPredictions(ctx, C_mm, C_star, finite, (compat, sep), solver)
