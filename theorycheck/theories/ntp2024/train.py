"""Gradient descent on the linear decoder of THEORY-ntp §1, in the coordinates of the contexts' span.

L(W) = -sum_j pi_j sum_{z in S_j} p_{j,z} log softmax(W h_j)_z.  With C = W B (contexts.py) the
logits are L = C Hr^T and

    grad_C L = ((Q - P^T) diag(pi)) Hr,   Q[:, j] = softmax(L[:, j]),

with ||grad_W L|| = ||grad_C L|| (B has orthonormal columns and grad_W = grad_C B^T), so GD and
normalised GD on C are GD and NGD on W; the part W(0)(I - B B^T) that the logits do not see
never moves.  The optimiser, schedules and checkpoint grid are theorycheck.train's.
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from theorycheck.errors import InputError
from theorycheck.theories.ntp2024.contexts import Contexts
from theorycheck.train import Optimizer, TrainConfig, TrainResult, run_loop

DENSE_LIMIT = 50_000_000  # entries of the dense V×m target matrix


class LinearDecoderLoss:
    """Loss and gradient of L in the coordinates C (V×r), computed without cancellation.

    Per context j, with q~ = softmax of the logits restricted to S_j and Q_j = the softmax mass
    outside S_j (from the log-sum-exps of the two parts):

        dL/dlogit_z = pi_j [(q~_z - p_z) - mean_S(q~ - p) - Q_j q~_z]   for z in S_j,
        dL/dlogit_v = pi_j q_v                                          for v not in S_j,
        L - H = sum_j pi_j [KL(p_j || q~_j) - log(1 - Q_j)].

    sum_S (q~ - p) = 0 exactly; removing its rounded mean keeps the part of the gradient
    orthogonal to F (which is -Q_j/|S_j| on S_j, as small as e^-R far out) exact, where the
    plain q - p would bury it under rounding errors of size 1e-17."""

    def __init__(self, ctx: Contexts):
        if ctx.V * ctx.m > DENSE_LIMIT:
            raise InputError(f"training the linear decoder holds a V×m = {ctx.V}×{ctx.m} matrix, above "
                             f"{DENSE_LIMIT} entries; use a smaller --vocab")
        self.ctx = ctx
        self.target = np.asarray(ctx.P.T.todense())  # V×m, column j = p_j
        self.support = self.target > 0
        self.sizes = self.support.sum(axis=0)
        self.entropy = ctx.entropy
        with np.errstate(divide="ignore"):
            self.log_target = np.where(self.support, np.log(np.where(self.support, self.target, 1.0)), 0.0)

    def parts(self, C: np.ndarray):
        """(logits, log q~ on S, log Q per context, log(1 - Q) per context, lse over all)."""
        logits = self.ctx.logits(C)
        on = np.where(self.support, logits, -np.inf)
        off = np.where(self.support, -np.inf, logits)
        lse_on = _logsumexp(on)
        lse_off = _logsumexp(off)
        lse = np.logaddexp(lse_on, lse_off)
        log_Q = lse_off - lse
        log_not_Q = lse_on - lse
        return logits, lse_on, log_Q, log_not_Q, lse

    def gap(self, C: np.ndarray) -> float:
        """L(C) - H, computed directly (KL divergences and -log(1 - Q_j))."""
        return self._gap_terms(*self.parts(C))[0]

    def _gap_terms(self, logits, lse_on, log_Q, log_not_Q, lse):
        """(L - H, log q~ on the supports)."""
        log_qt = np.where(self.support, logits - lse_on, 0.0)
        kl = np.einsum("vj,vj->j", self.target, self.log_target - log_qt)
        return float(self.ctx.pi @ (kl - log_not_Q)), log_qt

    def __call__(self, C: np.ndarray, grad: bool = True) -> tuple[float, np.ndarray | None]:
        """(L(C), grad_C L)."""
        parts = self.parts(C)
        logits, _, log_Q, _, lse = parts
        gap, log_qt = self._gap_terms(*parts)
        loss = self.entropy + gap
        if not grad:
            return loss, None
        qt = np.where(self.support, np.exp(log_qt), 0.0)
        diff = qt - self.target
        diff -= self.support * (diff.sum(axis=0) / np.maximum(self.sizes, 1))
        Q = np.exp(log_Q)
        g_logits = np.where(self.support, diff - Q * qt, np.exp(logits - lse)) * self.ctx.pi
        return loss, (g_logits if self.ctx.independent else g_logits @ self.ctx.Hr)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Column-wise log-sum-exp, -inf for a column of -inf."""
    top = x.max(axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.exp(x - safe).sum(axis=0))


def initial_matrix(ctx: Contexts, config: TrainConfig) -> np.ndarray:
    """W(0): zero, or U(±1/sqrt d) entries (PyTorch's nn.Linear default), seeded by config.seed."""
    if config.init == "zero":
        return np.zeros((ctx.V, ctx.d))
    rng = np.random.default_rng(config.seed)
    bound = 1.0 / np.sqrt(ctx.d)
    return rng.uniform(-bound, bound, size=(ctx.V, ctx.d))


@dataclass(frozen=True, eq=False)
class DecoderTrajectory:
    """C(t_k) at every checkpoint and W(0): W(t) = W(0)(I - B B^T) + C(t) B^T."""

    steps: np.ndarray
    coords: np.ndarray  # (checkpoints, V, r)
    W0: np.ndarray  # V×d

    def __len__(self) -> int:
        return int(self.steps.size)

    def matrix(self, i: int, ctx: Contexts) -> np.ndarray:
        W0 = self.W0
        return W0 - (W0 @ ctx.basis) @ ctx.basis.T + ctx.to_matrix(self.coords[i])

    def rescaled(self, factor: float) -> DecoderTrajectory:
        """The same run in units where the contexts are divided by ``factor`` (C and W(0) times it)."""
        return DecoderTrajectory(self.steps, self.coords * factor, self.W0 * factor)

    def save(self, path) -> None:
        from theorycheck.io import write_bytes

        buffer = _io.BytesIO()
        np.savez_compressed(buffer, steps=self.steps, coords=self.coords, W0=self.W0)
        write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path, ctx: Contexts) -> DecoderTrajectory:
        try:
            with np.load(path, allow_pickle=False) as z:
                steps, coords, W0 = z["steps"], z["coords"], z["W0"]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path} is not a checkpoint file written by `theorycheck verify --theory ntp2024` "
                             f"({exc}); rerun verify") from None
        ok = (steps.ndim == 1 and coords.shape == (steps.size, ctx.V, ctx.r) and W0.shape == (ctx.V, ctx.d)
              and np.all(np.isfinite(coords)) and np.all(np.isfinite(W0)))
        if not ok:
            raise InputError(f"{path} does not match the run's contexts (shapes or non-finite values); rerun verify")
        return cls(steps.astype(np.int64), coords.astype(np.float64), W0.astype(np.float64))


def train_decoder(ctx: Contexts, config: TrainConfig,
                  monitor: Callable[[int, np.ndarray], tuple[dict, bool]] | None = None,
                  on_step: Callable[[int], None] | None = None) -> tuple[TrainResult, DecoderTrajectory]:
    """Full-batch GD / NGD on L from W(0); ``monitor(step, C)`` at every checkpoint.

    The run is made on the contexts H / s (``Contexts.unit_scale``): it trains C' = s C, which
    gives the same logits, and reports C = C' / s to ``monitor`` and in the trajectory, so the
    learning rate and the random start mean for contexts of any magnitude what they mean for
    unit-norm ones (s = 1 for one-hot and orthonormal contexts changes nothing).
    """
    config = config.validate()
    unit_ctx, scale = ctx.unit_scale()
    if scale != 1.0:
        unit_monitor = None if monitor is None else (lambda step, C: monitor(step, C / scale))
        result, traj = train_decoder(unit_ctx, config, unit_monitor, on_step)
        return (replace(result, W=result.W / scale, extra={**result.extra, "context_scale": scale}),
                traj.rescaled(1.0 / scale))
    if config.optimizer not in ("gd", "ngd"):
        raise InputError(f"ntp2024 trains the linear decoder with gd or ngd (the theorem's optimisers), "
                         f"not {config.optimizer}; use --optimizer gd or ngd")
    if config.factorized_width is not None or config.backend != "numpy":
        raise InputError("ntp2024 trains the linear decoder W itself with numpy; drop --factorized and --backend")
    loss = LinearDecoderLoss(ctx)
    W0 = initial_matrix(ctx, config)
    optimizer = Optimizer(config)
    steps: list[int] = []
    coords: list[np.ndarray] = []

    def record(step: int, C: np.ndarray):
        steps.append(int(step))
        coords.append(C.copy())
        return monitor(step, C) if monitor is not None else ({}, False)

    def advance(C):
        return optimizer.step(C, loss(C)[1])

    result = run_loop(ctx.to_coords(W0), advance, lambda C: C, "linear decoder (span coordinates)", config,
                      record, on_step)
    traj = DecoderTrajectory(np.asarray(steps, dtype=np.int64), np.asarray(coords), W0)
    return result, traj
