"""Training the single-layer attention model (THEORY.md §1.3-§1.5, §5.3, §6).

Parametrisations of the combined key-query matrix W:

* ``pairs``   : orthonormal embeddings.  GD moves W only by E^T G E, so the pair scores
                m_p = e_a^T W e_k evolve exactly like W itself (||E^T G E||_F = ||G||_F):
                the loop runs on the P pair scores and W(t) = W(0) + E^T (M(t) - M(0)) E.
                With Adam this is exact only for one-hot E (Adam is coordinate-wise in W).
* ``full``    : general embeddings, W in R^{d×d}.
* ``factored``: W = K Q^T with K, Q in R^{d×m} (Tarzanagh et al. 2023's K·Q^T model).

Optimisers: ``gd`` W <- W - lr ∇L (the theorem's), ``ngd`` W <- W - lr ∇L/||∇L||_F (the
papers' experiments, THEORY §6), ``adam`` (conjecture tests).  Initialisation: zero or
U(-1/sqrt(d), 1/sqrt(d)) entries (PyTorch's nn.Linear default used by the official code).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from theorycheck.errors import InputError
from theorycheck.model import ScoreMap, WindowStats, evaluate

OPTIMIZERS = ("gd", "ngd", "adam")
SCHEDULES = ("auto", "inverse", "inverse-sqrt", "constant")
INITS = ("random", "zero")


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "ngd"
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
        """``auto`` is the inverse schedule for normalised GD and a constant step otherwise."""
        if self.schedule == "auto":
            return "inverse" if self.optimizer == "ngd" else "constant"
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
) -> TrainResult:
    """Full-batch training of L(W) (log-loss, identity head) from ``config``.

    ``monitor(step, W) -> (metrics, all_criteria_hold)`` runs at every checkpoint;
    ``config.early_stop`` stops at the first checkpoint where it returns True.
    Ctrl-C stops the loop cleanly: the partial trajectory is returned with
    ``interrupted=True`` and a final checkpoint at the step reached.
    """
    config = config.validate()
    stats = stats.deduplicated()
    if config.backend == "torch":
        from theorycheck.torch_backend import train_torch

        return train_torch(stats, score_map, orthonormal, config, monitor, on_step)
    rng = np.random.default_rng(config.seed)
    params = make_parametrization(score_map, orthonormal, config)
    optimizer = Optimizer(config)

    def advance(theta):
        return optimizer.step(theta, params.grad(theta, evaluate(params.scores(theta), stats, probabilities=False).grad))

    return run_loop(params.init(config, rng), advance, params.matrix, params.name, config, monitor, on_step)


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
                    if not bool(np.all(np.isfinite(to_matrix(theta)))):
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
