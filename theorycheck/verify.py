"""The verify stage: train, measure, compare with the predictions, decide.

Each criterion names the prediction of THEORY.md §8 it checks (P10-P15, P18).  Default
tolerances depend on the optimiser and assume the default budgets (see
``default_tolerances``); they are stated in results.json next to every measured value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from theorycheck.metrics import (
    TrajectoryMetrics,
    WindowSet,
    corpus_windows,
    probe_windows,
    window_set_from_multisets,
)
from theorycheck.train import TrainConfig, TrainResult, train

HOLDS, VIOLATED, NOT_APPLICABLE = "HOLDS", "VIOLATED", "NOT APPLICABLE"
INCONCLUSIVE, INCOMPLETE = "INCONCLUSIVE", "INCOMPLETE"
EXIT_CODES = {HOLDS: 0, VIOLATED: 1, NOT_APPLICABLE: 3, INCONCLUSIVE: 4, INCOMPLETE: 130}

# metric behind each pointwise criterion and its ideal (limit) value, for the trend test
CRITERION_METRIC = {
    "direction": ("cos_svm_orthogonal_part", 1.0),
    "finite_component": ("fin_distance", 0.0),
    "loss_gap": ("loss_gap", 0.0),
    "train_retrieval": ("train_leak_max", 0.0),
    "train_composition": ("train_composition_max", 0.0),
    "heldout_retrieval": ("heldout_leak_max", 0.0),
    "heldout_composition": ("heldout_composition_max", 0.0),
}


@dataclass(frozen=True)
class Tolerances:
    """Thresholds at the final checkpoint (THEORY.md §8)."""

    cos_svm_min: float = 0.95  # P10
    fin_distance_max: float = 2e-2  # P11
    loss_gap_max: float = 1e-2  # P12 (upper)
    loss_gap_min: float = -1e-9  # P12: never below the infimum beyond solver error
    leak_max: float = 2e-2  # P13
    composition_max: float = 2e-2  # P13
    heldout_leak_max: float = 5e-2  # P14
    heldout_composition_max: float = 2e-2  # P14
    monotone_slack: float = 1e-6  # P10/P15/P18 monotonicity over the last third of checkpoints

    def as_dict(self) -> dict:
        return asdict(self)


def default_tolerances(config: TrainConfig) -> Tolerances:
    """Defaults and what they assume.

    * ``gd`` (the theorem's optimiser): eta = 1 with unit-norm embeddings and >= 10^4
      steps.  THEORY P10-P13 measured cos >= 0.95, ||Pi W - W^fin|| <= 2e-2, leak and
      composition about 10× their 10^5-step values (2e-3) at 10^4 steps.  Direction
      convergence is only logarithmic, so cos is the loosest test; the finite part
      converges like 1/tau and is the sharp one.
    * ``ngd`` (the papers' experiments): lr 0.01, 4000 steps.  ||W|| grows linearly, so
      retrieval is sharp, but the finite part stalls at about lr/2 (THEORY §5.3): the
      tolerance on ||Pi W - W^fin|| is 2·lr, never "-> 0".
    * ``adam``: no theorem; the GD defaults are used as yardsticks for conjecture tests.
    """
    if config.optimizer == "ngd":
        return Tolerances(fin_distance_max=2 * config.lr, loss_gap_max=max(2e-2, 2 * config.lr),
                          composition_max=max(2e-2, 2 * config.lr), heldout_composition_max=max(2e-2, 2 * config.lr))
    return Tolerances()


@dataclass(frozen=True)
class Criterion:
    id: str
    prediction: str  # THEORY.md reference
    description: str
    value: float | None
    tolerance: float | None
    relation: str  # ">=", "<=", "non-decreasing"
    applies: bool
    passed: bool | None
    note: str = ""
    still_improving: bool | None = None  # for failures: is the metric still moving towards its limit?

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    criteria: tuple[Criterion, ...]
    reasons: tuple[str, ...] = ()
    tolerances: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "reasons": list(self.reasons),
                "tolerances": self.tolerances, "criteria": [c.as_dict() for c in self.criteria]}


def _bound(cid, pred_ref, desc, value, tol, relation, applies=True, note=""):
    if not applies or value is None:
        return Criterion(cid, pred_ref, desc, None if value is None else float(value), tol, relation, False, None, note)
    ok = value >= tol if relation == ">=" else value <= tol
    return Criterion(cid, pred_ref, desc, float(value), tol, relation, True, bool(ok), note)


def _monotone(cid, pred_ref, desc, series, slack, applies=True):
    values = [v for v in series if v is not None]
    if not applies or len(values) < 3:
        return Criterion(cid, pred_ref, desc, None, slack, "non-decreasing", False, None, "too few checkpoints")
    tail = np.asarray(values[(2 * len(values)) // 3:])
    worst = float(np.min(np.diff(tail)))  # most negative step
    return Criterion(cid, pred_ref, desc, worst, -slack, "non-decreasing", True, bool(worst >= -slack * max(1.0, np.abs(tail).max())),
                     "worst change between consecutive checkpoints over the last third")


def pointwise_criteria(last: dict, pred, tol: Tolerances, factored: bool) -> list[Criterion]:
    has_direction = float(np.linalg.norm(pred.W_svm)) > 0
    finite_applies = not factored
    held = "heldout_leak_max" in last
    return [
        _bound("direction", "P10", "cos(W - Pi_fin W, W^svm): the diverging part of W" + (" (nuclear-norm W^svm)" if factored else ""),
               last["cos_svm_orthogonal_part"], tol.cos_svm_min, ">=", has_direction,
               "" if has_direction else "W^svm = 0: no direction predicted"),
        _bound("direction_full", "P10", "cos(W, W^svm) (reported; the finite part W^fin weighs on it at finite budgets)",
               last["cos_svm"], tol.cos_svm_min, ">=", False,
               "not judged: the theorem's limit, approached like 1/log(tau) when ||W^fin|| is large"),
        _bound("finite_component", "P11", "||Pi_fin W - W^fin||_F", last["fin_distance"], tol.fin_distance_max, "<=", finite_applies),
        _bound("loss_gap", "P12", "L(W) - inf L", last["loss_gap"], tol.loss_gap_max, "<=", finite_applies),
        _bound("train_retrieval", "P13", "max attention mass outside the label's SCC (training windows)",
               last["train_leak_max"], tol.leak_max, "<="),
        _bound("train_composition", "P13", "max TV distance of attention within O_i from softmax(W^fin)",
               last["train_composition_max"], tol.composition_max, "<=", finite_applies),
        _bound("heldout_retrieval", "P14", "max attention mass outside the dominant SCC (held-out windows)",
               last.get("heldout_leak_max"), tol.heldout_leak_max, "<=", held),
        _bound("heldout_composition", "P14", "max TV distance from the automaton's soft composition (held-out)",
               last.get("heldout_composition_max"), tol.heldout_composition_max, "<=", held and finite_applies),
    ]


def judge(trajectory: list[dict], pred, tol: Tolerances, factored: bool, reasons: list[str], interrupted: bool) -> Verdict:
    last = trajectory[-1]
    criteria = pointwise_criteria(last, pred, tol, factored)
    has_direction = float(np.linalg.norm(pred.W_svm)) > 0
    criteria += [
        _bound("loss_floor", "P12", "min over checkpoints of L(W) - inf L (never below the infimum)",
               min(r["loss_gap"] for r in trajectory), tol.loss_gap_min, ">=", not factored),
        _monotone("direction_monotone", "P10", "cos(W - Pi_fin W, W^svm) non-decreasing after warm-up",
                  [r["cos_svm_orthogonal_part"] for r in trajectory], tol.monotone_slack, has_direction),
        _monotone("norm_growth", "P18", "R_hat = <W - W^fin, W^svm>/||W^svm||^2 increasing",
                  [r["R_hat"] for r in trajectory], tol.monotone_slack, has_direction),
        _monotone("scc_separation", "P15", "min cross-SCC score gap increasing",
                  [r["min_cross_margin"] for r in trajectory], tol.monotone_slack, has_direction),
    ]
    criteria = [_with_trend(c, trajectory, tol) for c in criteria]
    # The asymptotic regime starts once the scores realise every cross-SCC priority
    # (min cross-edge score gap > 0, a fact of the graphs, not of W^svm's values).
    # Before that, failures are not evidence against a limit theorem.
    margin = last.get("min_cross_margin")
    early = margin is not None and margin <= 0
    # monotonicity is asymptotic too: while a pointwise criterion is still converging it is not judged
    converging = any(c.applies and c.passed is False and c.still_improving for c in criteria if c.id in CRITERION_METRIC)
    criteria = [replace(c, still_improving=True)
                if c.passed is False and c.id != "loss_floor"
                and (early or (converging and c.relation == "non-decreasing")) else c
                for c in criteria]
    failed = [c for c in criteria if c.applies and c.passed is False]
    if interrupted:
        verdict = INCOMPLETE
    elif reasons:
        verdict = NOT_APPLICABLE
    elif failed and all(c.still_improving for c in failed):
        verdict = INCONCLUSIVE
        reasons = [*reasons, "budget too small: " + ", ".join(c.id for c in failed)
                   + " still moving towards the predicted limit at the last checkpoints; rerun with more --steps"]
    elif failed:
        verdict = VIOLATED
    else:
        verdict = HOLDS
    return Verdict(verdict, tuple(criteria), tuple(reasons), tol.as_dict())


def _with_trend(c: Criterion, trajectory: list[dict], tol: Tolerances) -> Criterion:
    """Is a failed criterion's metric still on its way to the predicted limit?

    * direction: the diverging part's latest increment points along the target
      (cos(Delta W_perp, W^svm) >= the tolerance at the last two checkpoints);
    * distances e(tau) that the theory sends to 0 (finite part, loss gap, leak,
      composition): the remaining error is compatible with the recent progress for a
      decay at least as fast as tau^(-1/3): e_k <= 3 (e_{k-1} - e_k) tau_{k-1} / (tau_k - tau_{k-1}),
      the bound being exact (with factor 1) for e = c/tau.  A metric converging to a
      positive constant (a wrong prediction) fails this as its progress dies out;
    * monotonicity: the last three values increase again.
    A loss below the infimum (loss_floor) is never transient.
    """
    if not c.applies or c.passed is not False:
        return c
    if c.id == "direction":
        increments = [r.get("cos_svm_increment") for r in trajectory[-2:]]
        ok = len(increments) == 2 and all(v is not None and v >= tol.cos_svm_min for v in increments)
        return replace(c, still_improving=bool(ok))
    if c.id in CRITERION_METRIC:
        key, ideal = CRITERION_METRIC[c.id]
        if len(trajectory) < 2 or trajectory[-1].get(key) is None or trajectory[-2].get(key) is None:
            return replace(c, still_improving=False)
        e_prev, e_last = abs(trajectory[-2][key] - ideal), abs(trajectory[-1][key] - ideal)
        t_prev, t_last = trajectory[-2]["step"], trajectory[-1]["step"]
        progress = e_prev - e_last
        ok = progress > 0 and t_last > t_prev and e_last <= 3.0 * progress * t_prev / (t_last - t_prev)
        return replace(c, still_improving=bool(ok))
    if c.relation == "non-decreasing":
        key = {"direction_monotone": "cos_svm_orthogonal_part", "norm_growth": "R_hat",
               "scc_separation": "min_cross_margin"}[c.id]
        tail = [r.get(key) for r in trajectory[-3:]]
        return replace(c, still_improving=bool(None not in tail and np.all(np.diff(tail) > 0)))
    return replace(c, still_improving=False)


def applicability(pred, config: TrainConfig) -> list[str]:
    reasons = [f"assumption fails: {a['name']} ({a['detail']})" for a in pred.assumptions if not a["holds"]]
    if config.optimizer == "adam":
        reasons.append("the theorem is about gradient descent; Adam is outside it (criteria are reported for conjecture tests)")
    return reasons


@dataclass(frozen=True, eq=False)
class VerifyResult:
    predictions: object
    train: TrainResult
    verdict: Verdict
    target: np.ndarray
    heldout: WindowSet | None
    target_kind: str

    def trajectory_json(self) -> dict:
        from theorycheck.io import SCHEMA_VERSION

        t = self.train
        return {"schema_version": SCHEMA_VERSION, "config": t.config.as_dict(), "parametrization": t.parametrization,
                "steps_done": t.steps_done, "interrupted": t.interrupted, "stopped_early": t.stopped_early,
                "target": self.target_kind,
                "heldout_windows": self.heldout.size if self.heldout else 0,
                "heldout_skipped_no_dominant_scc": self.heldout.skipped if self.heldout else 0,
                "checkpoints": list(t.checkpoints)}


def build_heldout(pred, holdout_corpus=None, probes: int = 200, seed: int = 0) -> WindowSet:
    windows, queries = [], []
    if holdout_corpus is not None and holdout_corpus.n:
        w, q = corpus_windows(holdout_corpus)
        windows += w
        queries += q
    if probes:
        w, q = probe_windows(pred, probes, np.random.default_rng([seed, 1]))
        windows += w
        queries += q
    return window_set_from_multisets(pred, windows, queries)


def verify(
    pred,
    config: TrainConfig = TrainConfig(),
    tolerances: Tolerances | None = None,
    heldout: WindowSet | None = None,
    on_step: Callable[[int], None] | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
) -> VerifyResult:
    """Train on ``pred.corpus`` and judge the trajectory against ``pred``.

    ``pred`` may be altered on purpose (e.g. a W^svm with two priorities swapped) to
    check that the checker can fail: the same code path then returns VIOLATED.
    """
    from theorycheck.svm import solve_graph_svm_nuclear

    config = config.validate()
    tol = tolerances or default_tolerances(config)
    reasons = applicability(pred, config)
    factored = config.factorized_width is not None
    target, target_kind = pred.W_svm, "frobenius"
    if factored and pred.svm is not None:
        target, target_kind = solve_graph_svm_nuclear(pred.corpus.E, pred.graphs).W, "nuclear"
    metrics = TrajectoryMetrics(pred, target=target, heldout=heldout)

    def monitor(step: int, W: np.ndarray):
        values = metrics(W)
        record = {"step": step, **values}
        if on_checkpoint is not None:
            on_checkpoint(record)
        ok = all(c.passed is not False for c in pointwise_criteria(values, pred, tol, factored) if c.applies)
        return values, ok and not reasons

    result = train(pred.stats, pred.score_map, pred.orthonormal, config, monitor=monitor, on_step=on_step)
    verdict = judge(list(result.checkpoints), pred, tol, factored, reasons, result.interrupted)
    return VerifyResult(pred, result, verdict, target, heldout, target_kind)


def with_tolerances(base: Tolerances, **overrides) -> Tolerances:
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
