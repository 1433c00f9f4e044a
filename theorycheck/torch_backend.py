"""Optional torch backend for training (``pip install theorycheck[torch]``).

Runs the same full-batch loop as :func:`theorycheck.train.train` with the same
parametrisations, initial values (drawn by numpy from the same seed), loss formula
(per-pair exponentials shifted by the query's largest score, exact per-window shift
as fallback) and optimiser updates, in float64 on CUDA when available.
"""

from __future__ import annotations

import numpy as np

from theorycheck.errors import InputError
from theorycheck.model import UNDERFLOW_GUARD, ScoreMap, WindowStats
from theorycheck.train import Optimizer, TrainConfig, TrainResult, make_parametrization, run_loop


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError("--backend torch needs PyTorch: pip install 'theorycheck[torch]'") from None
    return torch


class TorchLoss:
    """Loss gradient over pair scores, on a torch device (same maths as model.evaluate)."""

    def __init__(self, stats: WindowStats, device):
        torch = _torch()
        self.torch = torch
        self.device = device
        as_long = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)  # noqa: E731
        self.n_pairs = stats.n_pairs
        self.n_windows = stats.n_windows
        self.entry_pair = as_long(stats.entry_pair)
        self.rows = as_long(stats.rows())
        self.label = as_long(stats.label_entry)
        self.logc = torch.as_tensor(stats.entry_logc, device=device)
        self.count = torch.as_tensor(stats.entry_count(), device=device)
        self.weight = torch.as_tensor(stats.weight, device=device)
        groups = stats.query_groups()
        if groups is not None:
            starts, lengths = groups
            self.pair_group = as_long(np.repeat(np.arange(starts.size), lengths))
            self.n_groups = int(starts.size)
        else:
            self.pair_group = None

    def _segment(self, values, reduce):
        torch = self.torch
        out = torch.zeros(self.n_windows, dtype=values.dtype, device=self.device)
        if reduce == "sum":
            return out.index_add_(0, self.rows, values)
        return out.scatter_reduce_(0, self.rows, values, reduce="amax", include_self=False)

    def grad(self, m):
        """dL/dm (pair space)."""
        torch = self.torch
        if self.pair_group is not None:
            shift = torch.full((self.n_groups,), -torch.inf, dtype=m.dtype, device=self.device)
            shift = shift.scatter_reduce_(0, self.pair_group, m, reduce="amax", include_self=True)
            v = torch.exp(m - shift[self.pair_group])[self.entry_pair] * self.count
            v_label = v[self.label]
            if bool(v_label.min() >= UNDERFLOW_GUARD):
                v[self.label] = 0.0
                others = self._segment(v, "sum")
                inv_total = 1.0 / (v_label + others)
                coef = v * inv_total[self.rows]
                coef[self.label] = -others * inv_total
                coef = coef * self.weight[self.rows]
                return torch.zeros(self.n_pairs, dtype=m.dtype, device=self.device).index_add_(0, self.entry_pair, coef)
        z = m[self.entry_pair] + self.logc
        r = z - z[self.label][self.rows]
        peak = self._segment(r, "amax")
        e = torch.exp(r - peak[self.rows])
        e[self.label] = 0.0
        others = self._segment(e, "sum")
        window_loss = torch.logaddexp(torch.zeros_like(others), torch.log(others) + peak)
        scale = torch.exp(peak - window_loss)
        coef = e * scale[self.rows]
        coef[self.label] = -others * scale
        coef = coef * self.weight[self.rows]
        return torch.zeros(self.n_pairs, dtype=m.dtype, device=self.device).index_add_(0, self.entry_pair, coef)


class TorchScoreMap:
    """W <-> pair scores on the device (general embeddings)."""

    def __init__(self, score_map: ScoreMap, device):
        torch = _torch()
        self.torch = torch
        self.E = torch.as_tensor(np.array(score_map.E), device=device)
        self.token = torch.as_tensor(score_map.pair_token, device=device)
        self.query = torch.as_tensor(score_map.pair_query, device=device)
        self.K = score_map.E.shape[0]

    def scores(self, W):
        left = self.E @ W
        return (left[self.token] * self.E[self.query]).sum(dim=1)

    def adjoint(self, g):
        G = self.torch.zeros((self.K, self.K), dtype=g.dtype, device=g.device)
        G.index_put_((self.token, self.query), g, accumulate=True)
        return self.E.T @ G @ self.E


def train_torch(stats, score_map, orthonormal, config: TrainConfig, monitor=None, on_step=None) -> TrainResult:
    torch = _torch()
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rng = np.random.default_rng(config.seed)
    params = make_parametrization(score_map, orthonormal, config)
    theta_np = params.init(config, rng)
    loss = TorchLoss(stats, device)
    tmap = TorchScoreMap(score_map, device) if params.name != "pairs" else None
    d = params.d

    def scores(theta):
        if params.name == "pairs":
            return theta
        if params.name == "full":
            return tmap.scores(theta.reshape(d, d))
        half = d * params.width
        K, Q = theta[:half].reshape(d, params.width), theta[half:].reshape(d, params.width)
        return tmap.scores(K @ Q.T)

    def grad(theta, g):
        if params.name == "pairs":
            return g
        if params.name == "full":
            return tmap.adjoint(g).reshape(-1)
        half = d * params.width
        K, Q = theta[:half].reshape(d, params.width), theta[half:].reshape(d, params.width)
        G = tmap.adjoint(g)
        return torch.cat([(G @ Q).reshape(-1), (G.T @ K).reshape(-1)])

    opt = Optimizer(config)

    def advance(theta):
        return opt.step(theta, grad(theta, loss.grad(scores(theta))))

    def to_matrix(theta):
        return params.matrix(theta.detach().cpu().numpy())  # .cpu() synchronises CUDA

    theta = torch.as_tensor(theta_np, device=device)
    return run_loop(theta, advance, to_matrix, params.name, config, monitor, on_step, {"device": str(device)})
