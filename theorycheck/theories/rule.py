"""The verdict rule of theorycheck, for any theory (docs/verify.md, docs/theories.md).

A limit theorem is judged by where the run is going: every criterion gets an interval for the
run's *limit* (its last value ± a bound on how far it still moves, fitted to the run's own decay
and backtested on its past, theorycheck.limits) and is HOLDS when the interval lies within the
tolerance, VIOLATED when it lies beyond it, INCONCLUSIVE otherwise.  The building blocks:

* ``diverging_direction(steps, vectors)`` -> DirectionEvidence, then ``direction_criterion``:
  the direction of a diverging sequence (a max-margin limit, W/||W|| -> W^svm or W^mm), from
  the direction of its last increment and a bound on how far that still turns;
* ``converging_criterion``: a converging point (a finite component, W^fin or W^⋆);
* ``vanishing_criterion``: a scalar the theory sends to 0 (a loss gap);
* ``gate_pre_asymptotic``, ``combine``, ``smallest_detected`` (the resolution by bisection)
  and ``TheoryVerdict`` with its one-line statement.

theorycheck.verify judges Li et al. (2024) with these same primitives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from theorycheck.limits import NOT_LOCATED, Remainder
from theorycheck.verify import (
    EXIT_CODES,
    HOLDS,
    INCOMPLETE,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    TRANSVERSE_SHARE,
    VIOLATED,
    Criterion,
    DirectionTracker,
    Verdict,
    _decide,
    _not_judged,
    _smallest_detected,
    combine,
    decide_direction,
    direction_angles_of,
    gate_extrapolated,
    point_remainder,
    statement_line,
)

__all__ = ["HOLDS", "VIOLATED", "INCONCLUSIVE", "NOT_APPLICABLE", "INCOMPLETE", "EXIT_CODES", "Criterion",
           "DirectionEvidence", "diverging_direction", "direction_criterion", "converging_remainder",
           "converging_criterion", "vanishing_criterion", "gate_pre_asymptotic", "combine", "smallest_detected",
           "not_judged", "TheoryVerdict"]

not_judged = _not_judged
smallest_detected = _smallest_detected


@dataclass(frozen=True, eq=False)
class DirectionEvidence:
    """What a diverging sequence says about its limit direction (verify.DirectionTracker)."""

    direction: np.ndarray | None  # unit direction u_K of the last increment
    turn: Remainder  # bound (radians) on the angle u_K still turns
    motion: np.ndarray | None  # orthonormal basis of the recent turning
    transverse: Remainder  # backtested bound (radians) on the turning outside that span

    @property
    def located(self) -> bool:
        return self.direction is not None and self.turn.located

    @property
    def transverse_bound(self) -> float:
        """max(backtest, TRANSVERSE_SHARE · U): the calibrated bound of docs/verify.md."""
        return max(self.transverse.bound, TRANSVERSE_SHARE * self.turn.bound)


def diverging_direction(vectors: Sequence[np.ndarray]) -> DirectionEvidence:
    """Direction evidence of the diverging sequence v(t_0), ..., v(t_K) (flattened arrays)."""
    tracker = DirectionTracker()
    for v in vectors:
        tracker.feed(np.asarray(v, dtype=np.float64).ravel())
    direction, turn, motion, transverse = tracker.result()
    return DirectionEvidence(direction, turn, motion, transverse)


def direction_criterion(ev: DirectionEvidence, predicted: np.ndarray, tol_deg: float, cid: str = "direction",
                        ref: str = "", desc: str = "angle between the run's limit direction and the prediction",
                        norm: float | None = None) -> Criterion:
    """HOLDS when angle(u_K, D) + U <= tol; VIOLATED when angle - U > tol, or when the transverse
    angle (the part of D/||D|| - u_K outside the run's recent turning) exceeds its bound by more
    than tol.  ``predicted``: D in the same coordinates as the vectors; ``norm``: ||D|| when D
    has a part outside those coordinates (it then counts as transverse)."""
    p = np.asarray(predicted, dtype=np.float64).ravel()
    if not (norm if norm is not None else np.linalg.norm(p)) > 0:
        return _not_judged(cid, ref, desc, note="the predicted direction is 0: no direction predicted")
    if ev.direction is None:
        return _not_judged(cid, ref, desc, note="the diverging part did not move at the last checkpoint")
    angle, transverse = (float(np.degrees(a)) for a in direction_angles_of(ev.direction, ev.motion, p, norm))
    return decide_direction(cid, ref, desc, angle, transverse, float(np.degrees(ev.turn.bound)),
                            float(np.degrees(ev.transverse_bound)), ev.turn.located, tol_deg)


def converging_remainder(steps: np.ndarray, coords: np.ndarray) -> Remainder:
    """Bound on ||x_K - x_inf|| for a converging sequence of points x(t_k) (rows of coords),
    clocked by the step count (verify.point_remainder); not located for an empty space."""
    coords = np.asarray(coords, dtype=np.float64).reshape(len(steps), -1)
    return NOT_LOCATED if coords.shape[1] == 0 else point_remainder(steps, coords)


def converging_criterion(cid: str, ref: str, desc: str, last: np.ndarray, remainder: Remainder,
                         predicted: np.ndarray, tolerance: float, floor: float = 0.0, note: str = "",
                         off_space: float = 0.0) -> Criterion:
    """distance = sqrt(||x_K - x_pred||^2 + off_space^2), decided with the interval
    distance ± (remainder + floor) against ``tolerance``.  ``off_space``: the norm of the part of
    the prediction outside the space the run's points live in (the run cannot approach it)."""
    distance = float(np.hypot(np.linalg.norm(np.ravel(last) - np.ravel(predicted)), off_space))
    return _decide(cid, ref, desc, distance, remainder.bound + floor, tolerance, note=note)


def vanishing_criterion(cid: str, ref: str, desc: str, steps: np.ndarray, values: np.ndarray,
                        tolerance: float) -> Criterion:
    """A scalar the theory sends to 0: |x_K| ± its remaining movement against ``tolerance``."""
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return _not_judged(cid, ref, desc, None, note="non-finite values in the trajectory")
    return _decide(cid, ref, desc, abs(float(x[-1])), point_remainder(steps, x).bound, tolerance)


gate_pre_asymptotic = gate_extrapolated


@dataclass(frozen=True)
class TheoryVerdict(Verdict):
    """verify's Verdict with a statement that names the theory's own quantities: ``labels`` maps
    a criterion id to (name, unit, scale), the measured value divided by scale in that unit (e.g.
    ("W^⋆", " %", ||W^⋆||/100)); ``resolution`` maps an id to the smallest detected error in that unit."""

    labels: dict = field(default_factory=dict)

    def statement(self) -> str:
        """One line, e.g. 'HOLDS: direction within 0.4°; W^⋆ within 0.8 %; this run detects ...'."""
        labelled = [(self.criterion(cid), name, unit, 1.0 / scale) for cid, (name, unit, scale) in self.labels.items()]
        bits = [f"{self.labels[cid][0]} errors >= {value:.2g}{self.labels[cid][1]}"
                for cid, value in self.resolution.items() if cid in self.labels and value is not None]
        return statement_line(self.verdict, labelled, bits)
