"""Prediction heads and losses beyond Li et al.'s (THEORY.md §1.4-§1.5), for conjectures.

The verify stage trains the identity head with the log-loss only.  Tarzanagh et al.'s
generalised conjecture is expected to break, if anywhere, with the ``gen`` head or
non-log losses (THEORY.md §5.6, §6.4), so this module adds, in pair space (the window
enters only through its token counts, THEORY.md §1.3):

* ``iden``: p(a|X) = sum_{t: tau_t = a} a_t (attention mass of token a);
  losses ``log`` -log p_y (delegated to ``model.evaluate``), ``lsq2`` (1 - p_y)^2;
* ``gen``: f = X^T a = sum_a p(a|X) e_a, logits z = E f, q = softmax(z);
  losses ``ce`` -log q_y, ``lsq2`` (1 - q_y)^2.

Chain rule through the attention softmax: with g_j = dl/dp_j for the entries j of a
window, dl/dz_j = p_j (g_j - sum_l p_l g_l) where z_j = m_(a_j, k) + log c_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theorycheck.model import ScoreMap, WindowStats, evaluate
from theorycheck.train import FullParams, TrainConfig, checkpoint_steps

HEAD_LOSSES = (("iden", "log"), ("iden", "lsq2"), ("gen", "ce"), ("gen", "lsq2"))


@dataclass(frozen=True)
class HeadEval:
    loss: float
    entry_prob: np.ndarray  # attention mass of each entry's token in its window
    grad: np.ndarray  # dL/dm over pairs


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate_head(m: np.ndarray, stats: WindowStats, score_map: ScoreMap, head: str, loss: str) -> HeadEval:
    """Loss L(m) = sum_i w_i l_i and its gradient over pair scores m (module docstring)."""
    if (head, loss) not in HEAD_LOSSES:
        raise ValueError(f"unsupported head/loss {head}/{loss}; use one of {HEAD_LOSSES}")
    if (head, loss) == ("iden", "log"):
        ev = evaluate(m, stats)
        return HeadEval(ev.loss, ev.entry_prob, ev.grad)
    starts = stats.indptr[:-1]
    rows = stats.rows()
    z = m[stats.entry_pair] + stats.entry_logc
    z = z - np.maximum.reduceat(z, starts)[rows]
    p = np.exp(z)
    p /= np.add.reduceat(p, starts)[rows]
    g = np.zeros_like(p)
    if head == "iden":
        py = p[stats.label_entry]
        per_window = (1.0 - py) ** 2
        g[stats.label_entry] = -2.0 * (1.0 - py)
    else:
        E = score_map.E
        token = score_map.pair_token[stats.entry_pair]
        f = np.add.reduceat(p[:, None] * E[token], starts)  # n×d
        q = _softmax_rows(f @ E.T)  # n×K
        y = token[stats.label_entry]
        onehot = np.zeros_like(q)
        onehot[np.arange(y.size), y] = 1.0
        qy = q[np.arange(y.size), y]
        if loss == "ce":
            per_window = -np.log(qy)
            dz = q - onehot
        else:
            per_window = (1.0 - qy) ** 2
            dz = -2.0 * ((1.0 - qy) * qy)[:, None] * (onehot - q)
        df = dz @ E  # n×d
        g = np.einsum("jd,jd->j", E[token], df[rows])
    mean = np.add.reduceat(p * g, starts)
    coef = p * (g - mean[rows]) * stats.weight[rows]
    grad = np.bincount(stats.entry_pair, weights=coef, minlength=stats.n_pairs)
    return HeadEval(float(stats.weight @ per_window), p, grad)


@dataclass(frozen=True)
class HeadRun:
    steps: tuple[int, ...]
    matrices: tuple[np.ndarray, ...]  # W at every checkpoint
    losses: tuple[float, ...]


def train_head(stats: WindowStats, score_map: ScoreMap, head: str, loss: str, config: TrainConfig) -> HeadRun:
    """Full-batch GD or normalised GD on W (d×d) for any head/loss; W(0) is drawn exactly as
    ``theorycheck.train`` draws it for the same config (``FullParams.init``)."""
    config = config.validate()
    if config.optimizer not in ("gd", "ngd") or config.factorized_width:
        raise ValueError("train_head supports gd and ngd on the full matrix W only")
    d = score_map.E.shape[1]
    W = FullParams(score_map, d).init(config, np.random.default_rng(config.seed)).reshape(d, d)
    marks = set(checkpoint_steps(config.steps, config.checkpoints).tolist())
    steps, mats, losses = [], [], []
    for step in range(config.steps + 1):
        ev = evaluate_head(score_map.scores(W), stats, score_map, head, loss)
        if step in marks:
            steps.append(step)
            mats.append(W.copy())
            losses.append(ev.loss)
        if step == config.steps:
            break
        G = score_map.adjoint(ev.grad)
        if config.optimizer == "ngd":
            G = G / (float(np.linalg.norm(G)) + np.finfo(float).eps)
        W = W - config.lr * G
    return HeadRun(tuple(steps), tuple(mats), tuple(losses))


def entry_probabilities(W: np.ndarray, stats: WindowStats, score_map: ScoreMap) -> np.ndarray:
    """Attention mass of every entry's token (the collapsed attention, any head)."""
    return evaluate(score_map.scores(W), stats, grad=False).entry_prob
