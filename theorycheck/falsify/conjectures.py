"""Built-in conjectures (see docs/falsify.md for the evidence each score uses).

* ``li2024``: Li et al. (2024) within its assumptions (THEORY.md §5.3): GD on W converges
  in direction to the Frobenius Graph-SVM W^svm, Pi_fin W -> W^fin, L -> inf L.  A control.
* ``nonorthogonal-global``: the same claims with equi-correlated embeddings
  e_i = sqrt(rho) c_0 + sqrt(1 - rho) c_i (THEORY.md §1.1), rho up to 0.95.
* ``kq-frobenius``: normalised GD on W = K Q^T converges to the Frobenius W^svm direction.
  Expected to fail: Tarzanagh et al. (2023) prove the nuclear-norm bias (THEORY.md §3.4).
* ``adam-frobenius``: Adam on W converges to the Frobenius W^svm direction.  Expected to
  fail: Adam is coordinate-wise, its known implicit bias on separable data is the
  l_inf (entrywise max) margin.
* ``tarzanagh2023``: the generalised decomposition of Tarzanagh et al. (2023) (THEORY.md
  §5.4, §5.6): W(t) ~ W^fin + ||W(t)|| W^svm_gen/||W^svm_gen||, the Graph-SVM built from
  the tokens that keep attention mass > 1e-2 at the end of training, for the identity and
  the ``gen`` heads with log, squared and cross-entropy losses.

Every score is computed from the analyze stage (Graph-SVM, W^fin) and the verify stage's
trainer and trajectory metrics; the limit claims are judged with
:mod:`theorycheck.falsify.evidence`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as dc_replace

import numpy as np

from theorycheck.corpus.types import corpus_from_windows
from theorycheck.errors import AssumptionViolated
from theorycheck.falsify.candidate import Candidate, embeddings_independent, random_candidate
from theorycheck.falsify.evidence import (
    DIRECTION_DEG,
    ERROR,
    INCONCLUSIVE,
    Finding,
    direction_claim,
    distance_claim,
    overall,
)
from theorycheck.falsify.registry import Conjecture, Outcome, discarded, register_conjecture
from theorycheck.finite import CyclicSubspace
from theorycheck.graphs import build_graphs
from theorycheck.model import ScoreMap, window_stats
from theorycheck.path import frobenius_cos
from theorycheck.svm import solve_graph_svm
from theorycheck.train import TrainConfig

SELECTION_THRESHOLD = 1e-2  # C_thres of the official local-convergence code (THEORY.md §5.6)
NORM_GROWTH_STEPS = 2.0  # late norm increase below this many step lengths: not diverging (NGD oscillates within ~lr)

REALIZABLE = "realizable labels (every label occurs in its own window)"
INDEPENDENT = "linearly independent embeddings (rank E = K)"
DIRECTION_EXISTS = "W^svm != 0 (some cross-SCC edge, so a direction is predicted)"
IDENTITY_LOG = "identity head and log-loss"
GD = "gradient descent on W (step 1, unit-norm embeddings)"


def li_assumption_failures(c: Candidate) -> list[str]:
    out = []
    bad = c.unrealizable_windows()
    if bad:
        out.append(f"{REALIZABLE}: window {bad[0]} does not contain its label")
    if not embeddings_independent(c):
        out.append(f"{INDEPENDENT}: K = {c.K}, d = {c.d}")
    return out


def analyze_candidate(c: Candidate):
    """(Predictions, None) or (None, reasons) when an assumption of the theory fails."""
    from theorycheck.predictions import analyze

    try:
        pred = analyze(c.corpus(), strict=True, radii=None)
    except AssumptionViolated as exc:
        return None, [str(exc)]
    reasons = [f"{a['name']}: {a['detail']}" for a in pred.assumptions if not a["holds"]]
    if not reasons and float(np.linalg.norm(pred.W_svm)) == 0.0:
        reasons.append(DIRECTION_EXISTS + " fails: every TPG edge lies inside a cyclic SCC")
    return (None, reasons) if reasons else (pred, [])


def solve_graph_svm_linf(E: np.ndarray, graphs) -> np.ndarray:
    """Entrywise-max Graph-SVM: the least-Frobenius-norm W among the minimisers of
    max_ij |W_ij| under the Graph-SVM constraints of THEORY.md §3.1 (the l_inf margin
    problem has many minimisers; the second stage picks one, uniquely)."""
    import cvxpy as cp

    from theorycheck.svm import constraint_matrix, constraint_rows

    d = E.shape[1]
    ga, gb, gk, ea, eb, ek = constraint_rows(graphs)
    A_ge = constraint_matrix(E, ga, gb, gk)
    A_eq = constraint_matrix(E, ea, eb, ek)
    w = cp.Variable(d * d)
    cons = [A_ge @ w >= 1] + ([A_eq @ w == 0] if A_eq.shape[0] else [])
    first = cp.Problem(cp.Minimize(cp.norm(w, "inf")), cons)
    first.solve(solver="CLARABEL")
    if first.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"l_inf Graph-SVM ended with status {first.status!r}")
    bound = float(first.value) * (1 + 1e-7) + 1e-9
    second = cp.Problem(cp.Minimize(cp.sum_squares(w)), cons + [cp.abs(w) <= bound])
    second.solve(solver="CLARABEL")
    if second.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"l_inf Graph-SVM (second stage) ended with status {second.status!r}")
    return np.asarray(w.value).reshape(d, d)


# --------------------------------------------------------------------------- shared runner
@dataclass(frozen=True, eq=False)
class MeasuredRun:
    pred: object
    records: tuple[dict, ...]
    W: np.ndarray
    verdict: object  # theorycheck.verify.Verdict of the same run
    matrices: tuple[np.ndarray, ...] = ()  # W at every checkpoint
    targets: dict = None  # name -> target direction

    def series(self, key: str) -> np.ndarray:
        return np.array([r[key] for r in self.records], dtype=np.float64)

    @property
    def steps(self) -> np.ndarray:
        return self.series("step")


def measure(pred, config: TrainConfig, extra_targets: dict[str, np.ndarray] | None = None) -> MeasuredRun:
    """Train on ``pred.corpus`` with the verify stage itself (same trainer, metrics, target and
    decision rule, so the verdict equals the CLI's), keeping W at every checkpoint and
    recording for every named target U (``frobenius`` always, ``nuclear`` for K Q^T, the
    conjecture's extras) ``cos_U`` = cos(W, U) and ``cos_perp_U`` = cos(W - Pi_fin W, U)."""
    from theorycheck.verify import default_tolerances, training_target, verify, with_tolerances

    factored = config.factorized_width is not None
    targets = {"frobenius": pred.W_svm}
    if factored:
        targets["nuclear"] = training_target(pred, config)[0]
    targets.update(extra_targets or {})
    # the verify stage at the conjectures' direction tolerance, so its verdict is the claims' (and the
    # reproduce command's, which passes --tol-angle)
    tol = with_tolerances(default_tolerances(config), direction_deg=DIRECTION_DEG)
    result = verify(pred, config, tol, with_resolution=False)
    matrices = tuple(result.trajectory.matrix(i, pred.score_map) for i in range(len(result.trajectory)))
    records = []
    for rec, W in zip(result.records, matrices, strict=True):
        perp = W - pred.subspace.project(W)
        extra = {}
        for name, U in targets.items():
            extra[f"cos_{name}"] = frobenius_cos(W, U)
            extra[f"cos_perp_{name}"] = frobenius_cos(perp, U)
        records.append({**rec, **extra})
    return MeasuredRun(pred, tuple(records), result.train.W, result.verdict, matrices, targets)


def direction_finding(run: MeasuredRun, cid: str, description: str, target: str = "frobenius",
                      alternative: str | None = None, alternative_name: str = "") -> Finding:
    """``direction_claim`` on the diverging part W - Pi_fin W against a recorded target."""
    return direction_claim(cid, description, run.steps, run.matrices, run.pred.subspace.project,
                           run.targets[target], alternative=run.targets.get(alternative) if alternative else None,
                           alternative_name=alternative_name)


def verify_summary(run: MeasuredRun) -> dict:
    v = run.verdict
    return {"verdict": v.verdict, "failed": [c.id for c in v.criteria if c.applies and c.passed is False],
            "direction_value": next((c.value for c in v.criteria if c.id == "direction"), None)}


def config_args(config: TrainConfig) -> str:
    args = f"--optimizer {config.optimizer} --lr {config.lr!r} --steps {config.steps} --init {config.init} " \
           f"--seed {config.seed} --checkpoints {config.checkpoints} --schedule {config.schedule} " \
           f"--decay-from {config.decay_from} --tol-angle {DIRECTION_DEG:g}"
    if config.factorized_width:
        args += f" --factorized {config.factorized_width}"
    return args


class TrainedConjecture(Conjecture):
    """A conjecture judged on one run of the verify stage's trainer."""

    config = TrainConfig(optimizer="gd", lr=1.0, steps=10_000, init="random", checkpoints=25)

    def train_config(self, c: Candidate, steps_scale: int = 1) -> TrainConfig:
        return dc_replace(self.config, seed=c.train_seed, steps=self.config.steps * steps_scale)

    def assumption_failures(self, c: Candidate) -> list[str]:
        return li_assumption_failures(c)

    def findings(self, run: MeasuredRun, c: Candidate) -> list[Finding]:
        raise NotImplementedError

    def extra_targets(self, pred) -> dict[str, np.ndarray]:
        return {}

    def evaluate(self, c: Candidate, steps_scale: int = 1) -> Outcome:
        reasons = self.assumption_failures(c)
        if reasons:
            return discarded(reasons)
        pred, reasons = analyze_candidate(c)
        if pred is None:
            return discarded(reasons)
        config = self.train_config(c, steps_scale)
        run = measure(pred, config, self.extra_targets(pred))
        found = self.findings(run, c)
        status, head = overall(found)
        last = run.records[-1]
        details = {"train_config": config.as_dict(), "verify": verify_summary(run),
                   "final": {k: last[k] for k in ("step", "norm", "loss", "cos_frobenius", "cos_perp_frobenius",
                                                  "fin_distance", "loss_gap") if k in last},
                   "svm_norm": float(np.linalg.norm(pred.W_svm)), "finite_dimension": pred.subspace.dim}
        return Outcome(status, max(f.score for f in found), head.id if head else None, tuple(found), (), details)

    def reproduce_command(self, jsonl: str, embeddings: str, c: Candidate) -> str | None:
        from pathlib import PurePosixPath

        return (f"theorycheck verify {jsonl} --embeddings {embeddings} {config_args(self.train_config(c))} "
                f"--probes 0 --out {PurePosixPath(jsonl).parent}/verify")


class LiClaims(TrainedConjecture):
    """Direction, finite component and loss of Li et al.'s global-convergence claim."""

    fin_tolerance = 2e-2  # P11 at 10^4 GD steps
    gap_tolerance = 1e-2  # P12 (verify's default)

    def findings(self, run: MeasuredRun, c: Candidate) -> list[Finding]:
        steps = run.steps
        out = [direction_finding(run, "direction", "cos(W(t) - Pi_fin W(t), W^svm) -> 1 (Frobenius Graph-SVM; P10)")]
        if run.pred.subspace.dim:
            out.append(distance_claim("finite_component", "||Pi_fin W(t) - W^fin||_F -> 0 (P11)", steps,
                                      run.series("fin_distance"), self.fin_tolerance))
        out.append(distance_claim("loss_gap", "L(W(t)) - inf L -> 0 (P12)", steps,
                                  np.maximum(run.series("loss_gap"), 0.0), self.gap_tolerance))
        return out


@register_conjecture
class Li2024(LiClaims):
    name = "li2024"
    statement = ("Gradient descent on one attention layer (identity head, log-loss) converges in direction to the "
                 "Graph-SVM W^svm, with Pi_fin W(t) -> W^fin and L(W(t)) -> inf L (Li et al. 2024, THEORY.md §5.3).")
    keeps = (REALIZABLE, INDEPENDENT, DIRECTION_EXISTS, IDENTITY_LOG, GD)
    drops = ()
    expected = "holds"
    reference = "Li, Huang, Ildiz, Rawat, Oymak (AISTATS 2024); THEORY.md §5.3, §8 P10-P12"

    def generate(self, rng):
        return random_candidate(rng, embeddings=("one-hot", "orthonormal", "unit-norm"))


@register_conjecture
class NonorthogonalGlobal(LiClaims):
    name = "nonorthogonal-global"
    statement = ("The global convergence of Li et al. (2024) (direction -> W^svm, Pi_fin W -> W^fin, L -> inf L under "
                 "GD) holds with equi-correlated embeddings e_i = sqrt(rho) c_0 + sqrt(1 - rho) c_i, rho in [0.3, 0.95].")
    keeps = (REALIZABLE, INDEPENDENT, DIRECTION_EXISTS, IDENTITY_LOG, GD)
    drops = ("orthogonal embeddings (pairwise correlation rho up to 0.95)",)
    reference = "THEORY.md §1.1 (the official 'equi-corr' embeddings), §5.3"
    rho_range = (0.3, 0.95)

    def assumption_failures(self, c):
        out = li_assumption_failures(c)
        G = c.embeddings @ c.embeddings.T
        off = G[~np.eye(c.K, dtype=bool)]
        lo, hi = self.rho_range
        if not (np.allclose(np.diag(G), 1.0, atol=1e-9) and np.ptp(off) <= 1e-9 and lo - 1e-9 <= off.mean() <= hi + 1e-9):
            out.append(f"equi-correlated embeddings (unit norm, every pairwise correlation equal to one rho in "
                       f"[{lo}, {hi}])")
        return out

    def generate(self, rng):
        return random_candidate(rng, embeddings=("equi-correlated",), rho=(0.3, 0.95), extra_dims=(0, 1))


@register_conjecture
class KQFrobenius(TrainedConjecture):
    name = "kq-frobenius"
    statement = ("Normalised GD on the factorised W = K Q^T (width m = d) converges in direction to the Frobenius "
                 "Graph-SVM W^svm.")
    keeps = (REALIZABLE, INDEPENDENT, DIRECTION_EXISTS, IDENTITY_LOG)
    drops = ("W trained directly: here W = K Q^T with K, Q in R^{d×d} (normalised GD, lr 0.01, 4000 steps)",)
    expected = "fails"
    reference = "Tarzanagh et al. (2023) prove the nuclear-norm bias for K Q^T (THEORY.md §3.4)"
    config = TrainConfig(optimizer="ngd", lr=0.01, steps=4000, init="random", checkpoints=25, schedule="constant")

    def generate(self, rng):
        return random_candidate(rng, embeddings=("one-hot", "orthonormal"), K=(4, 6), n=(3, 8))

    def train_config(self, c, steps_scale=1):
        return dc_replace(self.config, seed=c.train_seed, factorized_width=c.d, steps=self.config.steps * steps_scale)

    def findings(self, run, c):
        return [direction_finding(run, "direction", "cos(W(t) - Pi_fin W(t), W^svm_Frobenius) -> 1 for W = K Q^T",
                                  alternative="nuclear", alternative_name="nuclear-norm Graph-SVM")]


@register_conjecture
class AdamFrobenius(TrainedConjecture):
    name = "adam-frobenius"
    statement = "Adam (lr 0.01, betas 0.9/0.999) on W converges in direction to the Frobenius Graph-SVM W^svm."
    keeps = (REALIZABLE, INDEPENDENT, DIRECTION_EXISTS, IDENTITY_LOG)
    drops = ("gradient descent: here Adam, lr 0.01, 4000 steps",)
    expected = "fails"
    reference = "Adam's implicit bias on separable data is the l_inf margin (Zhang et al. 2024)"
    config = TrainConfig(optimizer="adam", lr=0.01, steps=4000, init="random", checkpoints=25)

    def generate(self, rng):
        return random_candidate(rng, embeddings=("one-hot", "orthonormal"), K=(3, 5))

    def extra_targets(self, pred):
        return {"linf": solve_graph_svm_linf(pred.corpus.E, pred.graphs)}

    def findings(self, run, c):
        return [direction_finding(run, "direction", "cos(W(t) - Pi_fin W(t), W^svm_Frobenius) -> 1 under Adam",
                                  alternative="linf", alternative_name="entrywise-max (l_inf) Graph-SVM")]


@register_conjecture
class Tarzanagh2023(Conjecture):
    name = "tarzanagh2023"
    statement = ("W(t) ~ W^fin + ||W(t)|| W^svm_gen/||W^svm_gen||: the direction of W(t) converges to the Graph-SVM "
                 "whose selected sets O_i are the tokens keeping attention mass > 1e-2 after training (multi-label "
                 "edges from every selected to every non-selected token of the window, equalities among selected).")
    keeps = (REALIZABLE, INDEPENDENT)
    drops = ("identity head and log-loss: also the gen head (softmax(E f)) with cross-entropy or squared loss, "
             "and the identity head with squared loss",
             "O_i = the label's SCC: here the tokens selected by training",
             "gradient descent: normalised GD, lr 0.1, 2000 steps (the local-convergence experiments, §6.4)")
    reference = "Tarzanagh, Li, Thrampoulidis, Oymak (2023); THEORY.md §5.4, §5.6, §6.4"
    config = TrainConfig(optimizer="ngd", lr=0.1, steps=2000, init="random", checkpoints=25, schedule="constant")

    def generate(self, rng):
        from theorycheck.falsify.heads import HEAD_LOSSES

        head, loss = HEAD_LOSSES[int(rng.integers(len(HEAD_LOSSES)))]
        return random_candidate(rng, embeddings=("unit-norm", "orthonormal"), options={"head": head, "loss": loss})

    def assumption_failures(self, c):
        return li_assumption_failures(c)

    def evaluate(self, c: Candidate, steps_scale: int = 1) -> Outcome:
        from theorycheck.falsify.heads import entry_probabilities, train_head

        reasons = self.assumption_failures(c)
        if reasons:
            return discarded(reasons)
        head, loss = c.option("head", "iden"), c.option("loss", "log")
        corpus = c.corpus()
        graphs = build_graphs(corpus)
        stats = window_stats(corpus, graphs)
        score_map = ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)
        config = dc_replace(self.config, seed=c.train_seed, steps=self.config.steps * steps_scale)
        run = train_head(stats, score_map, head, loss, config)
        steps = np.array(run.steps, dtype=np.float64)
        half = int(np.searchsorted(steps, steps[-1] / 2))
        token = graphs.pair_token[graphs.entry_pair]

        def selected(W):
            prob = entry_probabilities(W, stats, score_map)
            return [tuple(sorted(token[lo:hi][prob[lo:hi] > SELECTION_THRESHOLD].tolist()))
                    for lo, hi in zip(stats.indptr[:-1], stats.indptr[1:], strict=True)]

        final_sets, half_sets = selected(run.matrices[-1]), selected(run.matrices[half])
        norms = np.array([np.linalg.norm(W) for W in run.matrices[half:]])
        norm_T, norm_half = float(norms[-1]), float(norms[0])
        diverging = bool(np.all(np.diff(norms) > 0) and norm_T - norm_half > NORM_GROWTH_STEPS * config.lr)
        details = {"train_config": config.as_dict(), "head": head, "loss": loss,
                   "selected_sets": [list(s) for s in final_sets], "norm": norm_T, "norm_at_half": norm_half,
                   "final_loss": run.losses[-1]}
        if final_sets != half_sets:
            return Outcome(INCONCLUSIVE, 0.0, None, (), ("the selected sets changed between T/2 and T",), details)
        if not diverging:
            return Outcome(INCONCLUSIVE, 0.0, None, (), (f"||W|| is not growing steadily ({norm_half:.4g} at T/2, "
                                                         f"{norm_T:.4g} at T): no directional limit to test",), details)
        try:
            gen_graphs, W_gen = generalised_graph_svm(c, final_sets)
        except AssumptionViolated as exc:
            return Outcome(INCONCLUSIVE, 0.0, None, (), (f"generalised Graph-SVM infeasible: {exc}",), details)
        if float(np.linalg.norm(W_gen)) == 0.0:
            return Outcome(INCONCLUSIVE, 0.0, None, (), ("every selected set is its whole window: W^svm_gen = 0, "
                                                         "no direction predicted",), details)
        unit = W_gen / np.linalg.norm(W_gen)
        subspace = CyclicSubspace(corpus.E, gen_graphs)
        W = run.matrices[-1]
        perp_last = W - subspace.project(W)
        residual = float(np.linalg.norm(perp_last - np.linalg.norm(W) * unit) / np.linalg.norm(W))
        found = direction_claim("generalised_direction",
                                "W(t) - Pi_gen W(t) -> direction of W^svm_gen (selected sets from training)",
                                steps, run.matrices, subspace.project, W_gen)
        found = Finding(found.id, found.description, found.value, found.tolerance, found.relation, found.status,
                        found.score, {**found.evidence, "relative_residual": residual,
                                      "full_cos": frobenius_cos(W, W_gen),
                                      "residual_definition": "||W - Pi_gen W - ||W|| U|| / ||W||, U = W^svm_gen/||W^svm_gen||, "
                                                             "Pi_gen W = the finite part (projection of W on the generalised "
                                                             "cyclic subspace, the choice most favourable to the conjecture)"})
        details["svm_gen_norm"] = float(np.linalg.norm(W_gen))
        return Outcome(found.status, found.score, found.id, (found,), (), details)


def generalised_graph_svm(c: Candidate, selected: list[tuple[int, ...]]):
    """Graph-SVM with multi-labels O_i (THEORY.md §5.6): one copy of window i labelled c for
    every c in O_i, so G^(k) gets c -> b for every selected c and every other token b of the
    window, and selected tokens of a window reach each other (one SCC: equal scores), while
    cross-SCC edges carry the unit margin.  Returns (graphs, W^svm_gen)."""
    windows = [list(w) for w, sel in zip(c.windows, selected, strict=True) for _ in sel]
    labels = [s for sel in selected for s in sel]
    graphs = build_graphs(corpus_from_windows(windows, labels, c.vocab, E=c.embeddings))
    return graphs, solve_graph_svm(c.embeddings, graphs).W


def error_outcome(exc: BaseException) -> Outcome:
    return Outcome(ERROR, -np.inf, None, (), (f"{type(exc).__name__}: {exc}",))
