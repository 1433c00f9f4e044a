"""A tiny theorycheck plug-in (docs/theories.md): a bias-only softmax model of the next token.

Model: logits b in R^V, the same for every window; L(b) = -sum_z p_z log softmax(b)_z with p the
label frequencies.  Prediction: GD converges to b* = log p - mean(log p) (plus the never-moving
mean of b(0)), and L -> H(p).  Assumption: every vocabulary token occurs as a label (else b* is
infinite).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from theorycheck.theories import rule
from theorycheck.theories.base import Request, StagedTheory


class TinyUnigram(StagedTheory):
    name = "tiny"
    title = "Bias-only softmax (a tiny example theory)"
    citation = "docs/theories.md (an example, not a paper)"
    summary = "GD on a bias vector b: b - mean(b) -> log p - mean(log p), L -> H(p)"
    assumption_names = (("full label support", "every token occurs as a label"),)
    prediction_arrays = (("b_star", "the limit of b - mean(b), length V"),)
    options = frozenset({"steps", "lr", "seed"})
    defaults = {"steps": 400, "lr": 1.0}

    def prepare(self, corpus, request: Request):
        return np.bincount(corpus.label, minlength=corpus.K) / corpus.n

    def assumptions(self, p, request: Request) -> list[dict]:
        missing = int(np.sum(p == 0))
        return [{"name": "full label support", "holds": missing == 0,
                 "detail": f"{missing} of {p.size} tokens never occur as a label"}]

    def predict(self, p, request: Request):
        return np.log(p) - np.log(p).mean()

    def prediction_values(self, b_star) -> dict[str, np.ndarray]:
        return {"b_star": b_star}

    def train(self, p, b_star, request: Request):
        from theorycheck.train import TrainConfig, run_loop

        config = TrainConfig(optimizer="gd", lr=self.option(request, "lr"), steps=self.option(request, "steps"),
                             seed=request["seed"], checkpoints=30)
        points: list[np.ndarray] = []

        def monitor(step, b):
            points.append(b.copy())
            return {}, False

        def advance(b):
            q = np.exp(b - b.max())
            return b - config.lr * (q / q.sum() - p)

        b0 = np.random.default_rng(config.seed).normal(size=p.size)
        result = run_loop(b0, advance, lambda b: b, "bias", config, monitor, request.on_step)
        steps = np.array([r["step"] for r in result.checkpoints])
        return result, (steps, np.asarray(points)), result.W

    def judge(self, p, b_star, trajectory, request: Request, arrays=None, interrupted=False):
        steps, points = trajectory
        b_star = (arrays or {}).get("b_star", b_star)
        centred = points - points.mean(axis=1, keepdims=True)
        criterion = rule.converging_criterion(
            "bias", "tiny", "||b_inf - mean(b_inf) - b*||", centred[-1], rule.converging_remainder(steps, centred),
            b_star, max(0.02 * float(np.linalg.norm(b_star)), 1e-3))
        name, reasons = rule.combine([criterion], [], interrupted)
        scale = max(float(np.linalg.norm(b_star)), 0.05) / 100
        return rule.TheoryVerdict(name, (criterion,), tuple(reasons), labels={"bias": ("b*", " %", scale)}), []

    def save_trajectory(self, trajectory, path: Path) -> None:
        from theorycheck.io import write_bytes

        buffer = io.BytesIO()
        np.savez(buffer, steps=trajectory[0], points=trajectory[1])
        write_bytes(path, buffer.getvalue())

    def load_trajectory(self, p, path: Path):
        with np.load(path, allow_pickle=False) as z:
            return z["steps"], z["points"]


THEORY = TinyUnigram()
