"""Training the single-layer attention model (THEORY.md §1.3-§1.5, §5.3, §6).

Parametrisations of the combined key-query matrix W:

* ``pairs``   : orthonormal embeddings.  GD moves W only by E^T G E, so the pair scores
                m_p = e_a^T W e_k evolve exactly like W itself (||E^T G E||_F = ||G||_F):
                the loop runs on the P pair scores and W(t) = W(0) + E^T (M(t) - M(0)) E.
                With Adam this is exact only for one-hot E (Adam is coordinate-wise in W).
* ``full``    : general embeddings, W in R^{d×d}.
* ``factored``: W = K Q^T with K, Q in R^{d×m} (Tarzanagh et al. 2023's K·Q^T model).

Optimisers: ``split-ngd`` (the default: normalised GD on S_fin and on its orthogonal complement
separately, :class:`FinSplit`), ``gd`` W <- W - lr ∇L (the theorem's), ``ngd`` W <- W - lr ∇L/||∇L||_F
(the papers' experiments, THEORY §6), ``adam`` (conjecture tests).  Initialisation: zero or
U(-1/sqrt(d), 1/sqrt(d)) entries (PyTorch's nn.Linear default used by the official code).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from theorycheck.corpus.types import embedding_scale
from theorycheck.errors import InputError
from theorycheck.model import ScoreMap, SplitLoss, WindowStats, evaluate
from theorycheck.optim import norm_without_blas
from theorycheck.runtime import single_threaded_blas

OPTIMIZERS = ("split-ngd", "gd", "ngd", "adam")
SCHEDULES = ("auto", "inverse", "inverse-sqrt", "constant")
INITS = ("random", "zero")


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "split-ngd"
    lr: float = 0.05
    steps: int = 96000  # docs/verify.md: the smallest budget with HOLDS and a direction resolution <= 1° on the bundled corpus
    init: str = "random"
    seed: int = 0
    factorized_width: int | None = None  # W = K Q^T with this width m
    checkpoints: int = 40  # log-spaced checkpoints (plus step 0 and the last step)
    early_stop: bool = False
    backend: str = "numpy"  # or "torch"
    device: str | None = None  # torch device; default cuda when available
    schedule: str = "auto"  # auto: inverse for ngd, constant otherwise; inverse: lr min(1, t0/t); inverse-sqrt; constant
    decay_from: int = 1000
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    def validate(self) -> TrainConfig:
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; use 'random' or 'zero'")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number (got {self.lr})")
        if self.steps < 1:
            raise InputError("--steps must be at least 1")
        if self.factorized_width is not None and self.factorized_width < 1:
            raise InputError("--factorized width must be at least 1")
        if self.factorized_width is not None and self.init == "zero":
            raise InputError("a factorised model K Q^T started at zero never moves (zero gradient); use --init random")
        if self.optimizer == "split-ngd" and (self.factorized_width is not None or self.backend == "torch"):
            raise InputError("--optimizer split-ngd steps on W itself with the numpy backend; with --factorized or "
                             "--backend torch use --optimizer ngd (or gd, adam)")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.decay_from < 1:
            raise InputError(f"--decay-from must be at least 1 (got {self.decay_from})")
        if self.checkpoints < 2:
            raise InputError(f"--checkpoints must be at least 2 (got {self.checkpoints}); the verdict needs 8")
        if not np.isfinite(float(self.lr) * self.steps):
            raise InputError("--lr times --steps overflows; lower --lr")
        if self.backend not in ("numpy", "torch"):
            raise InputError(f"unknown backend {self.backend!r}; use numpy or torch")
        return self

    @property
    def effective_schedule(self) -> str:
        """``auto`` is the inverse schedule for normalised GD (split-ngd: its S_fin step) and a
        constant step otherwise."""
        if self.schedule == "auto":
            return "inverse" if self.optimizer in ("ngd", "split-ngd") else "constant"
        return self.schedule

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def checkpoint_steps(steps: int, count: int) -> np.ndarray:
    """0, then ``count`` log-spaced steps up to ``steps`` (deduplicated, always ending at steps)."""
    grid = np.unique(np.round(np.logspace(0, np.log10(max(steps, 1)), max(count, 1))).astype(int))
    return np.unique(np.concatenate([[0], grid[grid <= steps], [steps]]))


# --------------------------------------------------------------------------- parametrisations
class Parametrization:
    """theta (flat float64 vector) <-> W, with pair scores and their gradient."""

    name = ""

    def __init__(self, score_map: ScoreMap, d: int):
        self.score_map = score_map
        self.d = d

    def initial_matrix(self, config: TrainConfig, rng: np.random.Generator) -> np.ndarray:
        if config.init == "zero":
            return np.zeros((self.d, self.d))
        bound = 1.0 / np.sqrt(self.d)
        return rng.uniform(-bound, bound, size=(self.d, self.d))


class PairParams(Parametrization):
    name = "pairs"

    def init(self, config, rng):
        self.W0 = self.initial_matrix(config, rng)
        self.m0 = self.score_map.scores(self.W0)
        return self.m0.copy()

    def scores(self, theta):
        return theta

    def grad(self, theta, g_scores):
        return g_scores

    def matrix(self, theta):
        return self.W0 + self.score_map.adjoint(theta - self.m0)


class FullParams(Parametrization):
    name = "full"

    def init(self, config, rng):
        return self.initial_matrix(config, rng).ravel()

    def scores(self, theta):
        return self.score_map.scores(theta.reshape(self.d, self.d))

    def grad(self, theta, g_scores):
        return self.score_map.adjoint(g_scores).ravel()

    def matrix(self, theta):
        return theta.reshape(self.d, self.d).copy()


class FactoredParams(Parametrization):
    """W = K Q^T; ∇_K = ∇_W Q, ∇_Q = ∇_W^T K."""

    name = "factored"

    def __init__(self, score_map, d, width):
        super().__init__(score_map, d)
        self.width = width

    def split(self, theta):
        half = self.d * self.width
        return theta[:half].reshape(self.d, self.width), theta[half:].reshape(self.d, self.width)

    def init(self, config, rng):
        bound = 1.0 / np.sqrt(self.d)
        return rng.uniform(-bound, bound, size=2 * self.d * self.width)

    def matrix(self, theta):
        K, Q = self.split(theta)
        return K @ Q.T

    def scores(self, theta):
        return self.score_map.scores(self.matrix(theta))

    def grad(self, theta, g_scores):
        K, Q = self.split(theta)
        G = self.score_map.adjoint(g_scores)
        return np.concatenate([(G @ Q).ravel(), (G.T @ K).ravel()])


def make_parametrization(score_map: ScoreMap, orthonormal: bool, config: TrainConfig) -> Parametrization:
    d = score_map.E.shape[1]
    if config.factorized_width:
        return FactoredParams(score_map, d, config.factorized_width)
    if orthonormal and (config.optimizer != "adam" or score_map.one_hot):
        return PairParams(score_map, d)
    return FullParams(score_map, d)


def curvature_bound(stats: WindowStats, score_map: ScoreMap) -> float:
    """An upper bound B on the largest eigenvalue of the Hessian of L in W (Frobenius), anywhere.

    Per window the Hessian in the pair scores is the covariance diag(pi) - pi pi^T (§5.1), so
    (a) in W it is the covariance of the x_a x_k^T, at most max ||x_a||^2 ||x_k||^2 (the weights
    sum to 1); (b) in the pair scores its Gershgorin rows are 2 pi_j (1 - pi_j) <= 1/2, so the
    sum over windows is at most h = max_p (weight of the windows holding pair p) / 2, and
    W -> scores has operator norm <= ||E||_2^2 <= ||E||_1 ||E||_inf (Schur; exact, 1, for one-hot E).
    B = min(a, h ||E||_2^4).  A window's entries are distinct pairs; were one repeated, h would
    only grow (still a bound)."""
    E = score_map.E
    row_norm = np.einsum("ij,ij->i", E, E)
    pairs = np.flatnonzero(np.bincount(stats.entry_pair, minlength=stats.n_pairs))
    covariance = float((row_norm[score_map.pair_token[pairs]] * row_norm[score_map.pair_query[pairs]]).max())
    share = np.bincount(stats.entry_pair, stats.weight[stats.rows()], minlength=stats.n_pairs)
    abs_E = np.abs(E)
    spectral_squared = float(abs_E.sum(axis=0).max() * abs_E.sum(axis=1).max())
    gershgorin = 0.5 * float(share.max()) * spectral_squared ** 2
    return max(min(covariance, gershgorin), 1e-300)


class FinSplit:
    """The orthogonal split W = Pi_fin W + W_perp (THEORY.md §4.1) that ``split-ngd`` steps on.

    split-ngd: theta <- theta - min(1/B, lr_t/||Pi g||) Pi g - lr g_perp/||g_perp||, g = ∇L:
    on S_fin a GD step clipped to the schedule's length lr_t (inverse by default), with B a bound
    on the curvature of L (:func:`curvature_bound`), so that near W^fin it is plain GD with
    step 1/B, which contracts monotonically without the hopping of a normalised step; on the complement a
    normalised step of constant length lr.  g_perp = Pi_perp ∇L comes from
    :class:`theorycheck.model.SplitLoss` (exact where (I - Pi) g is rounding noise: once the
    leak out of the label SCCs is below 1e-16).  W_perp only moves the cross-SCC margins and
    Pi_fin W only the composition inside the SCCs; the complement grows like lr·t instead of
    log t (docs/verify.md: why the limit is GD's).
    ``pair_scc``: the SCC of every (token, query) pair (TokenPriorityGraphs.scc).
    """

    def __init__(self, subspace, pair_scc: np.ndarray):
        self.subspace = subspace
        self.pair_scc = pair_scc

    def outside(self, stats: WindowStats) -> np.ndarray:
        """Entries whose token is not in the SCC of their window's label."""
        scc = self.pair_scc
        return scc[stats.entry_pair] != scc[stats.entry_pair[stats.label_entry]][stats.rows()]

    def project(self, params: Parametrization, v: np.ndarray) -> np.ndarray:
        """Pi_fin of a parameter-space vector (pair scores or vec W)."""
        sub = self.subspace
        if isinstance(params, PairParams):
            out = np.zeros_like(v)
            out[sub.pairs] = sub.center(v[sub.pairs])
            return out
        return sub.project(v.reshape(params.d, params.d)).ravel()

    def fin_part(self, params: Parametrization, v: np.ndarray) -> np.ndarray:
        """Pi_fin v; for pair scores as (cyclic pairs, their block-centred values), the rest 0."""
        if isinstance(params, PairParams):
            return self.subspace.pairs, self.subspace.center(v[self.subspace.pairs])
        return self.project(params, v)

    def perp_part(self, params: Parametrization, v: np.ndarray) -> np.ndarray:
        """(I - Pi_fin) v, in place for pair scores (v is a fresh gradient)."""
        if isinstance(params, PairParams):
            pairs = self.subspace.pairs
            v[pairs] = self.subspace.block_mean(v[pairs])  # v - (v - mean) on the cyclic pairs
            return v
        return v - self.project(params, v)


# --------------------------------------------------------------------------- optimisers
class Optimizer:
    """The update rules, written with arithmetic that numpy arrays and torch tensors share,
    so both backends run the same code."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.t = 0
        self.m1 = self.m2 = None

    def rate(self) -> float:
        """Step size at step t (1-based): lr, lr min(1, t0/t) (inverse) or lr min(1, sqrt(t0/t))."""
        c = self.config
        if c.effective_schedule == "inverse":
            return c.lr * min(1.0, c.decay_from / self.t)
        if c.effective_schedule == "inverse-sqrt":
            return c.lr * min(1.0, (c.decay_from / self.t) ** 0.5)
        return c.lr

    def split_step(self, theta, fin, perp, fin_rate: float):
        """split-ngd: on S_fin a GD step ``fin_rate`` clipped to length lr_t (the schedule), on its
        complement a normalised step of constant length lr.  ``fin`` is a vector, or (index,
        values) when it is zero elsewhere (pair scores: the cyclic pairs)."""
        self.t += 1
        index, fin = fin if isinstance(fin, tuple) else (slice(None), fin)
        fin_norm, perp_norm = norm_without_blas(fin), norm_without_blas(perp)
        # a new array: the caller's theta may be viewed by a checkpoint (FullParams.matrix);
        # (-c) perp + theta, not theta - c perp: numpy reuses the temporary (-c) perp for the
        # sum, one 821,397-vector pass and allocation fewer (2.2 -> 1.4 ms); bitwise the same
        theta = (-self.config.lr / perp_norm) * perp + theta if perp_norm > 0 else theta.copy()
        if fin_norm > 0:
            theta[index] -= min(fin_rate, self.rate() / fin_norm) * fin
        return theta

    def step(self, theta, grad):
        c = self.config
        self.t += 1
        lr = self.rate()
        if c.optimizer == "gd":
            return theta - lr * grad
        if c.optimizer == "ngd":
            norm = (grad * grad).sum() ** 0.5
            return theta - lr * grad / (norm + np.finfo(float).eps)
        b1, b2 = c.adam_betas
        if self.m1 is None:
            self.m1, self.m2 = theta * 0, theta * 0
        self.m1 = b1 * self.m1 + (1 - b1) * grad
        self.m2 = b2 * self.m2 + (1 - b2) * grad * grad
        m_hat = self.m1 / (1 - b1**self.t)
        v_hat = self.m2 / (1 - b2**self.t)
        return theta - lr * m_hat / (v_hat**0.5 + c.adam_eps)


# --------------------------------------------------------------------------- loop
@dataclass(frozen=True)
class TrainResult:
    config: TrainConfig
    parametrization: str
    checkpoints: tuple[dict, ...]
    W: np.ndarray
    steps_done: int
    interrupted: bool
    stopped_early: bool
    seconds: float
    extra: dict = field(default_factory=dict)


Monitor = Callable[[int, np.ndarray], tuple[dict, bool]]


def train(
    stats: WindowStats,
    score_map: ScoreMap,
    orthonormal: bool,
    config: TrainConfig,
    monitor: Monitor | None = None,
    on_step: Callable[[int], None] | None = None,
    split: FinSplit | None = None,
) -> TrainResult:
    """Full-batch training of L(W) (log-loss, identity head) from ``config``.

    ``split``: S_fin of the corpus, needed by ``split-ngd``.

    ``monitor(step, W) -> (metrics, all_criteria_hold)`` runs at every checkpoint;
    ``config.early_stop`` stops at the first checkpoint where it returns True.
    Ctrl-C stops the loop cleanly: the partial trajectory is returned with
    ``interrupted=True`` and a final checkpoint at the step reached.

    The run is made in the units of E / s (s = ``embedding_scale(E)``): it trains W' = s^2 W,
    which gives the same scores on E / s, and reports W = W' / s^2 to ``monitor`` and in the
    result.  So the learning rate, its schedule and the random start mean for embeddings of any
    magnitude what they mean for unit-norm ones (at E x 1024 a start of scores ~1e6 saturated
    the softmax and a step of lr in W moved the scores by 5e4).  s = 1 (one-hot, orthonormal,
    unit-norm embeddings) changes nothing.
    """
    config = config.validate()
    scale = embedding_scale(score_map.E)
    if scale != 1.0:
        unit_map = ScoreMap(score_map.E / scale, score_map.pair_token, score_map.pair_query)
        unit_monitor = None if monitor is None else (lambda step, W: monitor(step, W / scale**2))
        result = train(stats, unit_map, orthonormal, config, unit_monitor, on_step, split)
        return replace(result, W=result.W / scale**2, extra={**result.extra, "embedding_scale": scale})
    stats = stats.deduplicated()
    if config.backend == "torch":
        from theorycheck.torch_backend import train_torch

        return train_torch(stats, score_map, orthonormal, config, monitor, on_step)
    rng = np.random.default_rng(config.seed)
    params = make_parametrization(score_map, orthonormal, config)
    optimizer = Optimizer(config)
    blas = contextlib.nullcontext()

    if config.optimizer != "split-ngd":
        def advance(theta):
            return optimizer.step(theta, params.grad(theta, evaluate(params.scores(theta), stats,
                                                                     probabilities=False).grad))
    else:
        if split is None:
            raise ValueError("split-ngd needs the corpus's S_fin: train(..., split=FinSplit(subspace, graphs.scc))")
        split_loss = SplitLoss(stats, split.outside(stats))
        fin_rate = 1.0 / curvature_bound(stats, score_map)
        if not isinstance(params, PairParams):  # general E: two S_fin projections a step
            split.subspace.prepare_repeated_projections(2 * config.steps)
            if split.subspace.gram_inverse is not None:
                # their symmetric mat-vecs on one OpenBLAS thread: threaded, they contend with
                # SplitLoss's threads (V = 100 / T = 8 / d = 128: 16-20 steps/s threaded, 27-30 on one)
                blas = single_threaded_blas()

        def advance(theta):
            ev, ell, _ = split_loss(params.scores(theta))
            return optimizer.split_step(theta, split.fin_part(params, params.grad(theta, ev.grad)),
                                        split.perp_part(params, params.grad(theta, ell)), fin_rate)

    with blas:
        return run_loop(params.init(config, rng), advance, params.matrix, params.name, config, monitor, on_step)


def _all_finite(theta) -> bool:
    """Whether every parameter is a finite number (a numpy array or a torch tensor, on any
    device): checked on theta, not on W, which at vocabulary 2,000 costs a d×d matrix per checkpoint."""
    if hasattr(theta, "isfinite"):  # torch
        return bool(theta.isfinite().all())
    return bool(np.isfinite(theta).all())


def run_loop(theta, advance, to_matrix, parametrization: str, config: TrainConfig,
             monitor: Monitor | None, on_step, extra: dict | None = None) -> TrainResult:
    """The checkpointed loop shared by the numpy and torch backends.

    ``advance(theta) -> theta`` is one optimiser step; ``to_matrix(theta) -> W`` (numpy).
    """
    marks = set(checkpoint_steps(config.steps, config.checkpoints).tolist())
    records: list[dict] = []
    interrupted = stopped = False
    step = 0
    t0 = time.perf_counter()

    def record(at: int) -> bool:
        if monitor is None:
            return False
        metrics, ok = monitor(at, to_matrix(theta))
        records.append({"step": at, **metrics})
        return ok

    signal_name = None
    try:
        with terminate_as_interrupt():
            record(0)
            for step in range(1, config.steps + 1):
                theta = advance(theta)
                if on_step is not None:
                    on_step(step)
                if step in marks:
                    if not _all_finite(theta):
                        raise InputError(f"training diverged at step {step}: the iterates are no longer finite "
                                         f"numbers; lower --lr (got {config.lr:g})")
                    if record(step) and config.early_stop:
                        stopped = True
                        break
    except KeyboardInterrupt as exc:
        interrupted = True
        signal_name = getattr(exc, "signal_name", "SIGINT")
        if records and records[-1]["step"] != step:
            record(step)
    extra = dict(extra or {})
    if signal_name:
        extra["signal"] = signal_name
    return TrainResult(config, parametrization, tuple(records), to_matrix(theta), step, interrupted, stopped,
                       time.perf_counter() - t0, extra)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the loop stops and keeps its partial trajectory."""

    signal_name = "SIGTERM"


@contextlib.contextmanager
def terminate_as_interrupt():
    """While training, SIGTERM raises Terminated (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
