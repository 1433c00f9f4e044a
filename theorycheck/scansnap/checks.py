"""Checks P0-P14 of THEORY-scansnap.md §5 and the ``scan-snap`` pipeline.

Every check reports its statistic, threshold, number of eligible items and the
preconditions it needs ({name: {holds, required, detail}}).  Outcome:

* NOT APPLICABLE when a required precondition fails or no item is eligible,
* otherwise HOLDS or VIOLATED according to the relation(s) of §5.2.

A failed check is evidence against the theory only when its preconditions held (§5.3).
The pure functions ``p2_fraction_positive`` ... take plain arrays so that tests can feed
them hand-made (and deliberately wrong) data; :func:`run_scansnap` wires corpus ->
statistics -> training runs (main run + learning-rate sweeps as campaigns) -> checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from theorycheck import __version__
from theorycheck.corpus.types import Corpus
from theorycheck.io import SCHEMA_VERSION
from theorycheck.scansnap.model import (
    TrainConfig,
    Trajectory,
    crossing_time,
    population_alpha,
    train,
)
from theorycheck.scansnap.stats import (
    ScanSnapStats,
    assumption2,
    corpus_statistics,
)

HOLDS, VIOLATED, NOT_APPLICABLE = "HOLDS", "VIOLATED", "NOT APPLICABLE"
CHECK_IDS = tuple(f"P{i}" for i in range(15))

# tolerances of THEORY-scansnap.md §5.2 (each with the reason in docs/scansnap.md)
P0_TOL = 1e-10            # float64 analogue of the paper-free 1e-4 (float32) relative tolerance
P2_MIN_FRACTION = 0.95
P3_MIN_FRACTION = 0.95
P4_MIN_SPEARMAN = 0.9
P4_MIN_ARGMAX = 0.9
P5_MAX_CV_SMALL = 0.10
P5_MAX_CV_LARGE = 0.25
P6_MIN_FRACTION = 0.9
P7_MAX_RESIDUAL = 0.15
P7_MIN_SIGNS = 0.9
P8_SLOPE = (-1.15, -0.85)
P8_MAX_ETA_Z_CHANGE = 0.10
P8_LEVEL = (0.5, 2.0)
P9_MAX_LATE_OVER_PEAK = 0.7
P9_MIN_ENTROPY = 0.5
P9_MAX_ATTENTION = 0.95
P12_MAX_CV = 0.15
P14_MAX_LATE_OVER_EARLY = 0.2
P14_MAX_SPEARMAN = -0.8
MIN_RATIO = 2.0           # Assumption 1(c): eta_Y / eta_Z >= 2 (§2, §4.2)
MAX_MOMENTUM_TIME = 0.5   # time units t -> t/(1-mu) are reliable only for mu <= 0.5 (§3.7)
AUTO_SERIAL_SECONDS = 15.0  # a LocalCluster takes ~5 s to start: not worth it for shorter campaigns


@dataclass(frozen=True)
class ScanSnapOptions:
    """Everything a scan-snap run depends on (the CLI fills it; defaults = paper's Syn-Small)."""

    eta_y: float = 1.0
    eta_z: float = 0.1                 # eta_Y / eta_Z = 10: Assumption 1(c), decoder much faster
    steps: int | None = None          # None: 128 t0 (t0 = 2 K ln M / eta_Y) when psi holds, else 2000
    snap_ratio: float = 2.0            # P9 run: eta_Z = eta_Y / snap_ratio (§5.2 P9 calibration)
    snap: bool = True                  # run the long P9 run (128 t0)
    batch: int = 128
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    init: str = "zero"
    residual: bool = False
    seed: int = 0
    sweeps: bool = True
    sweep_seeds: int = 5
    sweep_steps: int = 100             # P10/P11: Fig. 6 protocol (100 iterations,
    sweep_momentum: float = 0.9        #   momentum 0.9, nn.Linear random init)
    sweep_init: str = "random"
    sweep_eta_z: tuple[float, ...] = (0.25, 0.5, 1.0)
    sweep_ratios: tuple[float, ...] = (2.0, 5.0, 10.0)
    p8_eta_y: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)
    p8_eta_z: float = 0.02
    p8_eta_z_range: tuple[float, ...] = (0.002, 0.02, 0.1)
    p8_seeds: int = 2
    p12_nu: float = 10.0
    p12_eta_z: tuple[float, ...] = (0.0125, 0.025, 0.05, 0.1)
    p14_rates: tuple[float, ...] = (1.0, 2.0, 4.0)
    p14_seeds: int = 3
    eval_windows: int = 1024
    delta: float = 0.05
    support_factor: float = 2.0
    min_expected: float = 5.0
    workers: int | None = None         # None: serial if the campaign is short, else one process per core
    scheduler: str | None = None
    campaign_log: str | None = None
    progress: bool = False
    compare: bool = True

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("workers", "scheduler", "campaign_log", "progress"):
            d.pop(k)  # how it ran, not what it computed: keeps results identical across machines
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# -- small helpers ----------------------------------------------------------------------
def pre(holds: bool, detail: str, required: bool = True) -> dict:
    return {"holds": bool(holds), "required": bool(required), "detail": detail}


def make_check(cid: str, name: str, claim: str, statistic, threshold, relation: str, eligible: int,
               preconditions: dict, holds: bool | None, details: dict | None = None,
               soft: bool = False) -> dict:
    """One entry of results['checks']; outcome from preconditions, eligibility and ``holds``."""
    required_ok = all(p["holds"] for p in preconditions.values() if p["required"])
    if not required_ok or eligible == 0 or holds is None:
        outcome = NOT_APPLICABLE
    else:
        outcome = HOLDS if holds else VIOLATED
    failed = [k for k, p in preconditions.items() if p["required"] and not p["holds"]]
    reason = None
    if outcome == NOT_APPLICABLE:
        reason = ("preconditions failed: " + ", ".join(failed)) if failed else "no eligible items"
    return {
        "id": cid, "name": name, "claim": claim, "statistic": _num(statistic), "threshold": _num(threshold),
        "relation": relation, "eligible": int(eligible), "preconditions": preconditions,
        "preconditions_held": bool(required_ok), "outcome": outcome, "reason": reason,
        "soft": soft, "details": details or {},
    }


def _num(x):
    if isinstance(x, (list, tuple)):
        return [_num(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x)
    if isinstance(x, (np.integer, int)) and not isinstance(x, bool):
        return int(x)
    return x


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; 0 when either side is constant (no ranking to agree with)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def distinct_entropy(c: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    """H_n: entropy (nats) of c_n restricted to G_DT(n) and renormalised (§4.2 metric);
    NaN for classes with fewer than 2 distinct tokens."""
    masked = np.where(distinct, c, 0.0)
    tot = masked.sum(axis=1, keepdims=True)
    q = np.divide(masked, tot, out=np.zeros_like(masked), where=tot > 0)
    H = -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)).sum(axis=1)
    return np.where(distinct.sum(axis=1) >= 2, H, np.nan)


def dominant_distinct(stats: ScanSnapStats, c0: np.ndarray) -> np.ndarray:
    """l0(n) = argmax over G_DT(n) of c~_{l|n}(0) (∝ c_n(0)); -1 without distinct tokens."""
    score = np.where(stats.distinct, c0, -np.inf)
    l0 = score.argmax(axis=1)
    return np.where(stats.distinct.any(axis=1), l0, -1)


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


# -- pure check statistics (testable on hand-made data) ------------------------------------
def p0_conservation(drift_Z: np.ndarray, drift_Y: np.ndarray) -> float:
    """max relative row-sum drift of Z and Y over the checkpoints."""
    return float(max(np.max(drift_Z, initial=0.0), np.max(drift_Y, initial=0.0)))


def p2_fraction_positive(dz: np.ndarray) -> float:
    return float((np.asarray(dz) > 0).mean()) if np.size(dz) else math.nan


def p4_scan_order(c0: np.ndarray, dz: np.ndarray) -> float:
    """Spearman(c~(0), Delta z) over one class' eligible distinct tokens."""
    return spearman(c0, dz)


def p5_kappa(z0: np.ndarray, zt: np.ndarray, P: np.ndarray) -> np.ndarray:
    """kappa_{n,l} = (e^{-2 z(0)} - e^{-2 z(t)}) / P-hat(l|n)^2 (Eq. 11 integrated, §3.5)."""
    return (np.exp(-2.0 * z0) - np.exp(-2.0 * zt)) / P**2


def coefficient_of_variation(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    m = x.mean()
    return float(x.std() / abs(m)) if m != 0 else math.inf


def p6_monotone_fraction(z_dom: np.ndarray, z_others: np.ndarray) -> float:
    """Fraction of checkpoint steps where z_l0 and every z_l0 - z_l do not decrease.

    ``z_dom`` (S,), ``z_others`` (S, k).  ratio c_l0/c_l = (P_l0/P_l) e^{z_l0 - z_l}.
    """
    steps_dom = np.diff(z_dom) >= 0
    if z_others.size:
        steps_gap = np.diff(z_dom[:, None] - z_others, axis=0) >= 0
        return float(np.concatenate([steps_dom, steps_gap.ravel()]).mean())
    return float(steps_dom.mean()) if steps_dom.size else math.nan


def p7_regression(g: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares g_n ≈ F coef (Theorem 1); returns (coef, relative residual)."""
    coef, *_ = np.linalg.lstsq(F, g, rcond=None)
    norm = np.linalg.norm(g)
    resid = float(np.linalg.norm(g - F @ coef) / norm) if norm > 0 else math.inf
    return coef, resid


def p9_window_slopes(steps: np.ndarray, z: np.ndarray) -> np.ndarray:
    """dz / d ln t over consecutive checkpoint pairs (the ×4 windows)."""
    steps = np.asarray(steps, float)
    return np.diff(z) / np.diff(np.log(steps))


def strictly_decreasing(values: np.ndarray) -> bool:
    return bool(np.all(np.diff(np.asarray(values, float)) < 0))


# -- the pipeline ------------------------------------------------------------------------
@dataclass(eq=False)
class ScanSnapResult:
    results: dict
    stats: ScanSnapStats
    trajectory: Trajectory | None
    timings: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.results["verdict"]["exit_code"]


def t0_of(stats: ScanSnapStats, eta_y: float, momentum: float = 0.0) -> float:
    """Transition time t_0 = 2 K ln M / eta_Y (Thm 4(a)); heavy-ball rate eta / (1 - mu) (§3.7)."""
    eff = eta_y / (1.0 - momentum)
    return 2.0 * stats.C * math.log(stats.M) / eff if eff > 0 else math.inf


def main_config(stats: ScanSnapStats, opt: ScanSnapOptions) -> TrainConfig:
    t0 = t0_of(stats, opt.eta_y, opt.momentum if opt.optimizer == "sgd" else 0.0)
    if opt.steps is not None:
        steps = opt.steps
    elif stats.psi_holds and math.isfinite(t0):
        steps = int(min(max(math.ceil(128 * t0), 200), 20_000))
    else:
        steps = 2000
    extra = [int(round(t0 * 4**k)) for k in range(-1, 8) if math.isfinite(t0) and 1 <= t0 * 4**k <= steps]
    extra += [max(1, round(0.1 * steps)), max(1, round(0.5 * steps))]
    return TrainConfig(
        eta_y=opt.eta_y, eta_z=opt.eta_z, steps=steps, batch=opt.batch, momentum=opt.momentum,
        weight_decay=opt.weight_decay, optimizer=opt.optimizer, init=opt.init, residual=opt.residual,
        class_balanced=stats.psi_holds, n_checkpoints=48, extra_checkpoints=tuple(sorted(set(extra))),
        eval_windows=0, seed=opt.seed,
    )


def snap_config(stats: ScanSnapStats, opt: ScanSnapOptions) -> TrainConfig:
    """The P9 run: the main run's settings with eta_Z = eta_Y / snap_ratio, to 128 t0."""
    main = main_config(stats, replace(opt, eta_z=opt.eta_y / opt.snap_ratio, steps=None))
    return replace(main, seed=opt.seed * 1000 + 999, eval_windows=0)


def snap_statistics(stats: ScanSnapStats, traj: Trajectory, t0: float) -> dict:
    """P9 per class: slopes dz_ml0/d ln t over the x4 windows [t0 4^k, t0 4^(k+1)], H_n(t_end),
    max_l c_l|n(t_end)."""
    c0 = traj.attention(stats, 0)
    cT = traj.attention(stats, -1)
    steps = set(traj.checkpoint_steps.tolist())
    marks = [int(round(t0 * 4**k)) for k in range(8)
             if math.isfinite(t0) and 1 <= round(t0 * 4**k) <= traj.steps_done]
    marks = [m for m in marks if m in steps]
    l0 = dominant_distinct(stats, c0)
    H = distinct_entropy(cT, stats.distinct)
    per_class = []
    if len(marks) >= 3:
        idx = [traj.index_of(m) for m in marks]
        for c in range(stats.C):
            if l0[c] < 0 or stats.distinct[c].sum() < 2:
                continue
            z = np.array([traj.query_rows(stats, k)[c, l0[c]] for k in idx])
            sl = p9_window_slopes(np.array(marks), z)
            peak = sl.max()
            per_class.append({"class": stats.class_label(c), "slopes": sl.tolist(),
                              "late_over_peak": float(sl[-1] / peak) if peak > 0 else math.inf,
                              "entropy_end": float(H[c]), "max_attention_end": float(cT[c].max())})
    return {"marks": marks, "steps_done": traj.steps_done, "per_class": per_class}


def sweep_task(task: dict, stats: ScanSnapStats) -> dict:
    """One run of a learning-rate sweep (campaign worker); returns only the measured numbers."""
    kind = task["kind"]
    cfg = TrainConfig(**task["config"])
    if kind == "p8":
        traj = train(stats, cfg)
        return {"t_half": crossing_time(traj.pop_alpha_steps), "steps_done": traj.steps_done,
                "diverged": traj.diverged}
    if kind in ("p10", "p14"):
        traj = train(stats, cfg)
        if traj.diverged:
            return {"diverged": True, "entropy": math.nan}
        if kind == "p14":
            steps, H = traj.checkpoint_steps, traj.entropy_positions
            at = {f: float(np.interp(f * traj.steps_done, steps, H)) for f in (0.0, 0.1, 0.5, 1.0)}
            return {"diverged": False, "entropy": at[1.0], "entropy_t0": at[0.0], "entropy_10pct": at[0.1],
                    "entropy_50pct": at[0.5]}
        H = distinct_entropy(traj.attention(stats, -1), stats.distinct)
        mean = float(np.nanmean(H)) if np.isfinite(H).any() else math.nan
        return {"diverged": False, "entropy": mean, "per_class": H.tolist()}
    if kind == "p9":
        traj = train(stats, cfg)
        if traj.diverged:
            return {"diverged": True, "per_class": []}
        return {"diverged": False, **snap_statistics(stats, traj, task["t0"])}
    if kind == "p12":
        traj = train(stats, cfg)
        if traj.diverged:
            return {"diverged": True, "dz_dominant": math.nan}
        t0 = task["t0"]
        l0 = dominant_distinct(stats, traj.attention(stats, 0))
        rows = np.flatnonzero(l0 >= 0)
        steps = traj.checkpoint_steps
        z = np.array([traj.query_rows(stats, k)[rows, l0[rows]] for k in range(steps.size)])
        dz = z - z[0]
        at_t0 = np.array([np.interp(t0, steps, dz[:, j]) for j in range(rows.size)])
        return {"diverged": False, "dz_dominant": float(at_t0.mean()) if at_t0.size else math.nan}
    raise ValueError(f"unknown sweep task {kind!r}")


def _sweep_configs(stats: ScanSnapStats, opt: ScanSnapOptions, psi: bool) -> list[dict]:
    """The campaign: P8, P10/P11, P12 (when psi holds) or P14(b) (when it does not)."""
    base = {"batch": opt.batch, "weight_decay": opt.weight_decay, "optimizer": opt.optimizer,
            "residual": opt.residual, "class_balanced": psi, "n_checkpoints": 2}
    tasks: list[dict] = []
    if psi:
        mom = opt.momentum if opt.optimizer == "sgd" else 0.0
        if opt.snap:
            snap = snap_config(stats, opt)
            tasks.append({"kind": "p9", "eta_y": snap.eta_y, "eta_z": snap.eta_z,
                          "t0": t0_of(stats, snap.eta_y, mom), "config": snap.as_dict()})
        if not opt.sweeps:
            return tasks
        for s in range(opt.p8_seeds):
            pairs = [(ey, opt.p8_eta_z) for ey in opt.p8_eta_y] + [(1.0, ez) for ez in opt.p8_eta_z_range]
            for ey, ez in pairs:
                horizon = math.ceil(4 * t0_of(stats, ey, mom)) + 10
                cfg = dict(base, eta_y=ey, eta_z=ez, steps=horizon, momentum=opt.momentum, init=opt.init,
                           track_population=True, stop_at_half=True, seed=opt.seed * 1000 + s)
                tasks.append({"kind": "p8", "eta_y": ey, "eta_z": ez, "seed": s, "config": cfg})
        for ez in opt.sweep_eta_z:
            for ratio in opt.sweep_ratios:
                for s in range(opt.sweep_seeds):
                    cfg = dict(base, eta_y=ez * ratio, eta_z=ez, steps=opt.sweep_steps,
                               momentum=opt.sweep_momentum, init=opt.sweep_init, seed=opt.seed * 1000 + s)
                    tasks.append({"kind": "p10", "eta_z": ez, "ratio": ratio, "seed": s, "config": cfg})
        for ez in opt.p12_eta_z:
            ey = opt.p12_nu * ez
            t0 = t0_of(stats, ey, mom)
            for s in range(opt.sweep_seeds):
                cfg = dict(base, eta_y=ey, eta_z=ez, steps=math.ceil(t0) + 1, momentum=opt.momentum,
                           init=opt.init, extra_checkpoints=[math.floor(t0), math.ceil(t0)],
                           seed=opt.seed * 1000 + s)
                tasks.append({"kind": "p12", "eta_z": ez, "eta_y": ey, "t0": t0, "seed": s, "config": cfg})
    elif opt.sweeps:
        main = main_config(stats, opt)
        for eta in opt.p14_rates:
            for s in range(opt.p14_seeds):
                cfg = dict(base, eta_y=eta, eta_z=eta, steps=main.steps, momentum=opt.momentum, init=opt.init,
                           eval_windows=opt.eval_windows, seed=opt.seed * 1000 + s,
                           extra_checkpoints=[round(0.1 * main.steps), round(0.5 * main.steps)])
                tasks.append({"kind": "p14", "eta": eta, "seed": s, "config": cfg})
    for t in tasks:
        t["config"]["extra_checkpoints"] = list(t["config"].get("extra_checkpoints", []))
    return tasks


def estimated_seconds(tasks: list[dict], stats: ScanSnapStats) -> float:
    """Rough serial cost of a campaign: steps x batch x M entries at ~1.2e-7 s each (measured
    0.5 ms per step at B = 128, M = 33 on one core)."""
    return sum(t["config"]["steps"] * t["config"]["batch"] * stats.M for t in tasks) * 1.2e-7


def campaign_workers(opt: ScanSnapOptions, tasks: list[dict], stats: ScanSnapStats) -> int | None:
    """``opt.workers`` when given; otherwise serial for campaigns shorter than a LocalCluster's
    start-up is worth (AUTO_SERIAL_SECONDS), else one process per core."""
    if opt.workers is not None or opt.scheduler is not None:
        return opt.workers
    return 0 if estimated_seconds(tasks, stats) < AUTO_SERIAL_SECONDS else None


def run_scansnap(corpus: Corpus, options: ScanSnapOptions | None = None) -> ScanSnapResult:
    """Statistics, main run, sweeps, checks P0-P14 and the comparison with Li et al."""
    import time

    from theorycheck.campaign import run_campaign

    opt = options or ScanSnapOptions()
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    stats = corpus_statistics(corpus, opt.delta, opt.support_factor, opt.min_expected)
    cfg = main_config(stats, opt)
    cfg.validate()
    traj = train(stats, cfg)
    timings["main_run"] = time.perf_counter() - t_start
    sweeps: list[tuple[dict, dict]] = []
    tasks = _sweep_configs(stats, opt, stats.psi_holds) if (opt.sweeps or opt.snap) else []
    if tasks:
        t1 = time.perf_counter()
        for t in tasks:
            TrainConfig(**t["config"]).validate()
        results = run_campaign(tasks, sweep_task, scheduler=opt.scheduler, workers=campaign_workers(opt, tasks, stats),
                               out_jsonl=Path(opt.campaign_log) if opt.campaign_log else None,
                               progress=opt.progress, shared=stats, label="scan-snap sweeps")
        sweeps = list(zip(tasks, results))
        timings["sweeps"] = time.perf_counter() - t1
    checks = evaluate_checks(stats, traj, cfg, opt, sweeps)
    out = assemble(corpus, stats, traj, cfg, opt, checks)
    if opt.compare:
        from theorycheck.scansnap.compare import compare_theories

        t1 = time.perf_counter()
        out["comparison"] = compare_theories(corpus, stats, traj, checks)
        timings["comparison"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t_start
    return ScanSnapResult(out, stats, traj, timings)


# -- preconditions ------------------------------------------------------------------------
def base_preconditions(stats: ScanSnapStats, cfg: TrainConfig) -> dict:
    """The preconditions shared by the theory checks P2-P12 (§2, §5.1, §5.3)."""
    viol = stats.psi_violations()
    ratio = cfg.eta_y / cfg.eta_z if cfg.eta_z > 0 else math.inf
    return {
        "next_token_determines_query": pre(
            stats.psi_holds,
            "every next token follows exactly one query (psi, §1.2)" if stats.psi_holds else
            f"{len(viol)} next tokens follow several queries, e.g. {viol[0][0]!r} after {viol[0][1][:4]}"),
        "plain_sgd": pre(cfg.optimizer == "sgd", f"optimizer {cfg.optimizer} (the theory covers SGD, "
                         "not Adam, §3.8, §5.1)"),
        "no_weight_decay": pre(cfg.weight_decay == 0, f"weight decay {cfg.weight_decay:g}"),
        "no_positional_encoding": pre(True, "the Y/Z model has none (Assumption 1a)"),
        "no_residual": pre(not cfg.residual, "the residual variant (§3.8) is covered only by P13"
                           if cfg.residual else "decoder input LN(X^T b) without residual"),
        "classes_sampled_uniformly": pre(cfg.class_balanced, "minibatches draw a class uniformly, then "
                                         "a sample of it" if cfg.class_balanced else "samples drawn uniformly"),
        "decoder_faster_A1c": pre(ratio >= MIN_RATIO, f"eta_Y / eta_Z = {ratio:g} (Assumption 1(c); "
                                  f"effects appear from {MIN_RATIO:g}, §4.2)"),
    }


def _long_sequences(stats: ScanSnapStats) -> dict:
    per_class = (stats.distinct & stats.eligible).any(axis=1) | (stats.common & stats.eligible).any(axis=1)
    return pre(bool(per_class.all()),
               f"mean context length T-1 = {stats.class_context_len.mean():.1f}; {int(per_class.sum())} of "
               f"{stats.C} classes have a token with expected count >= {stats.min_expected:g} "
               "(Assumption 1(b), handled by eligibility)", required=False)


def _a2_pre(a2: dict) -> dict:
    return pre(a2["holds"], f"max|lambda(E)| = {a2['max_abs_eigenvalue']:.3g} vs 1/K = {a2['bound_1_over_K']:.3g}, "
               f"min|lambda| = {a2['min_abs_eigenvalue']:.3g} vs sqrt(6/M) = {a2['bound_sqrt_6_over_M']:.3g} "
               "(reported, not required: the paper's own experiments break it, §2)", required=False)


def _subset(d: dict, *names: str) -> dict:
    return {k: d[k] for k in names}


# -- the checks ----------------------------------------------------------------------------
def evaluate_checks(stats: ScanSnapStats, traj: Trajectory, cfg: TrainConfig, opt: ScanSnapOptions,
                    sweeps: list[tuple[dict, dict]]) -> dict:
    base = base_preconditions(stats, cfg)
    c0 = traj.attention(stats, 0)
    cT = traj.attention(stats, -1)
    a2 = assumption2(c0)
    theory = dict(base, long_sequences_A1b=_long_sequences(stats), weak_correlations_A2=_a2_pre(a2),
                  main_run_finite=pre(not traj.diverged, "the main run stayed finite" if not traj.diverged else
                                      f"the main run diverged at step {traj.steps_done + 1}; lower the rates"))
    zero_init = bool(np.all(traj.Z0 == 0))
    Zq0 = traj.query_rows(stats, 0)
    ZqT = traj.query_rows(stats, -1)
    dz = ZqT - Zq0
    checks: dict[str, dict] = {}
    checks["P0"] = check_p0(traj, cfg)
    checks["P1"] = check_p1(stats, traj, zero_init)
    elig_dt = stats.distinct & stats.eligible
    elig_ct = stats.common & stats.eligible
    checks["P2"] = make_check(
        "P2", "distinct tokens gain attention", "Theorem 2(a): Delta z_ml > 0 for l in G_DT(n), m = psi(n)",
        p2_fraction_positive(dz[elig_dt]), P2_MIN_FRACTION, ">=", int(elig_dt.sum()), theory,
        None if not elig_dt.any() else p2_fraction_positive(dz[elig_dt]) >= P2_MIN_FRACTION,
        {"step": traj.steps_done, "min_delta_z": float(dz[elig_dt].min()) if elig_dt.any() else None,
         "negative": _token_list(stats, elig_dt & (dz <= 0))})
    checks["P3"] = check_p3(stats, dz, c0, cT, elig_dt, elig_ct, zero_init, theory)
    checks["P4"] = check_p4(stats, dz, c0, cT, elig_dt, theory)
    checks["P5"] = check_p5(stats, Zq0, ZqT, elig_dt, cfg, theory)
    checks["P6"] = check_p6(stats, traj, c0, dz, elig_dt, elig_ct, zero_init, theory)
    checks["P7"] = check_p7(stats, traj, cfg, theory)
    sweep_pre = dict(base)
    if not opt.sweeps:
        sweep_pre["sweep_run"] = pre(False, "sweeps skipped (--no-sweeps)")
    checks["P8"] = check_p8(stats, opt, sweeps, sweep_pre)
    checks["P9"] = check_p9(stats, opt, sweeps, theory)
    checks["P10"], checks["P11"] = check_p10_p11(stats, opt, sweeps, sweep_pre)
    checks["P12"] = check_p12(opt, sweeps, sweep_pre)
    checks["P13"] = check_p13(stats, dz, cfg, base)
    checks["P14"] = check_p14(stats, opt, sweeps, base, ZqT)
    return checks


def _token_list(stats: ScanSnapStats, mask: np.ndarray, limit: int = 20) -> list[str]:
    rows, cols = np.nonzero(mask)
    return [f"{stats.class_label(r)}:{stats.vocab[c]}" for r, c in zip(rows[:limit], cols[:limit])]


def check_p0(traj: Trajectory, cfg: TrainConfig) -> dict:
    drift = p0_conservation(traj.rowsum_drift_Z, traj.rowsum_drift_Y)
    prec = {
        "plain_sgd": pre(cfg.optimizer == "sgd", f"optimizer {cfg.optimizer} (Adam rescales coordinates)"),
        "no_weight_decay": pre(cfg.weight_decay == 0, f"weight decay {cfg.weight_decay:g} shrinks row sums"),
        "finite_training": pre(not traj.diverged, "the run stayed finite" if not traj.diverged else "the run diverged"),
    }
    return make_check("P0", "conservation of row sums",
                      "Lemma 1: sum_l Z_ml and sum_j Y_kj stay at their initial values",
                      drift, P0_TOL, "<=", int(traj.checkpoint_steps.size), prec, drift <= P0_TOL,
                      {"max_drift_Z": float(np.max(traj.rowsum_drift_Z, initial=0.0)),
                       "max_drift_Y": float(np.max(traj.rowsum_drift_Y, initial=0.0)),
                       "measure": "max_m |sum_l Z_ml(t) - sum_l Z_ml(0)| / (1 + sum_l |Z_ml(t)|)"})


def check_p1(stats: ScanSnapStats, traj: Trajectory, zero_init: bool) -> dict:
    """Lemma 2 at Z = 0: the class mean of the model's own X^T b equals P-hat(.|m,n) (TV within the
    class mean's Hoeffding radius).  Computed through the forward pass, so it catches a model
    whose attention is not Tian's (a query that attends to itself, position weights).  Lemma 18's
    per-sample concentration is reported only: it assumes i.i.d. context tokens, which text is not."""
    from theorycheck.scansnap.model import loss_and_grad

    M = stats.M
    tv = np.zeros(stats.C)
    used = np.zeros(stats.C)
    inside = 0
    total = 0
    Y0 = np.zeros((M, M))
    for c in range(stats.C):
        rows = np.flatnonzero(stats.sample_class == c)[:4096]
        ctx = stats.context[rows].toarray()
        _, _, _, info = loss_and_grad(Y0, traj.Z0, ctx, stats.query[rows], stats.next[rows])
        s = info["s"]  # the model's per-token attention mass X^T b at Z(0)
        used[c] = rows.size
        # P-hat over these rows (all of the class unless it has more than 4096 samples)
        p_rows = (ctx / stats.context_len[rows][:, None]).mean(axis=0)
        tv[c] = 0.5 * np.abs(s.mean(axis=0) - p_rows).sum()
        r = stats.hoeffding_radius_sample(c)
        tokens = stats.eligible[c]
        dev = np.abs(s[:, tokens] - stats.P[c, tokens])
        inside += int((dev <= r).sum())
        total += dev.size
    class_radius = np.sqrt(np.log(2 / stats.delta) / (2 * stats.class_context_len * used))
    worst = float((tv / class_radius).max())
    frac = inside / total if total else math.nan
    prec = {"zero_initial_attention": pre(zero_init, "Z(0) = 0 (P1 is stated at Z = 0)")}
    return make_check("P1", "initial attention equals co-occurrence",
                      "Lemma 2: at Z = 0 the attention mass X^T b averages to P-hat(.|m,n)",
                      worst, 1.0, "<=", stats.C, prec, worst <= 1.0,
                      {"statistic_is": "max over classes of TV(mean X^T b, P-hat) / class Hoeffding radius",
                       "max_tv": float(tv.max()),
                       "lemma18_reported_only": {
                           "fraction_within_radius": frac, "expected_at_least": 1 - stats.delta,
                           "items": total, "radius": "sqrt(ln(2/delta) / (2 (T-1))) per sample and eligible token",
                           "note": "Hoeffding assumes i.i.d. context tokens; a low fraction flags bursty (text) "
                                   "contexts, i.e. Assumption 1(b)'s concentration does not hold"}})


def _symmetric_cor2(stats: ScanSnapStats, zero_init: bool) -> tuple[bool, str]:
    """Corollary 2's conditions: one query, distinct tokens map onto each other with equal
    probabilities, every common token equally likely in every class, Z(0) = 0 (within the
    sum of the two classes' Hoeffding radii)."""
    if stats.queries.size != 1:
        return False, "several queries"
    if not zero_init:
        return False, "Z(0) != 0"
    ct = stats.common_tokens
    if ct.size == 0:
        return False, "no common token"
    sorted_dt = [np.sort(stats.P[c][stats.distinct[c]]) for c in range(stats.C)]
    for a in range(stats.C):
        for b in range(a + 1, stats.C):
            tol = stats.radius[a] + stats.radius[b]
            if sorted_dt[a].size != sorted_dt[b].size or np.any(np.abs(sorted_dt[a] - sorted_dt[b]) > tol):
                return False, f"distinct tokens of {stats.class_label(a)} and {stats.class_label(b)} differ"
            if np.any(np.abs(stats.P[a, ct] - stats.P[b, ct]) > tol):
                return False, "a common token has different P(l|n) across classes"
    return True, "one query, symmetric distinct tokens, equal common-token probabilities, Z(0) = 0"


def check_p3(stats, dz, c0, cT, elig_dt, elig_ct, zero_init, theory) -> dict:
    ct = stats.common_tokens
    single = ct.size == 1 and all(stats.distinct[stats.classes_of_query(m)].any() for m in stats.queries)
    symmetric, why = _symmetric_cor2(stats, zero_init)
    strict = bool(single or symmetric)
    # unique (query, common token) items: Delta z is per query row
    items = sorted({(int(stats.class_query[c]), int(tok)) for c, tok in zip(*np.nonzero(elig_ct))})
    first_class = {int(m): int(stats.classes_of_query(m)[0]) for m in stats.queries}

    def dz_q(item):  # Delta z is a property of the query row: the same for every class of m
        return dz[first_class[item[0]], item[1]]

    ct_dz = np.array([dz_q(i) for i in items])
    frac_neg = float((ct_dz < 0).mean()) if ct_dz.size else math.nan
    # weaker relations for general corpora
    median_ok = []
    for m in stats.queries:
        rows = stats.classes_of_query(m)
        ct_m = np.array([dz_q(i) for i in items if i[0] == m])
        dt_m = dz[rows][elig_dt[rows]]
        if ct_m.size and dt_m.size:
            median_ok.append(bool(np.median(ct_m) < np.median(dt_m)))
    ct_mask = np.zeros(stats.M, bool)
    ct_mask[ct] = True
    has_ct = (stats.support & ct_mask[None, :]).any(axis=1)
    mass0 = (c0 * ct_mask).sum(axis=1)[has_ct]
    massT = (cT * ct_mask).sum(axis=1)[has_ct]
    mass_ok = (massT < mass0).tolist()
    weak = median_ok + mass_ok
    if strict:
        stat, thr, rel, holds = frac_neg, P3_MIN_FRACTION, ">=", (frac_neg >= P3_MIN_FRACTION) if items else None
        claim = "Theorem 2(b) / Corollary 2: Delta z_ml < 0 for common tokens"
    else:
        stat = float(np.mean(weak)) if weak else math.nan
        thr, rel, holds = 1.0, ">=", (bool(all(weak)) if weak else None)
        claim = ("general corpus (no single or symmetric common token): median_CT Delta z < median_DT Delta z "
                 "per query, and the common-token mass falls in every class")
    prec = dict(theory, common_tokens_exist=pre(ct.size > 0, f"{ct.size} global common tokens"))
    return make_check("P3", "common tokens lose attention", claim, stat, thr, rel,
                      len(items) if strict else len(weak), prec, holds,
                      {"variant": "strict" if strict else "weak", "single_common_token": bool(single),
                       "corollary2_symmetry": why, "fraction_negative": frac_neg,
                       "max_common_delta_z": float(ct_dz.max()) if ct_dz.size else None,
                       "median_relations_held": median_ok, "common_mass_t0": mass0.tolist(),
                       "common_mass_end": massT.tolist()})


def check_p4(stats, dz, c0, cT, elig_dt, theory) -> dict:
    rhos, rho_final, argmax_ok, used = [], [], [], []
    for c in range(stats.C):
        toks = np.flatnonzero(elig_dt[c])
        if stats.distinct[c].sum() >= 1:
            dts = np.flatnonzero(stats.distinct[c])
            argmax_ok.append(bool(dts[np.argmax(cT[c, dts])] == dts[np.argmax(c0[c, dts])]))
        if toks.size >= 3:
            rhos.append(p4_scan_order(c0[c, toks], dz[c, toks]))
            rho_final.append(spearman(stats.P[c, toks], cT[c, toks]))
            used.append(stats.class_label(c))
    med = float(np.median(rhos)) if rhos else math.nan
    arg = float(np.mean(argmax_ok)) if argmax_ok else math.nan
    holds = None if not rhos else bool(med >= P4_MIN_SPEARMAN and arg >= P4_MIN_ARGMAX)
    return make_check("P4", "frequency order among distinct tokens (scanning)",
                      "Theorem 3: Delta z_ml increases with c~_{l|n}(0); the winner is argmax c~(0)",
                      med, P4_MIN_SPEARMAN, ">=", len(rhos), theory, holds,
                      {"statistic_is": "median over classes (>= 3 eligible distinct tokens) of "
                                       "Spearman(c~(0), Delta z)",
                       "spearman_per_class": rhos, "spearman_P_vs_c_end": rho_final, "classes": used,
                       "argmax_agreement": arg, "argmax_min": P4_MIN_ARGMAX})


def check_p5(stats, Zq0, ZqT, elig_dt, cfg, theory) -> dict:
    small = (cfg.momentum <= MAX_MOMENTUM_TIME and cfg.eta_z <= 1.0 and cfg.eta_y <= 2.0)
    thr = P5_MAX_CV_SMALL if small else P5_MAX_CV_LARGE
    cvs, kappas, means = [], [], []
    for c in range(stats.C):
        toks = np.flatnonzero(elig_dt[c])
        if toks.size >= 2:
            k = p5_kappa(Zq0[c, toks], ZqT[c, toks], stats.P[c, toks])
            kappas.append(k.tolist())
            means.append(float(k.mean()))
            cvs.append(coefficient_of_variation(k))
    stat = float(max(cvs)) if cvs else math.nan
    holds = None if not cvs else bool(stat <= thr and min(means) > 0)
    return make_check("P5", "kappa invariant (closed form of Theorem 3)",
                      "Eq. 11: kappa_{n,l} = (e^{-2z(0)} - e^{-2z(t)}) / P-hat(l|n)^2 is the same for every "
                      "distinct token l of n (and positive)", stat, thr, "<=", len(cvs), theory, holds,
                      {"statistic_is": "max over classes of the coefficient of variation of kappa over "
                                       "eligible distinct tokens", "kappa": kappas, "cv_per_class": cvs,
                       "threshold_reason": "plain SGD, small rates" if small else "momentum > 0.5 or large rates"})


def check_p6(stats, traj, c0, dz, elig_dt, elig_ct, zero_init, theory) -> dict:
    l0 = dominant_distinct(stats, c0)
    fracs, saturation, dominant_ok, items = [], [], [], 0
    S = traj.checkpoint_steps.size
    z_all = np.array([traj.query_rows(stats, k) for k in range(S)])  # (S, C, M)
    for c in range(stats.C):
        if l0[c] < 0:
            continue
        dts = np.flatnonzero(stats.distinct[c])
        others = [t for t in np.flatnonzero(elig_dt[c]) if t != l0[c]]
        strict_max = bool(np.sum(c0[c, dts] >= c0[c, l0[c]]) == 1)
        ct_fall = bool(np.all(dz[c][elig_ct[c]] < 0))
        dominant_ok.append(strict_max and ct_fall)
        if not (strict_max and ct_fall):
            continue
        items += 1
        fracs.append(p6_monotone_fraction(z_all[:, c, l0[c]], z_all[:, c, others]))
        if zero_init and others:
            P = stats.P[c]
            bound = -0.5 * np.log1p(-(P[others] / P[l0[c]]) ** 2)
            saturation.append(float(np.mean(z_all[-1, c, others] < bound)))
    prec = dict(theory, dominant_distinct_token=pre(
        bool(dominant_ok) and any(dominant_ok),
        f"{sum(dominant_ok)} of {len(dominant_ok)} classes have a strictly dominant distinct token whose "
        "common tokens all fell (Theorem 3's hypotheses)"))
    stat = float(np.min(fracs)) if fracs else math.nan
    return make_check("P6", "monotone domination", "Theorem 3: z_ml0 and c_l0/c_l are non-decreasing in t",
                      stat, P6_MIN_FRACTION, ">=", items, prec, None if not fracs else stat >= P6_MIN_FRACTION,
                      {"statistic_is": "min over classes of the fraction of checkpoint steps that do not decrease",
                       "per_class": fracs, "checkpoints": S,
                       "saturation_bound_fraction": saturation,
                       "saturation_note": "reported only: fraction of non-dominant z_ml below "
                                          "-1/2 ln(1 - P_l^2/P_l0^2) (Z(0) = 0)"})


def check_p7(stats, traj, cfg, theory) -> dict:
    t_end = traj.steps_done
    _, f, alpha = population_alpha(traj.Y, traj.query_rows(stats, -1), stats, cfg.residual)
    F = f.T
    overlap = stats.overlap()
    resid, signs, own, cross = [], [], [], []
    for c in range(stats.C):
        e = np.zeros(stats.M)
        e[stats.class_next[c]] = 1.0
        g = traj.Y @ (e - alpha[c])
        coef, r = p7_regression(g, F)
        resid.append(r)
        own.append(float(coef[c]))
        signs.append(coef[c] > 0)
        for d in range(stats.C):
            if d != c and overlap[c, d]:
                signs.append(coef[d] < 0)
                cross.append({"n": stats.class_label(c), "n_prime": stats.class_label(d), "coef": float(coef[d]),
                              "f_n.f_n'": float(f[c] @ f[d])})
    prec = dict(theory,
                late_enough=pre(t_end >= 10 * stats.C**2, f"t = {t_end} vs 10 K^2 = {10 * stats.C**2} (t >> K^2)"),
                several_classes=pre(stats.C >= 2 and stats.C <= stats.M, f"K = {stats.C}, M = {stats.M}"))
    stat = float(max(resid)) if resid else math.nan
    sign_frac = float(np.mean(signs)) if signs else math.nan
    return make_check("P7", "gradient structure", "Theorem 1: g_n = gamma (iota f_n - sum beta_nn' f_n'), "
                      "beta >= 0 for overlapping classes", stat, P7_MAX_RESIDUAL, "<=", len(signs), prec,
                      None if not resid else bool(stat <= P7_MAX_RESIDUAL and sign_frac >= P7_MIN_SIGNS),
                      {"statistic_is": "max over classes of the relative residual of g_n regressed on F",
                       "residuals": resid, "sign_agreement": sign_frac, "sign_min": P7_MIN_SIGNS,
                       "own_coefficients": own, "cross_coefficients": cross[:40], "step": t_end})


def _group(sweeps, kind):
    return [(t, r) for t, r in sweeps if t["kind"] == kind]


def check_p8(stats, opt, sweeps, sweep_pre) -> dict:
    runs = _group(sweeps, "p8")
    prec = dict(_subset(sweep_pre, *[k for k in sweep_pre if k != "decoder_faster_A1c"]),
                decoder_faster_A1c=pre(opt.p8_eta_z <= min(opt.p8_eta_y) / 2 and
                                       max(opt.p8_eta_z_range) <= 0.5,
                                       f"eta_Z = {opt.p8_eta_z:g} <= eta_Y / 2 for every swept eta_Y"),
                momentum_small=pre(opt.momentum <= MAX_MOMENTUM_TIME,
                                   f"momentum {opt.momentum:g} (1/(1-mu) time rule holds for mu <= 0.5, §3.7)"),
                span_x16=pre(len(opt.p8_eta_y) >= 4 and max(opt.p8_eta_y) / min(opt.p8_eta_y) >= 16,
                             f"{len(opt.p8_eta_y)} values of eta_Y spanning x{max(opt.p8_eta_y) / min(opt.p8_eta_y):g}"))
    if not runs:
        return make_check("P8", "transition time scales as 1/eta_Y", "Theorem 4(a)", math.nan, list(P8_SLOPE),
                          "in", 0, prec, None)
    mom = opt.momentum if opt.optimizer == "sgd" else 0.0
    eff = 1.0 / (1.0 - mom)
    by_y = {}
    for t, r in runs:
        if t["eta_z"] == opt.p8_eta_z:
            by_y.setdefault(t["eta_y"], []).append(r["t_half"])
    ys = sorted(by_y)
    th = np.array([np.mean(by_y[y]) for y in ys])
    finite = np.isfinite(th).all()
    slope = loglog_slope(ys, th) if finite and len(ys) >= 2 else math.nan
    by_z = {}
    for t, r in runs:
        if t["eta_y"] == 1.0 and t["eta_z"] in opt.p8_eta_z_range:
            by_z.setdefault(t["eta_z"], []).append(r["t_half"])
    tz = np.array([np.mean(by_z[z]) for z in sorted(by_z)])
    z_change = float((tz.max() - tz.min()) / np.median(tz)) if tz.size and np.isfinite(tz).all() else math.inf
    level = th * np.array(ys) * eff / (2 * stats.C * math.log(stats.M))
    level_ok = bool(finite and np.all((level >= P8_LEVEL[0]) & (level <= P8_LEVEL[1])))
    holds = bool(finite and P8_SLOPE[0] <= slope <= P8_SLOPE[1] and z_change <= P8_MAX_ETA_Z_CHANGE and level_ok)
    return make_check("P8", "transition time scales as 1/eta_Y",
                      "Theorem 4(a): t_1/2 ∝ 1/eta_Y (log-log slope -1), independent of eta_Z, "
                      "t_1/2 in [0.5, 2] x 2 K ln M / eta_Y", slope, list(P8_SLOPE), "in", len(runs), prec, holds,
                      {"eta_y": ys, "t_half": th.tolist(), "eta_z": opt.p8_eta_z,
                       "eta_z_range": sorted(by_z), "t_half_vs_eta_z": tz.tolist(),
                       "eta_z_relative_change": z_change, "eta_z_max_change": P8_MAX_ETA_Z_CHANGE,
                       "level_t_half_eta_over_2KlnM": level.tolist(), "level_range": list(P8_LEVEL),
                       "theory_2KlnM_over_eta": [2 * stats.C * math.log(stats.M) / (y * eff) for y in ys],
                       "t_half_definition": "first (interpolated) step where the class mean of the population "
                                            "alpha_nn exceeds 1/2", "seeds": opt.p8_seeds})


def check_p9(stats, opt, sweeps, theory) -> dict:
    runs = _group(sweeps, "p9")
    task, res = runs[0] if runs else ({}, {"per_class": [], "marks": []})
    t0 = task.get("t0", math.nan)
    ratio = task["eta_y"] / task["eta_z"] if runs and task["eta_z"] > 0 else math.inf
    prec = dict(_subset(theory, *[k for k in theory if k != "decoder_faster_A1c"]),
                decoder_faster_A1c=pre(ratio >= MIN_RATIO, f"snap run eta_Y / eta_Z = {ratio:g}"),
                long_horizon=pre(len(res["marks"]) >= 4, f"window marks {res['marks']} (needs t0, 4t0, "
                                 "16t0, 64t0 within the run)"),
                resolved_t0=pre(t0 >= 4, f"t0 = 2 K ln M / eta_Y = {t0:.3g} steps (>= 4 to resolve x4 windows)"),
                finite_training=pre(not res.get("diverged", False), "the snap run stayed finite"),
                snap_run=pre(bool(runs), "the 128 t0 run at eta_Z = eta_Y / snap_ratio" if runs else
                             "skipped (snap=False) or not sequence-class data"))
    per_class = res["per_class"]
    for p in per_class:
        p["holds"] = bool(p["late_over_peak"] <= P9_MAX_LATE_OVER_PEAK and p["entropy_end"] > P9_MIN_ENTROPY
                          and p["max_attention_end"] < P9_MAX_ATTENTION)
    stat = float(max(p["late_over_peak"] for p in per_class)) if per_class else math.nan
    return make_check("P9", "snap: deceleration without collapse",
                      "Theorem 4: dz_ml0/dln t peaks near t0 then decays; H_n(t_end) > 0.5; max c < 0.95",
                      stat, P9_MAX_LATE_OVER_PEAK, "<=", len(per_class), prec,
                      None if not per_class else all(p["holds"] for p in per_class),
                      {"statistic_is": "max over classes of (slope in the last x4 window) / (peak slope)",
                       "t0": t0, "eta_y": task.get("eta_y"), "eta_z": task.get("eta_z"),
                       "steps": res.get("steps_done"), "window_marks": res["marks"], "per_class": per_class,
                       "entropy_min": P9_MIN_ENTROPY, "max_attention": P9_MAX_ATTENTION})


def check_p10_p11(stats, opt, sweeps, sweep_pre) -> tuple[dict, dict]:
    runs = _group(sweeps, "p10")
    enough = opt.sweep_seeds >= 5
    ratios = sorted({t["ratio"] for t, _ in runs})
    ezs = sorted({t["eta_z"] for t, _ in runs})
    table = {}
    for t, r in runs:
        table.setdefault((t["eta_z"], t["ratio"]), []).append(r["entropy"])
    means = {k: float(np.mean(v)) for k, v in table.items()}
    stds = {k: float(np.std(v)) for k, v in table.items()}
    common = dict(_subset(sweep_pre, *[k for k in sweep_pre if k != "decoder_faster_A1c"]),
                  seeds=pre(enough, f"{opt.sweep_seeds} seeds (>= 5 for a statistical claim, §5.1)"),
                  distinct_tokens=pre(bool((stats.distinct.sum(axis=1) >= 2).any()),
                                      "classes with >= 2 distinct tokens (the entropy is over G_DT(n))"))
    diverged = any(r.get("diverged") for _, r in runs)
    common["finite_runs"] = pre(not diverged, "every sweep run stayed finite" if not diverged else
                                "a sweep run diverged")
    grid = {"eta_z": ezs, "ratios": ratios,
            "mean_entropy": [[means.get((z, q)) for q in ratios] for z in ezs],
            "std_entropy": [[stds.get((z, q)) for q in ratios] for z in ezs],
            "protocol": {"steps": opt.sweep_steps, "momentum": opt.sweep_momentum, "init": opt.sweep_init,
                         "seeds": opt.sweep_seeds}}
    # P10: at every fixed ratio (>= 2) the mean entropy strictly decreases with eta_Z
    seqs = [[means[(z, q)] for z in ezs] for q in ratios if q >= MIN_RATIO]
    dec = [strictly_decreasing(s) for s in seqs]
    rho = [spearman(ezs, s) for s in seqs]
    p10_pre = dict(common, three_eta_z=pre(len(ezs) >= 3, f"{len(ezs)} values of eta_Z (>= 3)"),
                   decoder_faster_A1c=pre(bool(ratios) and max(ratios) >= MIN_RATIO, "fixed ratios >= 2"))
    p10 = make_check("P10", "sparsity grows with eta_Z at a fixed ratio",
                     "Theorem 4(b), Fig. 6: final H_n strictly decreases in eta_Z at fixed eta_Y/eta_Z",
                     float(np.mean(dec)) if dec else math.nan, 1.0, ">=", len(seqs), p10_pre,
                     None if not dec else all(dec),
                     {"statistic_is": "fraction of fixed-ratio sequences whose seed means strictly decrease",
                      "spearman_per_ratio": rho, **grid})
    # P11: for ratios >= 2, H(largest ratio) > H(ratio 2) at every eta_Z
    usable = [q for q in ratios if q >= MIN_RATIO]
    cmp = []
    if len(usable) >= 2:
        lo, hi = usable[0], usable[-1]
        cmp = [means[(z, hi)] > means[(z, lo)] for z in ezs]
    p11_pre = dict(common, two_ratios=pre(len(usable) >= 2, f"{len(usable)} ratios >= 2"),
                   decoder_faster_A1c=pre(bool(usable), "ratio 1 excluded: Assumption 1(c) fails there"))
    p11 = make_check("P11", "sparsity falls with eta_Y/eta_Z at fixed eta_Z",
                     "Theorem 4(c): for ratios >= 2 the final H_n increases with eta_Y/eta_Z",
                     float(np.mean(cmp)) if cmp else math.nan, 1.0, ">=", len(cmp), p11_pre,
                     None if not cmp else all(cmp),
                     {"statistic_is": "fraction of eta_Z with H(largest ratio) > H(ratio 2)", **grid})
    return p10, p11


def check_p12(opt, sweeps, sweep_pre) -> dict:
    runs = _group(sweeps, "p12")
    by = {}
    for t, r in runs:
        by.setdefault(t["eta_z"], []).append(r["dz_dominant"])
    ezs = sorted(by)
    vals = np.array([np.mean(by[z]) for z in ezs])
    cv = (coefficient_of_variation(vals) if np.isfinite(vals).all() else math.inf) if vals.size else math.nan
    prec = dict(_subset(sweep_pre, *[k for k in sweep_pre if k != "decoder_faster_A1c"]),
                decoder_faster_A1c=pre(opt.p12_nu >= MIN_RATIO, f"nu = eta_Y/eta_Z = {opt.p12_nu:g}"),
                span_x8=pre(bool(ezs) and max(ezs) / min(ezs) >= 8, "eta_Z varied over x8"))
    return make_check("P12", "B_n(t0) depends only on nu", "Appendix F(2): Delta z_ml0 at t0(eta_Y) is the same "
                      "for every eta_Z at fixed nu = eta_Y/eta_Z", cv, P12_MAX_CV, "<=", len(runs), prec,
                      None if not runs else bool(cv <= P12_MAX_CV),
                      {"nu": opt.p12_nu, "eta_z": ezs, "dz_dominant_at_t0": vals.tolist(),
                       "note": "the least tested claim of the paper (only simulated as an ODE there)"},
                      soft=True)


def check_p13(stats, dz, cfg, base) -> dict:
    elig = stats.support & stats.eligible
    glob_dt, loc_dt = stats.distinct & elig, stats.local_distinct & elig
    differ = elig & (glob_dt != loc_dt)
    rate = {}
    for name, dt in (("global", glob_dt), ("local", loc_dt)):
        ct = elig & ~dt
        good = np.where(dt, dz > 0, np.where(ct, dz < 0, False))
        rate[name] = float(good[elig].mean()) if elig.any() else math.nan
    prec = dict(_subset(base, "next_token_determines_query", "plain_sgd", "no_weight_decay",
                        "decoder_faster_A1c"),
                residual_model=pre(cfg.residual, "trained with the residual u_T + LN(X^T b) (§3.8)"
                                   if cfg.residual else "no residual in the trained model (use --residual)"),
                labels_differ=pre(bool(differ.any()), f"{int(differ.sum())} eligible tokens are distinct locally "
                                  "but common globally (or vice versa)"))
    stat = rate["local"] - rate["global"] if elig.any() else math.nan
    return make_check("P13", "residual variant: local distinctness", "§3.8: with the residual, distinct/common "
                      "labels computed within psi^{-1}(m) predict the sign of Delta z better than global ones",
                      stat, 0.0, ">", int(elig.sum()), prec, None if not elig.any() else bool(stat > 0),
                      {"pass_rate_local": rate["local"], "pass_rate_global": rate["global"],
                       "tokens_whose_label_differs": _token_list(stats, differ)})


def check_p14(stats, opt, sweeps, base, ZqT) -> dict:
    """§4.4 on general next-token data, with the unified-rate runs (eta_Y = eta_Z = eta):
    (a) per run, |H(end) - H(50%)| <= 0.2 |H(10%) - H(0)| with H(10%) < H(0) (falls early, then
    plateaus); (b) Spearman(eta, final H) <= -0.8 over all runs; (c) reported only."""
    runs = _group(sweeps, "p14")
    rates = [t["eta"] for t, _ in runs]
    prec = {"general_next_token_data": pre(not stats.psi_holds, "next tokens follow several queries (real text)"
                                           if not stats.psi_holds else "sequence-class data: P2-P12 cover it"),
            "plain_sgd": base["plain_sgd"], "no_weight_decay": base["no_weight_decay"],
            "rate_sweep": pre(len(set(rates)) >= 3 and opt.p14_seeds >= 3,
                              f"{len(set(rates))} unified rates x {opt.p14_seeds} seeds (>= 3 x 3; --sweeps)"),
            "finite_runs": pre(not any(r.get("diverged") for _, r in runs), "every unified-rate run stayed finite")}
    # the snap needs t >> t0 = 2 K ln M / eta; K = distinct next tokens (the decoder's classes)
    k_next = int(np.unique(stats.class_next).size)
    if runs:
        horizon = runs[0][0]["config"]["steps"]
        t0_slowest = 2 * k_next * math.log(stats.M) / min(rates)
        prec["horizon"] = pre(horizon >= 10 * t0_slowest, f"{horizon} steps vs 10 t0 = {10 * t0_slowest:.0f} "
                              f"(t0 = 2 K ln M / eta, K = {k_next} next tokens, smallest eta {min(rates):g})")
    name = "real text: entropy falls then plateaus, sparser with larger rates"
    claim = ("§4.4 (a) the attention entropy changes in the last 50% of training by <= 20% of its change in "
             "the first 10%; (b) Spearman(unified rate, final entropy) <= -0.8")
    if not runs or not all(p["holds"] for p in prec.values()):
        return make_check("P14", name, claim, math.nan, P14_MAX_LATE_OVER_EARLY, "<=", 0, prec, None)
    ratios, per_run = [], []
    for t, r in runs:
        early = r["entropy_10pct"] - r["entropy_t0"]
        late = r["entropy"] - r["entropy_50pct"]
        ratio = abs(late) / abs(early) if early < 0 else math.inf
        ratios.append(ratio)
        per_run.append({"eta": t["eta"], "seed": t["seed"], "early_change": early, "late_change": late,
                        "late_over_early": ratio, "entropy_end": r["entropy"]})
    ents = [r["entropy"] for _, r in runs]
    rho = spearman(rates, ents)
    stat = float(max(ratios))
    holds = bool(stat <= P14_MAX_LATE_OVER_EARLY and rho <= P14_MAX_SPEARMAN)
    # (c) reported only: per query, z_ml against log P-hat(l|m) and against commonness |Omega_m(l)|
    corr_freq, corr_common = [], []
    for m in stats.queries:
        rows = stats.classes_of_query(m)
        w = stats.class_size[rows] / stats.class_size[rows].sum()
        Pm = (w[:, None] * stats.P[rows]).sum(axis=0)
        omega_m = stats.support[rows].sum(axis=0)
        total = np.asarray(stats.context[np.isin(stats.sample_class, rows)].sum(axis=0)).ravel()
        keys = np.flatnonzero(total >= 10 * stats.min_expected)
        if keys.size >= 3:
            z = ZqT[rows[0], keys]
            corr_freq.append(spearman(np.log(Pm[keys]), z))
            corr_common.append(spearman(omega_m[keys], z))
    return make_check("P14", name, claim, stat, P14_MAX_LATE_OVER_EARLY, "<=", len(runs), prec, holds,
                      {"statistic_is": "max over unified-rate runs of |late change| / |early change| (inf if "
                                       "the entropy did not fall early)", "per_run": per_run,
                       "rate_sweep": {"rates": rates, "entropy": ents, "spearman": rho,
                                      "threshold": P14_MAX_SPEARMAN},
                       "c_reported_only": {
                           "median_spearman_z_vs_logP": float(np.median(corr_freq)) if corr_freq else None,
                           "median_spearman_z_vs_commonness": float(np.median(corr_common)) if corr_common else None,
                           "queries": len(corr_freq), "run": "main run (final Z)"}})


# -- assembling results.json ------------------------------------------------------------------
def verdict(checks: dict) -> dict:
    applicable = [k for k, c in checks.items() if c["outcome"] != NOT_APPLICABLE]
    violated = [k for k, c in checks.items() if c["outcome"] == VIOLATED]
    if violated:
        outcome, code = VIOLATED, 1
    elif applicable:
        outcome, code = HOLDS, 0
    else:
        outcome, code = NOT_APPLICABLE, 3
    return {"outcome": outcome, "exit_code": code, "applicable": applicable, "violated": violated,
            "not_applicable": [k for k in checks if k not in applicable],
            "rule": "exit 0 if every applicable check holds, 1 if one is violated, 3 if none applies"}


def figure_data(stats: ScanSnapStats, traj: Trajectory, checks: dict, max_points: int = 60) -> dict:
    """Curves for the report: c_{l|n}(t) per class (distinct vs common), kappa(t), P8 sweep."""
    steps = traj.checkpoint_steps
    keep = np.unique(np.round(np.linspace(0, steps.size - 1, min(max_points, steps.size))).astype(int))
    classes = []
    for c in range(min(stats.C, 12)):
        toks = np.flatnonzero(stats.support[c])[:40]
        curves = np.array([traj.attention(stats, k)[c, toks] for k in keep])
        elig = stats.distinct[c] & stats.eligible[c]
        kappa = []
        if elig.sum() >= 2:
            z = np.array([traj.query_rows(stats, k)[c] for k in keep])
            kappa = [{"token": stats.vocab[t], "values": p5_kappa(z[0, t], z[:, t], stats.P[c, t]).tolist()}
                     for t in np.flatnonzero(elig)]
        classes.append({
            "class": stats.class_label(c),
            "tokens": [stats.vocab[t] for t in toks],
            "kind": ["distinct" if stats.distinct[c, t] else "common" for t in toks],
            "attention": curves.T.tolist(),
            "kappa": kappa,
        })
    return {"steps": steps[keep].tolist(), "classes": classes,
            "p8": {k: checks["P8"]["details"].get(k) for k in ("eta_y", "t_half", "theory_2KlnM_over_eta")},
            "p10": {k: checks["P10"]["details"].get(k) for k in ("eta_z", "ratios", "mean_entropy")}}


def assemble(corpus: Corpus, stats: ScanSnapStats, traj: Trajectory, cfg: TrainConfig,
             opt: ScanSnapOptions, checks: dict) -> dict:
    c0 = traj.attention(stats, 0)
    cT = traj.attention(stats, -1)
    a2_0, a2_T = assumption2(c0), assumption2(cT)
    base = base_preconditions(stats, cfg)
    return {
        "schema_version": SCHEMA_VERSION,
        "theorycheck_version": __version__,
        "command": "scan-snap",
        "theory": "Tian, Wang, Chen & Du (NeurIPS 2023), Scan and Snap; THEORY-scansnap.md",
        "convention": "Z[m, l] = attention logit of query m on key l (query not a key); Y[k, j] = decoder "
                      "weight from attended token k to output token j; LN = l2 normalisation",
        "seed": opt.seed,
        "corpus": {"source": corpus.source, **stats.summary()},
        "vocabulary": list(stats.vocab) if stats.M <= 500 else None,
        "options": opt.to_json(),
        "training": {
            "config": cfg.as_dict(), "steps_done": traj.steps_done, "diverged": traj.diverged,
            "loss_first": float(traj.step_loss[0]), "loss_last": float(traj.step_loss[-1]),
            "population_alpha_correct_end": traj.alpha_correct[-1].tolist() if stats.C <= 200 else None,
            "t0_theory": t0_of(stats, cfg.eta_y, cfg.momentum if cfg.optimizer == "sgd" else 0.0),
            "t_half_batch": crossing_time(traj.step_p_correct),
        },
        "preconditions": {**base, "long_sequences_A1b": _long_sequences(stats), "weak_correlations_A2": _a2_pre(a2_0)},
        "assumption2": {"t0": a2_0, "end": a2_T},
        "checks": checks,
        "verdict": verdict(checks),
        "figures": figure_data(stats, traj, checks),
    }
