"""When does a finite run refute a claim about a limit?

The conjectures are statements about t -> infinity (a direction W(t)/||W(t)|| -> U, a
distance -> 0).  A finite run can only refute one with evidence that it has settled
somewhere else.  The rules, applied to the log-spaced checkpoints of one run with final
step T (the late window is every checkpoint with step >= T/4, i.e. the last two doublings):

Direction claim, c(t) = cos(W(t) - Pi_fin W(t), U) (Frobenius cosine of the diverging
part, the quantity the verify stage judges as ``direction``; every Graph-SVM-type target U
satisfies the equalities, so U is orthogonal to S_fin and only the bounded finite part is
removed):

1. *beyond tolerance*: c(T) < ``cos_min`` (0.95, the P10 tolerance of THEORY.md §8);
2. *settled*: (a) the least-squares slope s of c against log2(step) over the late window
   is <= 0, or reaching c = ``cos_claim`` (0.99) at that slope would take more than
   2·log2(T) further doublings of the run.  Why 2·log2(T): the slowest rate the theory
   measures is logarithmic, c(t) = 1 - C/log t (THEORY.md §5.3); extrapolating such a curve
   linearly in log t from step T needs at most log2(T) doublings to reach any c < 1, so a
   run that needs more than twice that is not on a logarithmic approach to U; and (b) the
   run is not moving along U: the increments of the diverging part between the last three
   checkpoints have cos < ``cos_min`` with U (verify's "still improving" test).
   Condition (a) may instead be met by the *heading* h(t) = cos(D(t) - D(t'), U) of the
   increments (t' the previous checkpoint): the same extrapolation applied to h.  W/||W||
   tends to the limit of the headings (Stolz-Cesaro), and the heading settles much faster
   than W/||W|| when the norm grows slowly (a fixed heading at cos 0.866 with U, as Adam's
   on one window, is settled while cos(W, U) still creeps towards 0.866); a heading
   that turns towards U like 1/log t is, by the argument above, never settled;
3. *alternative* (when the conjecture names a competing direction V, e.g. the nuclear-norm
   Graph-SVM for K·Q^T): cos(W(T) - Pi_fin W(T), V) >= c(T) + ``alt_margin`` (0.02): the
   run is closer to V than to U.

All three hold: VIOLATED.  (1) fails: HOLDS at this budget.  (1) holds but not (2)/(3):
INCONCLUSIVE, which is never reported as a counterexample.

Distance claim, x(t) -> 0 (||Pi_fin W - W^fin||, L - inf L): VIOLATED when x(T) > tol and
the late log-log slope d log2 x / d log2 t > -0.1 (the theory's rate for GD is t^-1,
THEORY.md §5.3); beyond tolerance but still decaying: INCONCLUSIVE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

HOLDS, VIOLATED, INCONCLUSIVE, DISCARDED, ERROR = "holds", "violated", "inconclusive", "discarded", "error"
COS_MIN = 0.95
COS_CLAIM = 0.99
ALT_MARGIN = 0.02
DISTANCE_SLOPE_MAX = -0.1
LATE_FRACTION = 0.25


@dataclass(frozen=True)
class Finding:
    """One criterion of a conjecture, judged on one run."""

    id: str
    description: str
    value: float
    tolerance: float
    relation: str  # the claim's side: ">=" for cosines, "<=" for distances
    status: str  # holds / violated / inconclusive
    score: float  # > 0 iff beyond tolerance; normalised so criteria compare
    evidence: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def late_window(steps: np.ndarray, fraction: float = LATE_FRACTION) -> np.ndarray:
    steps = np.asarray(steps, dtype=np.float64)
    return (steps >= fraction * steps[-1]) & (steps > 0)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0])


def _doublings_needed(steps: np.ndarray, series: np.ndarray, target: float) -> tuple[float, float]:
    """(least-squares slope per doubling of the run, doublings to reach ``target`` at it)."""
    slope = _slope(np.log2(steps), series)
    return slope, ((target - series[-1]) / slope if slope > 0 else float("inf"))


def direction_claim(cid: str, description: str, steps, cos_series, increments=None, alternative=None,
                    alternative_name: str = "", cos_min: float = COS_MIN, cos_claim: float = COS_CLAIM,
                    alt_margin: float = ALT_MARGIN) -> Finding:
    """Judge ``cos(W(t) - Pi_fin W(t), U) -> 1`` (rules 1-3 of the module docstring).

    ``increments[j]`` = cos(D_j - D_{j-1}, U) for the diverging parts D at consecutive
    checkpoints (None or nan where undefined)."""
    steps = np.asarray(steps, dtype=np.float64)
    c = np.asarray(cos_series, dtype=np.float64)
    late = late_window(steps)
    T = float(steps[-1])
    allowed = 2.0 * np.log2(max(T, 2.0))
    slope, needed = _doublings_needed(steps[late], c[late], cos_claim)
    h = np.array([np.nan if v is None else float(v) for v in (increments if increments is not None else [None] * c.size)])
    late_h = late & np.isfinite(h)
    h_slope, h_needed = (_doublings_needed(steps[late_h], h[late_h], cos_claim) if late_h.sum() >= 2
                         else (float("nan"), float("nan")))
    recent = [float(v) for v in h[np.isfinite(h)][-2:]]
    moving_along = any(v >= cos_min for v in recent)
    beyond = bool(c[-1] < cos_min)
    direction_settled = bool(slope <= 0 or needed > allowed)
    heading_settled = bool(len(recent) == 2 and (h_slope <= 0 or h_needed > allowed))
    settled = bool((direction_settled or heading_settled) and not moving_along)
    evidence = {"final_step": int(T), "late_checkpoints": int(late.sum()),
                "slope_per_doubling": slope, "doublings_needed": needed, "doublings_allowed": allowed,
                "last_increments_cos": recent, "moving_along_claim": moving_along,
                "heading_slope_per_doubling": h_slope, "heading_doublings_needed": h_needed,
                "settled": settled, "late_values": [float(v) for v in c[late]]}
    alt_ok = True
    if alternative is not None:
        a = np.asarray(alternative, dtype=np.float64)
        alt_ok = bool(a[-1] >= c[-1] + alt_margin)
        evidence.update({"alternative": alternative_name, "alternative_cos": float(a[-1]),
                         "alternative_margin": alt_margin, "closer_to_alternative": alt_ok,
                         "alternative_late_values": [float(v) for v in a[late]]})
    status = HOLDS if not beyond else (VIOLATED if settled and alt_ok else INCONCLUSIVE)
    return Finding(cid, description, float(c[-1]), cos_min, ">=", status, (cos_min - float(c[-1])) / (1.0 - cos_min), evidence)


def distance_claim(cid: str, description: str, steps, series, tolerance: float,
                   slope_max: float = DISTANCE_SLOPE_MAX) -> Finding:
    """Judge ``x(t) -> 0`` from its final value and late log-log slope."""
    steps = np.asarray(steps, dtype=np.float64)
    x = np.maximum(np.asarray(series, dtype=np.float64), 1e-300)
    late = late_window(steps)
    slope = _slope(np.log2(steps[late]), np.log2(x[late]))
    beyond = bool(x[-1] > tolerance)
    settled = bool(slope > slope_max)
    status = HOLDS if not beyond else (VIOLATED if settled else INCONCLUSIVE)
    evidence = {"final_step": int(steps[-1]), "late_checkpoints": int(late.sum()), "loglog_slope": slope,
                "slope_max": slope_max, "settled": settled, "late_values": [float(v) for v in x[late]]}
    return Finding(cid, description, float(x[-1]), tolerance, "<=", status, float(np.log10(x[-1] / tolerance)), evidence)


def overall(findings: list[Finding]) -> tuple[str, Finding | None]:
    """(status, headline finding): violated if any criterion is, then inconclusive, then
    holds; the headline is the worst finding of that status (largest score, then first)."""
    if not findings:
        return INCONCLUSIVE, None
    for status in (VIOLATED, INCONCLUSIVE):
        hits = [f for f in findings if f.status == status]
        if hits:
            return status, max(hits, key=lambda f: f.score)
    return HOLDS, max(findings, key=lambda f: f.score)
