"""How far is a converging sequence from its limit?  A fitted decay model and its residual.

The verify stage observes a quantity x(tau) (a point of S_fin, a unit direction, a scalar
metric) at log-spaced checkpoints tau_0 < ... < tau_K and needs an interval for its limit
x_inf, not only its last value.  Model (power-law approach, which covers the rates of
THEORY.md §5.3: 1/tau for the finite part under GD, and a power of the diverging scale
||W_perp|| for the direction):

    x(tau) = x_inf + b tau^(-p),     p > 0,

so the movement between consecutive checkpoints is

    m_k = ||x_k - x_(k-1)|| = B (tau_(k-1)^(-p) - tau_k^(-p)),   B = ||b||,

and the distance still to go is ||x_K - x_inf|| = B tau_K^(-p).  (p, B) are fitted to
the last ``window`` movements by least squares on log m_k, with p on a grid; to stay
conservative the bound uses the *smallest* p whose root-mean-square log residual is within
``slack`` of the best, and it is inflated by the worst log residual.  A sequence whose
movements do not decay (best p below ``P_MIN``), or whose clock does not advance, gets an
infinite bound: its limit is not located by this run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

P_GRID = np.round(np.arange(0.05, 4.0001, 0.05), 2)
P_MIN = 0.15
WINDOW = 6
STOPPED = 1e-9  # relative: distances this small are rounding noise
SETTLED = 2  # trailing distances below ``negligible`` that make a sequence settled


@dataclass(frozen=True)
class Remainder:
    """Bound on ||x_K - x_inf|| and the fitted model behind it."""

    bound: float  # inf when the run does not locate its limit
    exponent: float | None  # the p used for the bound
    best_exponent: float | None
    log_residual: float | None  # worst |log m_k - model| over the window
    movements: int  # number of movements fitted

    @property
    def located(self) -> bool:
        return bool(np.isfinite(self.bound))

    def as_dict(self) -> dict:
        return {"bound": self.bound if self.located else None, "exponent": self.exponent,
                "best_exponent": self.best_exponent, "log_residual": self.log_residual,
                "movements": self.movements}


NOT_LOCATED = Remainder(float("inf"), None, None, None, 0)


def remaining_distance(clock, distances, window: int = WINDOW, slack: float = 0.02,
                       scale: float = 1.0, negligible: float = 0.0) -> Remainder:
    """Bound the distance from the last point x_K to the limit.

    ``clock``: tau_0..tau_K; ``distances``: r_k = ||x_k - x_K|| for k = 0..K-1 (distances
    *from the last point*, which stay meaningful when the sequence oscillates around its
    limit, as normalised GD does).  Two readings of the model are fitted to the last
    ``window`` distances and the one with the smaller residual is used:

    * monotone approach, x_k - x_K = b (tau_k^-p - tau_K^-p):  r_k = B (tau_k^-p - tau_K^-p);
    * oscillation inside an envelope B tau^-p:                r_k <= B tau_k^-p (1 + o(1)).

    Either way ||x_K - x_inf|| <= B tau_K^-p; the bound uses the smallest p whose RMS log
    residual is within ``slack`` of the best and is inflated by that fit's worst residual.
    ``scale``: when every distance is below 1e-9·scale (rounding noise) the sequence has stopped
    and the bound is the largest of those distances.  ``negligible``: when every distance is below it, the sequence is
    taken as settled and the bound is the largest distance seen (no decay to fit); when only the last
    SETTLED are (the sequence settled inside the window, as split-ngd's directions do, often onto
    the last point exactly), the bound is ``negligible`` itself.
    """
    tau = np.asarray(clock, dtype=np.float64)
    r = np.asarray(distances, dtype=np.float64)
    if tau.size != r.size + 1:
        raise ValueError("clock needs one more value than distances")
    if r.size < 3 or not np.all(np.isfinite(r)) or not np.all(np.isfinite(tau)):
        return NOT_LOCATED
    tau_last = tau[-1]
    tau, r = tau[:-1][-window:], r[-window:]
    if np.all(r <= STOPPED * max(scale, 1e-300)):
        return Remainder(float(r.max()), None, None, 0.0, int(r.size))
    if np.all(r <= negligible):
        return Remainder(float(r.max()), None, None, None, int(r.size))
    if r.size >= SETTLED and np.all(r[-SETTLED:] <= negligible):
        # settled within the window: the last SETTLED points lie within ``negligible`` of the last
        # one (often exactly on it), so there is no decay left to fit; the bound is ``negligible``
        return Remainder(float(negligible), None, None, None, int(r.size))
    if np.any(np.diff(tau) <= 0) or tau[0] <= 0 or tau_last <= tau[-1] or np.any(r <= 0):
        return NOT_LOCATED
    log_r = np.log(r)
    best: tuple | None = None
    for basis_of in (lambda p: tau ** -p - tau_last ** -p, lambda p: tau ** -p):
        fits = []
        for p in P_GRID:
            basis = np.log(basis_of(p))
            lb = float(np.mean(log_r - basis))
            res = log_r - basis - lb
            fits.append((float(np.sqrt(np.mean(res * res))), float(np.abs(res).max()), lb, float(p)))
        rms = np.array([f[0] for f in fits])
        i_best = int(np.argmin(rms))
        if best is None or rms[i_best] < best[0]:
            best = (float(rms[i_best]), fits, i_best)
    rms_best, fits, i_best = best
    p_best = fits[i_best][3]
    if p_best < P_MIN:
        return Remainder(float("inf"), None, p_best, fits[i_best][1], int(r.size))
    usable = [f for f in fits if f[0] <= rms_best + slack and f[3] >= P_MIN]
    _, worst, lb, p = usable[0]
    # an oscillating sequence can sit at the edge of its envelope at the last checkpoint, so
    # the bound is never below the recent distances to the last point (the envelope's size)
    bound = max(float(np.exp(lb + worst) * tau_last ** -p), float(r[-3:].max()))
    return Remainder(bound, p, p_best, worst, int(r.size))


def validated_remainder(clock, distance, backtests: int = 2, window: int = WINDOW, scale: float = 1.0,
                        margin: float = 2.0, negligible: float = 0.0) -> Remainder:
    """``remaining_distance`` at the last point, checked against the run's own past.

    ``distance(i, j)``: the distance between points i and j (0 <= i, j < len(clock)).  The
    same bound computed at each of the previous ``backtests`` checkpoints K' (from the data
    up to K' only) must cover the distance the sequence then actually moved, from x_K' to
    x_K (up to a factor ``margin``, room for the oscillation of normalised GD inside its
    envelope); if one does not, the decay model does not describe this run yet (it is still
    pre-asymptotic) and the limit is reported as not located."""
    tau = np.asarray(clock, dtype=np.float64)
    K = tau.size - 1
    main = remaining_distance(tau, [distance(i, K) for i in range(K)], window=window, scale=scale,
                              negligible=negligible)
    if not main.located or main.exponent is None:
        return main
    for back in range(1, backtests + 1):
        Kb = K - back
        if Kb < window + 1:
            break
        earlier = remaining_distance(tau[:Kb + 1], [distance(i, Kb) for i in range(Kb)], window=window, scale=scale)
        if earlier.located and distance(Kb, K) > margin * earlier.bound:
            return Remainder(float("inf"), None, main.best_exponent, main.log_residual, main.movements)
    return main

