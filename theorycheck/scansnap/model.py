"""The Y/Z model of Tian et al. and its SGD (THEORY-scansnap.md §1.3-§1.5, §3.8).

Free parameters Z (attention logits, query × key) and Y (decoder, attended token ×
output token), both M×M.  A sample (context counts x, query m, next token n) gives

    s = X^T b = x ⊙ e^{z_m} / <x, e^{z_m}>          (mass per token; the query is not a key)
    v = LN(s) = s / ||s||_2                          (l2-normalisation, no positional encoding)
        [residual variant, §3.8:  v = LN(LN(s) + e_m)]
    alpha = softmax(Y^T v),   loss = -log alpha_n     (Eq. 2, mean over the batch).

Gradients (Lemma 1, Eq. 3; descent on the loss):

    dL/dY = v (alpha - e_n)^T,
    dL/dz_m = s ⊙ (u - <s, u>),  u = P^perp_s / ||s|| · Y (alpha - e_n)   (= -Eq. 4;
              the <s, u> term vanishes without the residual because P^perp_s s = 0).

Both gradients have zero row sums (softmax shift invariance), so SGD and heavy-ball
momentum keep every row sum of Y and Z (P0).  Weight decay and Adam break that.

A window enters only through its context counts (no positional encoding), so batches
are dense B×M count matrices.  Classes are sampled uniformly (``class_balanced``), as the
theorems assume (§1.2), or samples uniformly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from theorycheck.errors import InputError
from theorycheck.runtime import single_threaded_blas
from theorycheck.scansnap.stats import ScanSnapStats, population_attention

OPTIMIZERS = ("sgd", "adam")
INITS = ("zero", "random")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# keep the checkpointed query rows of Z under this many float64 numbers
MAX_CHECKPOINT_ENTRIES = 10_000_000
# densify the context table when it has at most this many entries
MAX_DENSE_CONTEXT = 20_000_000


@dataclass(frozen=True)
class TrainConfig:
    """One training run.  Learning rates are per parameter (eta_Y decoder, eta_Z attention)."""

    eta_y: float = 1.0
    eta_z: float = 0.5
    steps: int = 1000
    batch: int = 128
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    init: str = "zero"
    init_scale: float | None = None  # random init U(-a, a); default a = 1/sqrt(M) (nn.Linear)
    residual: bool = False
    class_balanced: bool = True
    n_checkpoints: int = 48
    extra_checkpoints: tuple[int, ...] = ()
    stop_at_half: bool = False       # stop once the population mean alpha_nn exceeds 1/2 (P8)
    track_population: bool = False   # population mean alpha_nn after every step (P8)
    eval_windows: int = 0            # windows for the attention-entropy curve (P14)
    seed: int = 0

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise InputError(f"--init {self.init!r}: use one of {', '.join(INITS)}")
        if not (self.eta_y >= 0 and self.eta_z >= 0 and math.isfinite(self.eta_y) and math.isfinite(self.eta_z)):
            raise InputError("learning rates must be finite and non-negative")
        if not 0 <= self.momentum < 1:
            raise InputError(f"--momentum must lie in [0, 1) (got {self.momentum})")
        if self.weight_decay < 0:
            raise InputError("--weight-decay must be non-negative")
        if self.steps < 1 or self.batch < 1:
            raise InputError("--steps and --batch must be at least 1")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["extra_checkpoints"] = list(self.extra_checkpoints)
        return d


@dataclass(frozen=True, eq=False)
class Trajectory:
    """What a run leaves behind: checkpoints of Z (query rows), Y, population quantities."""

    config: TrainConfig
    queries: np.ndarray           # (Q,) query token ids: rows of Z that can move
    steps_done: int
    checkpoint_steps: np.ndarray  # (S,)
    Zq: np.ndarray                # (S, Q, M) z_m(t) for every query m
    alpha_correct: np.ndarray     # (S, C) population alpha_{n,n}(t) = softmax(Y^T f_n)_n
    rowsum_drift_Z: np.ndarray    # (S,) max_m |sum_l Z_ml(t) - sum_l Z_ml(0)| / (1 + sum_l |Z_ml(t)|)
    rowsum_drift_Y: np.ndarray    # (S,) same for the rows of Y
    entropy_positions: np.ndarray  # (S,) mean attention entropy over positions (eval windows) or empty
    step_loss: np.ndarray          # (steps,) batch loss before each update
    step_p_correct: np.ndarray     # (steps,) batch-mean alpha[n_i] before each update
    step_grad_norm: np.ndarray     # (steps,) batch-mean ||Y (e_n - alpha)||
    pop_alpha_steps: np.ndarray    # (steps_done+1,) population mean alpha_nn after t updates, or empty
    Y0: np.ndarray
    Z0: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    diverged: bool = False
    notes: dict = field(default_factory=dict)

    def query_rows(self, stats: ScanSnapStats, k: int) -> np.ndarray:
        """z_m(t_k) for the query of every class (C×M)."""
        pos = np.searchsorted(self.queries, stats.class_query)
        return self.Zq[k][pos]

    def attention(self, stats: ScanSnapStats, k: int) -> np.ndarray:
        """Population attention c_n(t_k) ∝ P-hat(.|n) e^{z_m(t_k)} (Eq. 5), C×M."""
        return population_attention(stats.P, self.query_rows(stats, k))

    def index_of(self, step: int) -> int:
        """Checkpoint index of ``step`` (exact match required)."""
        k = int(np.searchsorted(self.checkpoint_steps, step))
        if k >= self.checkpoint_steps.size or self.checkpoint_steps[k] != step:
            raise ValueError(f"step {step} is not a checkpoint")
        return k


def checkpoint_schedule(steps: int, count: int, extra=()) -> np.ndarray:
    """0, steps, ``count`` log-spaced steps and ``extra`` (all within [0, steps])."""
    grid = np.round(np.geomspace(1, max(steps, 1), max(count, 2))).astype(np.int64)
    pts = np.concatenate([[0, steps], grid, np.asarray(list(extra), dtype=np.int64)])
    return np.unique(pts[(pts >= 0) & (pts <= steps)])


def loss_and_grad(Y: np.ndarray, Z: np.ndarray, ctx: np.ndarray, query: np.ndarray, nxt: np.ndarray,
                  residual: bool = False) -> tuple[float, np.ndarray, np.ndarray, dict]:
    """Mean loss over the batch and its gradients (dL/dY, dL/dZ); see the module docstring.

    ``ctx`` is B×M context counts.  ``info`` holds per-sample alpha_n, ||g|| and s.
    """
    B, M = ctx.shape
    rows = np.arange(B)
    zq = Z[query]
    top = np.where(ctx > 0, zq, -np.inf).max(axis=1, keepdims=True)
    # absent tokens (ctx = 0) are clipped to exp(<= 0) so that 0 * exp never overflows
    w = ctx * np.exp(np.minimum(zq - top, 0.0))
    s = w / w.sum(axis=1, keepdims=True)
    ns = np.sqrt((s * s).sum(axis=1, keepdims=True))
    v0 = s / ns
    if residual:
        r = v0.copy()
        r[rows, query] += 1.0
        nr = np.sqrt((r * r).sum(axis=1, keepdims=True))
        v = r / nr
    else:
        v = v0
    o = v @ Y
    o -= o.max(axis=1, keepdims=True)
    log_alpha = o - np.log(np.exp(o).sum(axis=1, keepdims=True))
    alpha = np.exp(log_alpha)
    loss = float(-log_alpha[rows, nxt].mean())
    p_correct = alpha[rows, nxt].copy()
    # alpha - e_n with the label entry written as -sum of the others (no 1 - alpha_n cancellation)
    d_o = alpha
    d_o[rows, nxt] = 0.0
    d_o[rows, nxt] = -d_o.sum(axis=1)
    d_v = d_o @ Y.T  # -g_i = -Y (e_n - alpha) per sample (Theorem 1's back-propagated gradient)
    g_norm = np.sqrt((d_v * d_v).sum(axis=1))
    d_o /= B
    d_v /= B
    gY = v.T @ d_o
    if residual:
        d_v = (d_v - v * (v * d_v).sum(axis=1, keepdims=True)) / nr
    d_s = (d_v - v0 * (v0 * d_v).sum(axis=1, keepdims=True)) / ns
    d_logit = s * (d_s - (s * d_s).sum(axis=1, keepdims=True))
    gZ = np.zeros_like(Z)
    order = np.argsort(query, kind="stable")
    q_sorted = query[order]
    starts = np.flatnonzero(np.r_[True, q_sorted[1:] != q_sorted[:-1]])
    gZ[q_sorted[starts]] = np.add.reduceat(d_logit[order], starts, axis=0)
    return loss, gY, gZ, {"p_correct": p_correct, "g_norm": g_norm, "s": s}


def population_alpha(Y: np.ndarray, Zq_class: np.ndarray, stats: ScanSnapStats,
                     residual: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c, f, alpha) per class at T -> infinity: f_n = LN(c_n) (residual: LN(f_n + e_m)),
    alpha_n = softmax(Y^T f_n) (Lemma 2)."""
    c = population_attention(stats.P, Zq_class)
    f = c / np.linalg.norm(c, axis=1, keepdims=True)
    if residual:
        f = f.copy()
        f[np.arange(stats.C), stats.class_query] += 1.0
        f /= np.linalg.norm(f, axis=1, keepdims=True)
    o = f @ Y
    o -= o.max(axis=1, keepdims=True)
    alpha = np.exp(o)
    alpha /= alpha.sum(axis=1, keepdims=True)
    return c, f, alpha


def position_entropy(Z: np.ndarray, ctx: np.ndarray, query: np.ndarray) -> float:
    """Mean entropy of the attention over positions, -sum_t b_t log b_t (§4.4 metric)."""
    zq = Z[query]
    present = ctx > 0
    top = np.where(present, zq, -np.inf).max(axis=1, keepdims=True)
    w = np.where(present, ctx * np.exp(np.where(present, zq - top, 0.0)), 0.0)
    s = w / w.sum(axis=1, keepdims=True)
    logs = np.log(np.where(present, s, 1.0))
    logx = np.log(np.where(present, ctx, 1.0))
    return float((-(s * (logs - logx)).sum(axis=1)).mean())


class _Optimizer:
    """SGD (PyTorch heavy-ball: buf = mu buf + g, p -= lr buf) or Adam, with L2 weight decay."""

    def __init__(self, config: TrainConfig, shapes: tuple[tuple[int, int], ...]):
        self.c = config
        self.state = [[np.zeros(s), np.zeros(s)] for s in shapes]
        self.t = 0

    def step(self, params: list[np.ndarray], grads: list[np.ndarray], lrs: list[float]) -> None:
        c = self.c
        self.t += 1
        for p, g, lr, st in zip(params, grads, lrs, self.state):
            if c.weight_decay:
                g = g + c.weight_decay * p
            if c.optimizer == "sgd":
                if c.momentum:
                    st[0] = g.copy() if self.t == 1 else c.momentum * st[0] + g
                    g = st[0]
                p -= lr * g
            else:
                b1, b2 = ADAM_BETAS
                st[0] = b1 * st[0] + (1 - b1) * g
                st[1] = b2 * st[1] + (1 - b2) * g * g
                mhat = st[0] / (1 - b1**self.t)
                vhat = st[1] / (1 - b2**self.t)
                p -= lr * mhat / (np.sqrt(vhat) + ADAM_EPS)


class BatchSampler:
    """Minibatches of sample indices: uniform over classes then within the class, or uniform."""

    def __init__(self, stats: ScanSnapStats, class_balanced: bool):
        self.stats = stats
        self.class_balanced = class_balanced
        self.order = np.argsort(stats.sample_class, kind="stable")
        self.offsets = np.r_[0, np.cumsum(stats.class_size)[:-1]]
        dense = stats.N * stats.M <= MAX_DENSE_CONTEXT
        self.dense = stats.context.toarray() if dense else None

    def draw(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        st = self.stats
        if self.class_balanced:
            cls = rng.integers(0, st.C, size=batch)
            pos = (rng.random(batch) * st.class_size[cls]).astype(np.int64)
            return self.order[self.offsets[cls] + pos]
        return rng.integers(0, st.N, size=batch)

    def context(self, idx: np.ndarray) -> np.ndarray:
        return self.dense[idx] if self.dense is not None else self.stats.context[idx].toarray()


def initial_parameters(M: int, config: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if config.init == "zero":
        return np.zeros((M, M)), np.zeros((M, M))
    a = config.init_scale if config.init_scale is not None else 1.0 / math.sqrt(M)
    return rng.uniform(-a, a, size=(M, M)), rng.uniform(-a, a, size=(M, M))


def train(stats: ScanSnapStats, config: TrainConfig, sampler: BatchSampler | None = None) -> Trajectory:
    """Minibatch SGD (or Adam) on the Y/Z model; seeded by ``config.seed`` only."""
    with single_threaded_blas():
        return _train(stats, config, sampler)


def _train(stats: ScanSnapStats, config: TrainConfig, sampler: BatchSampler | None) -> Trajectory:
    config.validate()
    M, C = stats.M, stats.C
    rng = np.random.default_rng(config.seed)
    sampler = sampler or BatchSampler(stats, config.class_balanced)
    Y, Z = initial_parameters(M, config, rng)
    Y0, Z0 = Y.copy(), Z.copy()
    rowY0, rowZ0 = Y0.sum(axis=1), Z0.sum(axis=1)
    queries = stats.queries
    count = config.n_checkpoints
    while count > 2 and (count + len(config.extra_checkpoints) + 2) * queries.size * M > MAX_CHECKPOINT_ENTRIES:
        count //= 2
    schedule = checkpoint_schedule(config.steps, count, config.extra_checkpoints)
    eval_idx = np.empty(0, dtype=np.int64)
    if config.eval_windows:
        eval_idx = np.sort(np.random.default_rng([config.seed, 1]).choice(
            stats.N, size=min(config.eval_windows, stats.N), replace=False))
        eval_ctx = sampler.context(eval_idx)
    opt = _Optimizer(config, ((M, M), (M, M)))
    class_row = np.searchsorted(queries, stats.class_query)
    ck_Zq, ck_alpha, ck_dZ, ck_dY, ck_H = [], [], [], [], []
    step_loss = np.full(config.steps, np.nan)
    step_p = np.full(config.steps, np.nan)
    step_g = np.full(config.steps, np.nan)
    pop_steps: list[float] = []

    def pop_mean_alpha() -> tuple[float, np.ndarray]:
        _, _, alpha = population_alpha(Y, Z[queries][class_row], stats, config.residual)
        a = alpha[np.arange(C), stats.class_next]
        return float(a.mean()), a

    def record(t: int) -> None:
        ck_Zq.append(Z[queries].copy())
        ck_alpha.append(pop_mean_alpha()[1])
        ck_dZ.append(float((np.abs(Z.sum(axis=1) - rowZ0) / (1 + np.abs(Z).sum(axis=1))).max()))
        ck_dY.append(float((np.abs(Y.sum(axis=1) - rowY0) / (1 + np.abs(Y).sum(axis=1))).max()))
        if eval_idx.size:
            ck_H.append(position_entropy(Z, eval_ctx, stats.query[eval_idx]))

    done = 0
    diverged = False
    next_ck = 0
    if schedule[0] == 0:
        record(0)
        next_ck = 1
    if config.track_population:
        pop_steps.append(pop_mean_alpha()[0])
    for t in range(1, config.steps + 1):
        idx = sampler.draw(rng, config.batch)
        loss, gY, gZ, info = loss_and_grad(Y, Z, sampler.context(idx), stats.query[idx], stats.next[idx],
                                           config.residual)
        step_loss[t - 1] = loss
        step_p[t - 1] = info["p_correct"].mean()
        step_g[t - 1] = info["g_norm"].mean()
        opt.step([Y, Z], [gY, gZ], [config.eta_y, config.eta_z])
        done = t
        if not (np.isfinite(Y).all() and np.isfinite(Z).all()):
            diverged = True
            break
        if next_ck < schedule.size and schedule[next_ck] == t:
            record(t)
            next_ck += 1
        if config.track_population:
            pop_steps.append(pop_mean_alpha()[0])
            if config.stop_at_half and pop_steps[-1] > 0.5:
                break
    if not diverged and (len(ck_Zq) == 0 or schedule[len(ck_Zq) - 1] != done):
        record(done)
        schedule = np.r_[schedule[: len(ck_Zq) - 1], done]
    else:
        schedule = schedule[: len(ck_Zq)]
    return Trajectory(
        config=config, queries=queries, steps_done=done, checkpoint_steps=schedule.astype(np.int64),
        Zq=np.array(ck_Zq), alpha_correct=np.array(ck_alpha), rowsum_drift_Z=np.array(ck_dZ),
        rowsum_drift_Y=np.array(ck_dY), entropy_positions=np.array(ck_H), step_loss=step_loss[:done],
        step_p_correct=step_p[:done], step_grad_norm=step_g[:done], pop_alpha_steps=np.array(pop_steps),
        Y0=Y0, Z0=Z0, Y=Y, Z=Z, diverged=diverged,
    )


def crossing_time(values: np.ndarray, level: float = 0.5) -> float:
    """First fractional step where ``values`` (indexed by step) exceeds ``level``, by linear
    interpolation between the bracketing steps; inf when it never does."""
    above = np.flatnonzero(values > level)
    if above.size == 0:
        return math.inf
    k = int(above[0])
    if k == 0:
        return 0.0
    lo, hi = values[k - 1], values[k]
    return (k - 1) + (level - lo) / (hi - lo)


def decoder_closed_form(M: int, eta_y: float, updates: int) -> np.ndarray:
    """Lemma 5: h*(s) = h*(s-1) + eta_Y / ((M-1) + e^{M h*(s-1)}), h*(0) = 0, for s = 0..updates."""
    h = np.zeros(updates + 1)
    for s in range(1, updates + 1):
        h[s] = h[s - 1] + eta_y / ((M - 1) + math.exp(M * h[s - 1]))
    return h


def closed_form_alpha(M: int, h: np.ndarray) -> np.ndarray:
    """alpha_{n,n} = e^{M h} / ((M-1) + e^{M h}) for the decoder state w_n = (M-1) h zeta_n (Lemma 5)."""
    return 1.0 / (1.0 + (M - 1) * np.exp(-M * h))
