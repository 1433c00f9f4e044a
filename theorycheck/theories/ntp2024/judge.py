"""Judging a trained linear decoder against the NTP-SVM predictions (THEORY-ntp §3, §5), with
theorycheck's verdict rule (theorycheck.theories.rule).

Criteria, in the span coordinates C (contexts.py):

* direction (§3): the last increment of C - Pi_F C against W^mm, ± its turning bound;
* finite_part (§3): Pi_F C(t) -> W^⋆, the last point ± its fitted remaining movement (plus the
  step-size floor lr of normalised GD with a constant step), tolerance max(2 % ||W^⋆||, 0.002);
* loss_gap (§3): L(W_t) - H -> 0, tolerance 0.01;
* loss_floor (exact): L(W) >= H for every W (Gibbs' inequality), so a loss below the claimed
  entropy refutes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from theorycheck.errors import InputError
from theorycheck.theories import rule
from theorycheck.theories.ntp2024.predict import NtpPredictions
from theorycheck.theories.ntp2024.train import DecoderTrajectory, LinearDecoderLoss
from theorycheck.train import TrainConfig

MIN_CHECKPOINTS = 8
EXTRAPOLATED = {"direction", "finite_part", "loss_gap"}


@dataclass(frozen=True)
class NtpTolerances:
    direction_deg: float = 2.0
    finite_relative: float = 0.02
    finite_absolute: float = 2e-3
    loss_gap: float = 1e-2
    loss_floor: float = 1e-9  # relative: L(W) >= H - 1e-9 max(1, H)

    def validate(self) -> NtpTolerances:
        for name, value in dataclasses.asdict(self).items():
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"tolerance {name} must be a finite number >= 0 (got {value})")
        return self

    def finite_scale(self, W_star_norm: float) -> float:
        """||W^⋆||, with the absolute floor where W^⋆ ~ 0 (what '%' refers to)."""
        return max(W_star_norm, self.finite_absolute / max(self.finite_relative, 1e-300))


@dataclass(frozen=True, eq=False)
class DecoderEvidence:
    """What the trajectory says about its own limit, independent of any prediction."""

    steps: np.ndarray
    direction: rule.DirectionEvidence
    fin_coords: np.ndarray  # (checkpoints, dim F) coordinates of Pi_F C(t_k)
    fin_remainder: rule.Remainder
    fin_floor: float
    losses: np.ndarray

    @property
    def asymptotic(self) -> bool:
        direction_ok = self.direction.direction is None or self.direction.turn.located
        finite_ok = self.fin_coords.shape[1] == 0 or self.fin_remainder.located
        return bool(direction_ok and finite_ok)


def gather(traj: DecoderTrajectory, pred: NtpPredictions, config: TrainConfig) -> DecoderEvidence:
    F = pred.finite
    loss = LinearDecoderLoss(pred.contexts)
    perp, fin, losses = [], [], []
    for C in traj.coords:
        perp.append((C - F.project(C)).ravel())
        fin.append(F.coords(C))
        losses.append(loss(C, grad=False)[0])
    fin_coords = np.asarray(fin).reshape(len(traj), -1)
    floor = config.lr if (config.optimizer == "ngd" and config.effective_schedule == "constant") else 0.0
    return DecoderEvidence(traj.steps, rule.diverging_direction(perp), fin_coords,
                           rule.converging_remainder(traj.steps, fin_coords), floor, np.asarray(losses))


def prediction_coords(pred: NtpPredictions, W: np.ndarray) -> tuple[np.ndarray, float]:
    """(C = W B, ||W (I - B B^T)||): the part of a V×d prediction the logits see, and the rest."""
    ctx = pred.contexts
    C = ctx.to_coords(W)
    return C, float(np.linalg.norm(W - ctx.to_matrix(C)))


def check_prediction(pred: NtpPredictions, W: np.ndarray, name: str) -> np.ndarray:
    ctx = pred.contexts
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (ctx.V, ctx.d) or not np.all(np.isfinite(W)):
        raise InputError(f"{name} must be a finite {ctx.V}×{ctx.d} array (V×d, logits = W h; got shape {W.shape}); "
                         "write it with np.save(path, W)")
    return W


def direction_of(ev: DecoderEvidence, pred: NtpPredictions, W_mm: np.ndarray, tol: NtpTolerances) -> rule.Criterion:
    C, _ = prediction_coords(pred, W_mm)
    return rule.direction_criterion(ev.direction, C, tol.direction_deg, "direction", "THEORY-ntp §3",
                                    "angle between the run's limit direction (last increment of W - Pi_F W) and W^mm",
                                    norm=float(np.linalg.norm(W_mm)))


def finite_of(ev: DecoderEvidence, pred: NtpPredictions, W_star: np.ndarray, tol: NtpTolerances) -> rule.Criterion:
    desc = "||Pi_F W_inf - W^⋆||_F (the run's limit of the finite part against the prediction)"
    if ev.fin_coords.shape[1] == 0:
        return rule.not_judged("finite_part", "THEORY-ntp §3", desc, note="F = {0}: every support is one token")
    C, outside = prediction_coords(pred, W_star)
    F = pred.finite
    off = float(np.hypot(outside, np.linalg.norm(C - F.project(C))))
    tolerance = max(tol.finite_relative * float(np.linalg.norm(W_star)), tol.finite_absolute)
    note = "includes the floor lr of normalised GD with a constant step" if ev.fin_floor else ""
    return rule.converging_criterion("finite_part", "THEORY-ntp §3", desc, ev.fin_coords[-1], ev.fin_remainder,
                                     F.coords(C), tolerance, ev.fin_floor, note, off_space=off)


def loss_floor_of(ev: DecoderEvidence, entropy: float, tol: NtpTolerances) -> rule.Criterion:
    lowest = float(ev.losses.min() - entropy)
    slack = -tol.loss_floor * max(1.0, abs(entropy))
    passed = lowest >= slack
    return rule.Criterion("loss_floor", "THEORY-ntp §1", "min over checkpoints of L(W) - H (never below the entropy)",
                          lowest, slack, ">=", True, passed, "L(W) >= H for every W (Gibbs' inequality, exact)", 0.0,
                          rule.HOLDS if passed else rule.VIOLATED)


def criteria_of(ev: DecoderEvidence, pred: NtpPredictions, W_mm: np.ndarray, W_star: np.ndarray, entropy: float,
                tol: NtpTolerances) -> list[rule.Criterion]:
    gap = rule.vanishing_criterion("loss_gap", "THEORY-ntp §3", "L(W) - H (the loss approaches the entropy)",
                                   ev.steps, ev.losses - entropy, tol.loss_gap)
    criteria = [direction_of(ev, pred, W_mm, tol), finite_of(ev, pred, W_star, tol), gap,
                loss_floor_of(ev, entropy, tol)]
    return rule.gate_pre_asymptotic(criteria, ev.asymptotic, EXTRAPOLATED)


def _violated(criterion: rule.Criterion, ev: DecoderEvidence) -> bool:
    return rule.gate_pre_asymptotic([criterion], ev.asymptotic, EXTRAPOLATED)[0].status == rule.VIOLATED


def resolution(ev: DecoderEvidence, pred: NtpPredictions, tol: NtpTolerances, directions: int = 8,
               seed: int = 0) -> dict:
    """Smallest errors this run finds VIOLATED, around the theory's own predictions:
    direction: W^mm turned by theta towards 8 random directions orthogonal to F and W^mm (the
    largest smallest theta, degrees); finite part: W^⋆ scaled by 1 ± eps and moved by
    eps·scale along 6 random directions of F (the largest smallest eps, %)."""
    ctx, F = pred.contexts, pred.finite
    rng = np.random.default_rng([seed, 17])
    out: dict = {"direction": None, "finite_part": None}
    C_mm = pred.C_mm
    norm_mm = float(np.linalg.norm(C_mm))
    if ev.direction.direction is not None and norm_mm > 0:
        u = C_mm / norm_mm
        worst = []
        for _ in range(directions):
            N = rng.standard_normal(C_mm.shape)
            N -= F.project(N)
            N -= np.sum(N * u) * u
            N /= np.linalg.norm(N)

            def detects(theta, N=N):
                t = np.radians(theta)
                W = ctx.to_matrix(np.cos(t) * u + np.sin(t) * N)
                return _violated(direction_of(ev, pred, W, tol), ev)
            worst.append(rule.smallest_detected(detects, 90.0))
        if worst and all(w is not None for w in worst):
            out["direction"] = float(max(worst))
    if ev.fin_coords.shape[1]:
        C_star = pred.C_star
        scale = tol.finite_scale(float(np.linalg.norm(C_star)))
        moves = [C_star / scale, -C_star / scale] if np.linalg.norm(C_star) > 0 else []
        for _ in range(6):
            v = F.project(rng.standard_normal(C_star.shape))
            moves.append(v / np.linalg.norm(v))
        worst = []
        for v in moves:
            def detects(eps, v=v):
                W = ctx.to_matrix(C_star + eps * scale * v)
                return _violated(finite_of(ev, pred, W, tol), ev)
            worst.append(rule.smallest_detected(detects, 10.0))
        if worst and all(w is not None for w in worst):
            out["finite_part"] = 100 * float(max(worst))
    return out


def records_of(ev: DecoderEvidence, traj: DecoderTrajectory, pred: NtpPredictions, entropy: float) -> list[dict]:
    """Per checkpoint: loss, loss gap, ||W||, cos(W - Pi_F W, W^mm), ||Pi_F W - W^⋆|| (for trajectory.json)."""
    F = pred.finite
    star = F.coords(pred.C_star)
    norm_mm = float(np.linalg.norm(pred.C_mm))
    out = []
    for i, C in enumerate(traj.coords):
        perp = C - F.project(C)
        n = float(np.linalg.norm(perp))
        cos = float(np.sum(perp * pred.C_mm) / (n * norm_mm)) if n > 0 and norm_mm > 0 else None
        out.append({"step": int(traj.steps[i]), "loss": float(ev.losses[i]), "loss_gap": float(ev.losses[i] - entropy),
                    "norm": float(np.linalg.norm(C)), "cos_mm": cos,
                    "fin_distance": float(np.linalg.norm(ev.fin_coords[i] - star)) if star.size else 0.0})
    return out


LABELS_DIRECTION = ("direction", "°", 1.0)


def judge_decoder(traj: DecoderTrajectory, pred: NtpPredictions, config: TrainConfig,
                  tol: NtpTolerances | None = None, W_mm: np.ndarray | None = None,
                  W_star: np.ndarray | None = None, entropy: float | None = None,
                  reasons: list[str] | None = None, interrupted: bool = False,
                  with_resolution: bool = True) -> tuple[rule.TheoryVerdict, list[dict]]:
    """Judge a stored trajectory against W^mm, W^⋆ and H (default: the predictions' own).
    The resolution is measured around the theory's own predictions.

    The judgement is made in the units of the contexts H / s (``Contexts.unit_scale``, where
    train_decoder runs): the finite part's values, its absolute floor finite_absolute and the
    step-size floor lr are meant for unit-norm contexts, so the verdict on c H is the verdict
    on H; the records' norms and distances are given in the units of H."""
    tol = (tol or NtpTolerances()).validate()
    W_mm = pred.W_mm if W_mm is None else check_prediction(pred, W_mm, "W^mm")
    W_star = pred.W_star if W_star is None else check_prediction(pred, W_star, "W^⋆")
    entropy = pred.contexts.entropy if entropy is None else float(entropy)
    unit_ctx, scale = pred.contexts.unit_scale()
    if scale != 1.0:
        verdict, records = judge_decoder(traj.rescaled(scale), pred.rescaled(unit_ctx, scale), config, tol,
                                         W_mm * scale, W_star * scale, entropy, reasons, interrupted, with_resolution)
        return verdict, [{**r, "norm": r["norm"] / scale, "fin_distance": r["fin_distance"] / scale} for r in records]
    ev = gather(traj, pred, config)
    criteria = criteria_of(ev, pred, W_mm, W_star, entropy, tol)
    reasons = list(reasons or [])
    few = len(traj) < MIN_CHECKPOINTS and not interrupted
    if few:
        criteria = [dataclasses.replace(c, passed=None, status=rule.INCONCLUSIVE) if c.status == rule.HOLDS else c
                    for c in criteria]
    name, all_reasons = rule.combine(criteria, reasons, interrupted)
    if few and name == rule.INCONCLUSIVE:
        all_reasons = [f"only {len(traj)} checkpoints: the decay fits need at least {MIN_CHECKPOINTS}; raise "
                       "--checkpoints or --steps"] + [r for r in all_reasons if not r.startswith("the run has not")]
    res = resolution(ev, pred, tol) if with_resolution and name != rule.INCOMPLETE else {}
    scale = tol.finite_scale(float(np.linalg.norm(pred.C_star)))
    labels = {"direction": LABELS_DIRECTION, "finite_part": ("W^⋆", " %", scale / 100)}
    verdict = rule.TheoryVerdict(name, tuple(criteria), tuple(all_reasons), dataclasses.asdict(tol), res, labels)
    return verdict, records_of(ev, traj, pred, entropy)
