"""When does a finite run refute a claim about a limit?  The verify stage's rule.

The conjectures are statements about t -> infinity (a direction W(t)/||W(t)|| -> U, a
distance -> 0).  A finite run refutes one only when the *interval* the run gives for its own
limit lies beyond the claim's tolerance; this is the decision rule of ``theorycheck verify``
(theorycheck.verify, docs/verify.md), applied to a conjecture's target:

Direction claim: the last increment u_K of the diverging part D(t) = W(t) - Pi_fin W(t)
between checkpoints, and bounds fitted to the run's own turning (verify.DirectionTracker):
U on angle(u_K, u_inf) and U_perp on the turning outside the span of its recent motion.

* VIOLATED: angle(u_K, U) - U > tol, or (U located) the transverse angle of U off the run's
  recent motion minus U_perp > tol (the run would have to turn where it never turned);
* HOLDS: angle(u_K, U) + U <= tol;
* INCONCLUSIVE otherwise, and whenever the run's turning is not located yet (pre-asymptotic),
  which is never reported as a counterexample.

``tol`` is the conjectures' direction tolerance, 2 degrees: wider than verify's default (1 degree),
so a reported counterexample is off by more than verify would need to refute it.  A competing direction V (e.g. the
nuclear-norm Graph-SVM for K Q^T) is judged the same way and reported as evidence.

Distance claim, x(t) -> 0 (||Pi_fin W - W^fin||, L - inf L): the last value and the
validated bound on how far it still moves (theorycheck.limits): VIOLATED when x(T) - U > tol,
HOLDS when x(T) + U <= tol, INCONCLUSIVE otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

HOLDS, VIOLATED, INCONCLUSIVE, DISCARDED, ERROR = "holds", "violated", "inconclusive", "discarded", "error"
DIRECTION_DEG = 2.0  # the conjectures' direction tolerance (verify's default is 0.75°; falsify runs verify at this one)


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


def direction_claim(cid: str, description: str, steps, matrices, project, target: np.ndarray,
                    alternative: np.ndarray | None = None, alternative_name: str = "",
                    tol_deg: float = DIRECTION_DEG) -> Finding:
    """Judge ``W(t)/||W(t)|| -> target/||target||`` on the matrices W(t_k) of one run.

    ``project(W)`` = Pi_fin W (the bounded part removed before taking increments)."""
    from theorycheck.verify import TRANSVERSE_SHARE, DirectionTracker, direction_angles_of

    tracker = DirectionTracker()
    for W in matrices:
        tracker.feed((W - project(W)).ravel())
    direction, turn, motion, transverse_bound = tracker.result()
    evidence = {"final_step": int(np.asarray(steps)[-1]), "turn_bound_deg": _deg(turn.bound),
                "transverse_bound_deg": _deg(transverse_bound.bound), "turn_exponent": turn.exponent}
    if direction is None:
        return Finding(cid, description, float("nan"), tol_deg, "<=", INCONCLUSIVE, 0.0,
                       {**evidence, "why": "the diverging part did not move at the last checkpoint"})
    angle, transverse = direction_angles_of(direction, motion, target)
    angle, transverse = np.degrees(angle), np.degrees(transverse)
    U = float(np.degrees(turn.bound))
    U_perp = float(np.degrees(max(transverse_bound.bound, TRANSVERSE_SHARE * turn.bound)))
    evidence.update({"angle_deg": angle, "transverse_deg": transverse, "turn_located": turn.located})
    if alternative is not None:
        alt_angle, _ = direction_angles_of(direction, motion, alternative)
        evidence.update({"alternative": alternative_name, "alternative_angle_deg": float(np.degrees(alt_angle))})
    lower = max(angle - U, (transverse - U_perp) if turn.located and np.isfinite(U_perp) else -np.inf)
    if turn.located and lower > tol_deg:
        status = VIOLATED
    elif turn.located and angle + U <= tol_deg:
        status = HOLDS
    else:
        status = INCONCLUSIVE
    score = float((lower - tol_deg) / tol_deg) if np.isfinite(lower) else 0.0
    evidence["limit_lower_bound_deg"] = float(lower) if np.isfinite(lower) else None
    return Finding(cid, description, float(angle), tol_deg, "<=", status, score, evidence)


def _deg(radians: float) -> float | None:
    return float(np.degrees(radians)) if np.isfinite(radians) else None


def distance_claim(cid: str, description: str, steps, series, tolerance: float) -> Finding:
    """Judge ``x(t) -> 0`` from its last value and the validated bound on its remaining movement."""
    from theorycheck.limits import validated_remainder

    steps = np.maximum(np.asarray(steps, dtype=np.float64), 0.5)
    x = np.asarray(series, dtype=np.float64)
    rem = validated_remainder(steps, lambda a, b: abs(float(x[a] - x[b])), scale=max(1.0, float(np.abs(x).max())))
    last = abs(float(x[-1]))
    if rem.located and last - rem.bound > tolerance:
        status = VIOLATED
    elif rem.located and last + rem.bound <= tolerance:
        status = HOLDS
    else:
        status = INCONCLUSIVE
    evidence = {"final_step": int(steps[-1]), "remaining_bound": rem.bound if rem.located else None,
                "decay_exponent": rem.exponent, "late_values": [float(v) for v in x[-7:]]}
    score = float(np.log10(max(last - (rem.bound if rem.located else 0.0), 1e-300) / tolerance))
    return Finding(cid, description, last, tolerance, "<=", status, score, evidence)


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
