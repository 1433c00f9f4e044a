"""The analyze stage: corpus -> graphs -> W^svm, S_fin, W^fin, path, automaton."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from theorycheck import __version__
from theorycheck.automaton import Automaton
from theorycheck.corpus.types import Corpus
from theorycheck.errors import AssumptionViolated, InputError
from theorycheck.finite import CyclicSubspace, FiniteSolution, solve_finite
from theorycheck.graphs import TokenPriorityGraphs, build_graphs
from theorycheck.io import SCHEMA_VERSION
from theorycheck.model import ScoreMap, WindowStats, window_stats
from theorycheck.path import PathPoint, PathTrace, default_radii, path_points, trace_path
from theorycheck.runtime import single_threaded_blas
from theorycheck.svm import SolverFailure, SvmSolution, solve_graph_svm

Progress = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class Predictions:
    """Everything the theory predicts for a corpus (immutable)."""

    corpus: Corpus  # realizable windows only
    graphs: TokenPriorityGraphs
    stats: WindowStats
    score_map: ScoreMap
    svm: SvmSolution | None
    subspace: CyclicSubspace
    finite: FiniteSolution
    path: tuple[PathPoint, ...]
    assumptions: tuple[dict, ...]
    infeasibility: dict | None = None
    timings: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what could not be computed, and why (shown as warnings)

    @property
    def W_svm(self) -> np.ndarray:
        d = self.corpus.d
        return self.svm.W if self.svm is not None else np.zeros((d, d))

    @property
    def W_fin(self) -> np.ndarray:
        return self.finite.W

    @property
    def applicable(self) -> bool:
        return all(a["holds"] for a in self.assumptions)

    @property
    def orthonormal(self) -> bool:
        return self.subspace.orthonormal

    def automaton(self) -> Automaton:
        return Automaton(self.corpus.vocab, self.corpus.E, self.W_fin, self.graphs.query_details(self.corpus.vocab))

    def to_json(self, extra: dict | None = None) -> dict:
        c = self.corpus
        before = c.stats.get("windows_before_realizability", c.n)
        dropped = c.stats.get("unrealizable_dropped", 0)
        svm = None
        if self.svm is not None:
            s = self.svm
            svm = {"method": s.method, "status": s.status, "norm": s.norm, "min_margin": s.min_margin,
                   "max_violation": s.max_violation, "kkt_residual": s.kkt_residual, "min_dual": s.min_dual,
                   "variables": s.details.get("variables"), "constraints": s.details.get("constraints")}
        f = self.finite
        out = {
            "schema_version": SCHEMA_VERSION,
            "theorycheck_version": __version__,
            "convention": "s_t = x_t^T W x_last; rows of E are embeddings; M = E W E^T has row = key token, column = query token",
            "vocabulary": list(c.vocab),
            "embeddings": {
                "kind": c.embedding_kind, "dimension": c.d,
                "orthonormal": self.orthonormal,
                "rank": c.embedding_rank,
                "linearly_independent": c.embedding_rank == c.K,
            },
            "corpus": {
                "source": c.source,
                **{k: v for k, v in c.summary().items() if k not in ("unrealizable_dropped",)},
                "windows_read": before,
                "unrealizable_dropped": dropped,
                "unrealizable_fraction": dropped / before if before else 0.0,
            },
            "assumptions": list(self.assumptions),
            "graphs": self.graphs.summary(),
            "svm": svm,
            "infeasibility_certificate": self.infeasibility,
            "finite": {"status": f.status, "dimension": f.dim, "loss_infimum": f.loss, "norm": float(np.linalg.norm(f.W)),
                       "gradient_norm": f.gradient_norm, "moment_residual": f.moment_residual,
                       "iterations": f.iterations, "cyclic_windows": f.n_cyclic_windows,
                       "svm_projection_norm": float(np.linalg.norm(self.subspace.coords(self.W_svm)))},
            "path": [p.as_dict() for p in self.path],
            "queries": self.graphs.query_details(c.vocab),
        }
        if self.notes:
            out["notes"] = list(self.notes)
        out.update(extra or {})
        return out


def describe_scale(E: np.ndarray) -> str:
    """'entries of magnitude 1e-40 to 1.2e+05' (the nonzero ones): what makes solvers fail."""
    mags = np.abs(E[E != 0])
    if not mags.size:
        return "every entry is zero"
    return f"nonzero entries of magnitude {mags.min():.2g} to {mags.max():.2g}"


def check_assumptions(corpus: Corpus) -> list[dict]:
    rank = corpus.embedding_rank
    before = corpus.stats.get("windows_before_realizability", corpus.n)
    return [
        {"name": "realizable labels", "holds": corpus.n > 0,
         "detail": f"{corpus.n} of {before} windows have their label in the window (the others were dropped)"},
        {"name": "linearly independent embeddings", "holds": rank == corpus.K,
         "detail": f"rank E = {rank}, vocabulary K = {corpus.K}" + ("" if rank == corpus.K else
                   "; the identity head C E^T = I does not exist and Graph-SVM may be infeasible")},
    ]


class Background:
    """``fn(*args)`` in a daemon thread (a Ctrl-C in the main thread ends the process without
    waiting for it); ``result()`` waits and returns its value or re-raises its exception;
    ``seconds``: its own wall time."""

    def __init__(self, fn, *args):
        import threading

        self._outcome: tuple = ()
        self.seconds = 0.0

        def run():
            t0 = time.perf_counter()
            try:
                self._outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the caller's thread by result()
                self._outcome = (False, exc)
            self.seconds = time.perf_counter() - t0

        self._thread = threading.Thread(target=run, name="theorycheck-background", daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self):
        self._thread.join()
        ok, value = self._outcome
        if not ok:
            raise value
        return value


def _graph_svm(corpus: Corpus, graphs: TokenPriorityGraphs, svm_method: str,
               assumptions: list[dict]) -> tuple[SvmSolution | None, dict | None]:
    """(W^svm solution, None), or (None, Farkas certificate) when the Graph-SVM is infeasible;
    the feasibility assumption is appended to ``assumptions``."""
    try:
        svm = solve_graph_svm(corpus.E, graphs, method=svm_method)
    except AssumptionViolated as exc:
        assumptions.append({"name": "Graph-SVM feasible", "holds": False, "detail": str(exc)})
        return None, exc.certificate
    except Exception as exc:
        cvxpy_error = type(exc).__module__.split(".")[0] == "cvxpy" and type(exc).__name__ == "SolverError"
        if not (cvxpy_error or isinstance(exc, SolverFailure)):
            raise
        why = f" ({exc})" if isinstance(exc, SolverFailure) else ""
        raise InputError(
            f"the Graph-SVM solver failed on these embeddings{why}; {describe_scale(corpus.E)}: rescale them, e.g. "
            "rows to unit norm (the theory is scale-covariant: W scales as 1/c^2)") from None
    assumptions.append({"name": "Graph-SVM feasible", "holds": True,
                        "detail": f"min margin {svm.min_margin:.6g}, max violation {svm.max_violation:.2e}"})
    return svm, None


def _cancel(jobs: list[Background | None], stop_path: threading.Event, exc: BaseException) -> None:
    """Stop the path thread at its next radius and, unless the user interrupted, wait for the
    background jobs, so that no work goes on after analyze has raised."""
    stop_path.set()
    if isinstance(exc, KeyboardInterrupt):
        return
    for job in jobs:
        if job is not None:
            try:
                job.result()
            except Exception:  # noqa: BLE001, S110 - the error being raised is the one to report
                pass


def _trace_path_raising(*args) -> PathTrace:
    """:func:`trace_path` with division by zero, invalid operations and overflow raised (the
    errstate is per thread, so it is set here, in the path's own thread): such a path is reported
    as not computed (at embedding entries of 2.5e4 its products overflowed with only a warning)."""
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        return trace_path(*args)


def analyze(
    corpus: Corpus,
    strict: bool = False,
    radii: tuple[float, ...] | str | None = "auto",
    svm_method: str = "auto",
    progress: Progress | None = None,
) -> Predictions:
    """Compute every prediction of Li et al. (2024) for ``corpus``.

    ``radii``: the regularization path's radii, "auto" for :func:`theorycheck.path.default_radii`
    (1, 2, 5, 10, 20, 50 for unit-norm embeddings), None or () for no path.

    Raises AssumptionViolated (exit 3) when no window is realizable; an infeasible
    Graph-SVM is recorded in ``infeasibility`` (with its Farkas certificate) and the
    corresponding assumption marked failing, so results can still be written.
    """
    say = progress or (lambda _msg: None)
    if svm_method not in ("auto", "orthonormal", "general"):
        raise InputError(f"svm_method {svm_method!r}: use auto, orthonormal or general")
    if svm_method == "orthonormal" and not corpus.orthonormal:
        raise InputError("--svm-method orthonormal needs orthonormal embeddings (E E^T = I) and these are not; "
                         "use --svm-method auto or general")
    if radii == "auto":
        radii = default_radii(corpus.E)
    t = {}
    t0 = time.perf_counter()
    corpus = corpus.realizable(strict=strict)
    if corpus.n == 0:
        raise AssumptionViolated(
            "no window has its label inside the window, so the model cannot predict any label "
            "(realizability, THEORY.md §1.2); use a longer --window"
        )
    say("building token-priority graphs")
    graphs = build_graphs(corpus)
    stats = window_stats(corpus, graphs)
    score_map = ScoreMap(corpus.E, graphs.pair_token, graphs.pair_query)
    t["graphs"] = time.perf_counter() - t0
    assumptions = check_assumptions(corpus)
    # W^fin and the path's solves need neither W^svm nor each other: they run in threads
    # meanwhile (the SVM's QPs and the path's sparse products spend much of their time outside
    # the GIL; on 2 cores the whole command at V = 5,000 / T = 64 went from 29-34 s to 25-26 s)
    say("solving the Graph-SVM and, alongside, W^fin and the regularization path")
    # one OpenBLAS thread for the whole stage: the threads below would otherwise toggle it for
    # each other mid-computation, and BLAS sums in an order that depends on its thread count
    # (results.json is byte-identical across runs)
    with single_threaded_blas():
        t1 = time.perf_counter()
        subspace = CyclicSubspace(corpus.E, graphs)
        stop_path = threading.Event()
        path_job = Background(_trace_path_raising, stats, score_map, subspace.orthonormal, tuple(radii),
                              stop_path.is_set) if radii else None
        finite_job = Background(solve_finite, corpus, graphs, subspace, stats)
        try:
            svm, infeasibility = _graph_svm(corpus, graphs, svm_method, assumptions)
        except BaseException as exc:
            _cancel([path_job, finite_job], stop_path, exc)
            raise
        if svm is None or svm.norm == 0:  # no direction to compare the path with: it stops at the next radius
            stop_path.set()
        t["svm"] = time.perf_counter() - t1
        if not finite_job.done():
            say("solving for the finite component W^fin")
        try:
            finite = finite_job.result()
        except BaseException as exc:
            _cancel([path_job], stop_path, exc)
            raise
        if finite.status == "not_attained":
            assumptions.append({"name": "W^fin attained", "holds": False,
                                "detail": "the reduced loss has no minimiser on S_fin"})
        t["finite"] = finite_job.seconds
        t["svm+finite"] = time.perf_counter() - t1  # wall time of the two together
        path: list[PathPoint] = []
        notes: list[str] = []
        if path_job is not None:
            if not path_job.done():
                say("tracing the regularization path")
            try:
                trace = path_job.result()
            except FloatingPointError as exc:
                trace = None
                if not stop_path.is_set():
                    notes.append(f"regularization path not computed: {exc} on these embeddings "
                                 f"({describe_scale(corpus.E)}); rescale them, e.g. rows to unit norm")
            if trace is not None and not stop_path.is_set():
                path = path_points(trace, svm.W, finite.W, subspace)
            t["path"] = path_job.seconds
    t["total"] = time.perf_counter() - t0
    return Predictions(corpus, graphs, stats, score_map, svm, subspace, finite, tuple(path),
                       tuple(assumptions), infeasibility, t, tuple(notes))


def save_predictions(pred: Predictions, out_dir, extra: dict | None = None) -> dict:
    """Write the analyze contract: results.json, W_svm.npy, W_fin.npy, E.npy (+ timings.json).

    Timings go to their own file so that results.json is byte-identical across runs.
    """
    from pathlib import Path

    from theorycheck.io import write_json, write_npy

    out = Path(out_dir)
    results = pred.to_json(extra)
    write_npy(out / "W_svm.npy", pred.W_svm)
    write_npy(out / "W_fin.npy", pred.W_fin)
    write_npy(out / "E.npy", pred.corpus.E)
    write_json(out / "timings.json", {k: round(v, 6) for k, v in pred.timings.items()})
    write_json(out / "results.json", results)
    return results
