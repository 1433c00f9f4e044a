"""Search for a counterexample, then shrink it (``theorycheck falsify``).

Search, in rounds of ``batch`` candidates (``batch`` is part of the campaign's definition,
never derived from the number of workers):

* round 0 draws every candidate from the conjecture's generator, the generator of
  candidate i being seeded with (seed, 0, i);
* later rounds are *targeted*: half of the slots mutate the highest-scoring candidates
  so far (ranked by violation score, ties by index; the child of slot i is drawn with
  (seed, 1, i)), the other half are fresh random candidates;
* the search stops after the first round that holds a violation, or when ``budget``
  candidates have been tried.

Shrinking, from the simplest violating candidate (fewest samples, tokens, dimensions,
positions; then the largest violation; then the smallest index): the conjecture's
simplifications (drop a window, drop a token, one-hot embeddings, compress d, drop a
position) are tried in a fixed order, in chunks of ``shrink_batch``; the first one of a
chunk that still violates is kept and the pass restarts from it.  It stops at a
candidate none of whose simplifications violates (a local minimum) or after
``shrink_budget`` evaluations.

Every decision depends only on (seed, candidate index) and on completed rounds, so the
same seed, budget and batch sizes give the same counterexample with any number of
workers.  Trials are evaluated through :func:`theorycheck.campaign.run_campaign` (Dask,
or serially with ``workers=0``) and streamed to ``DIR/trials/*.jsonl`` as they finish.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from theorycheck.errors import InputError
from theorycheck.falsify.candidate import Candidate
from theorycheck.falsify.evidence import DISCARDED, ERROR, VIOLATED
from theorycheck.falsify.registry import Conjecture, get_conjecture, load_plugin

DEFAULT_BATCH = 16
DEFAULT_SHRINK_BUDGET = 60
DEFAULT_SHRINK_BATCH = 4
STATUSES = ("holds", "violated", "inconclusive", "discarded", "error")


def evaluate_task(task: dict) -> dict:
    """Campaign worker: judge one candidate (module level, so Dask can pickle it)."""
    from theorycheck.falsify.conjectures import error_outcome

    for path in task.get("plugins", ()):
        load_plugin(path)
    conjecture = get_conjecture(task["conjecture"])
    candidate = Candidate.from_json(task["candidate"])
    try:
        scale = int(task.get("steps_scale", 1))
        outcome = conjecture.evaluate(candidate, steps_scale=scale) if scale != 1 else conjecture.evaluate(candidate)
    except Exception as exc:  # noqa: BLE001 - one failing trial must not end the campaign
        outcome = error_outcome(exc)
    return outcome.as_dict()


@dataclass
class Trial:
    index: int  # search candidates: 0..budget-1; shrink evaluations: numbered after them
    phase: str  # random / targeted / shrink
    origin: str
    candidate: Candidate
    outcome: dict
    cached: bool = False  # outcome reused from an identical candidate evaluated earlier

    @property
    def status(self) -> str:
        return self.outcome["status"]

    @property
    def score(self) -> float:
        return float(self.outcome["score"])

    def summary(self) -> dict:
        return {"index": self.index, "phase": self.phase, "origin": self.origin,
                "size": dict(zip(("samples", "tokens", "dimension", "positions"), self.candidate.size_key(), strict=True)),
                "status": self.status, "criterion": self.outcome.get("criterion"), "score": self.score}


@dataclass
class FalsifyResult:
    conjecture: Conjecture
    seed: int
    budget: int
    batch: int
    shrink_budget: int
    shrink_batch: int
    plugins: tuple[str, ...]
    trials: list[Trial] = field(default_factory=list)
    original: Trial | None = None  # the violating candidate the shrinker started from
    final: Trial | None = None  # the shrunk counterexample (confirmed at twice the budget)
    confirmation: Trial | None = None  # ``final`` re-run at twice the training budget
    path: list[Trial] = field(default_factory=list)  # start of shrinking, then every kept simplification
    unconfirmed: list[dict] = field(default_factory=list)  # violations that did not survive twice the budget
    history: list[dict] = field(default_factory=list)
    shrink_evaluations: int = 0
    local_minimum: bool = False  # shrinking stopped because no simplification still violates
    interrupted: bool = False

    @property
    def found(self) -> bool:
        return self.final is not None

    @property
    def search_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.phase in ("random", "targeted")]

    def counts(self, phase: str | None = None) -> dict[str, int]:
        pool = self.search_trials if phase is None else [t for t in self.trials if t.phase == phase]
        return {s: sum(t.status == s for t in pool) for s in STATUSES}

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.found else 0)


def _rank_key(trial: Trial) -> tuple:
    return (-trial.score, trial.index)


def simplest_violation(trials: list[Trial]) -> Trial | None:
    hits = [t for t in trials if t.status == VIOLATED]
    return min(hits, key=lambda t: (t.candidate.size_key(), -t.score, t.index)) if hits else None


class Runner:
    """Evaluates chunks of candidates through run_campaign, with a cache and the trial logs."""

    def __init__(self, conjecture: Conjecture, plugins: tuple[str, ...], out_dir: Path | None,
                 scheduler: str | None, workers: int | None, progress: bool, resume: bool):
        self.conjecture = conjecture
        self.plugins = plugins
        self.trials_dir = out_dir / "trials" if out_dir is not None else None
        self.scheduler = scheduler
        self.workers = workers
        self.progress = progress
        self.resume = resume
        self.cache: dict[str, dict] = {}
        self.cluster = None
        if self.trials_dir is not None:
            self.trials_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                for old in self.trials_dir.glob("*.jsonl"):
                    old.unlink()

    def start(self) -> None:
        if self.scheduler is None and self.workers != 0:
            from dask.distributed import LocalCluster

            n = self.workers or os.cpu_count() or 1
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=":0", silence_logs=40)  # any free port

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def run(self, items: list[tuple[int, str, str, Candidate]], log_name: str, label: str,
            steps_scale: int = 1) -> list[Trial]:
        from theorycheck.campaign import run_campaign

        trials: list[Trial | None] = [None] * len(items)
        tasks, slots = [], []
        for j, (index, phase, origin, cand) in enumerate(items):
            key = json.dumps([cand.to_json(), steps_scale], sort_keys=True)
            if key in self.cache:
                trials[j] = Trial(index, phase, origin, cand, self.cache[key], cached=True)
                continue
            tasks.append({"conjecture": self.conjecture.name, "plugins": list(self.plugins), "index": index,
                          "phase": phase, "origin": origin, "candidate": cand.to_json(), "steps_scale": steps_scale})
            slots.append(j)
        if tasks:
            scheduler = self.cluster.scheduler_address if self.cluster is not None else self.scheduler
            workers = 0 if scheduler is None else None
            log = self.trials_dir / f"{log_name}.jsonl" if self.trials_dir is not None else None
            results = run_campaign(tasks, evaluate_task, scheduler=scheduler, workers=workers, out_jsonl=log,
                                   progress=self.progress, resume=self.resume, label=label)
            for j, task, outcome in zip(slots, tasks, results, strict=True):
                index, phase, origin, cand = items[j]
                self.cache[json.dumps([task["candidate"], steps_scale], sort_keys=True)] = outcome
                trials[j] = Trial(index, phase, origin, cand, outcome)
        return [t for t in trials if t is not None]


def search(runner: Runner, result: FalsifyResult) -> None:
    conj, seed = result.conjecture, result.seed
    index = 0
    round_no = 0
    while index < result.budget:
        size = min(result.batch, result.budget - index)
        scored = sorted((t for t in result.trials if t.status not in (DISCARDED, ERROR)), key=_rank_key)
        n_mutants = size // 2 if round_no > 0 and scored else 0
        parents = scored[:max(1, size // 4)]
        items = []
        for j in range(size):
            i = index + j
            if j < n_mutants:
                parent = parents[j % len(parents)]
                op, child = conj.mutate(parent.candidate, np.random.default_rng([seed, 1, i]))
                items.append((i, "targeted", f"{op} of #{parent.index}", child))
            else:
                items.append((i, "random", "random", conj.generate(np.random.default_rng([seed, 0, i]))))
        phase = "targeted" if n_mutants else "random"
        result.trials += runner.run(items, f"search-{round_no:04d}", f"{conj.name} round {round_no} ({phase})")
        index += size
        round_no += 1
        if any(t.status == VIOLATED for t in result.trials):
            break


def shrink(runner: Runner, result: FalsifyResult, start: Trial) -> None:
    conj = result.conjecture
    current = result.final = start
    result.path.append(start)
    result.history.append({"step": 0, "operation": "start", "trial": start.index,
                           "size": list(start.candidate.size_key()), "score": start.score})
    next_index = result.budget
    chunk_no = 0
    while result.shrink_evaluations < result.shrink_budget:
        seen = {json.dumps(current.candidate.to_json(), sort_keys=True)}
        steps = []
        for op, child in conj.shrink_steps(current.candidate):
            key = json.dumps(child.to_json(), sort_keys=True)
            if key not in seen and child.size_key() <= current.candidate.size_key():
                seen.add(key)
                steps.append((op, child))
        accepted = None
        complete = True
        for lo in range(0, len(steps), result.shrink_batch):
            room = result.shrink_budget - result.shrink_evaluations
            chunk = steps[lo:lo + min(result.shrink_batch, room)]
            if len(chunk) < min(result.shrink_batch, len(steps) - lo):
                complete = False  # the budget cut this pass short
            if not chunk:
                break
            items = [(next_index + j, "shrink", f"{op} of #{current.index}", child) for j, (op, child) in enumerate(chunk)]
            trials = runner.run(items, f"shrink-{chunk_no:04d}", f"{conj.name} shrinking")
            chunk_no += 1
            next_index += len(chunk)
            result.shrink_evaluations += sum(not t.cached for t in trials)
            result.trials += trials
            accepted = next((t for t in trials if t.status == VIOLATED), None)
            if accepted is not None:
                break
        if accepted is None:
            result.local_minimum = complete
            break
        current = result.final = accepted
        result.path.append(accepted)
        result.history.append({"step": len(result.history), "operation": accepted.origin, "trial": accepted.index,
                               "size": list(accepted.candidate.size_key()), "score": accepted.score})


def confirm(runner: Runner, result: FalsifyResult) -> None:
    """Re-run the shrunk counterexample with twice the training budget; if it no longer
    violates, walk back along the shrinking path to the simplest candidate that does.
    A violation that survives doubling the run is not an artefact of where the run stopped."""
    index = max(t.index for t in result.trials) + 1
    result.final = None
    result.local_minimum = result.local_minimum if result.path else False
    for trial in reversed(result.path):
        check = runner.run([(index, "confirm", f"twice the budget for #{trial.index}", trial.candidate)],
                           f"confirm-{index:06d}", f"{result.conjecture.name} confirmation", steps_scale=2)[0]
        index += 1
        result.trials.append(check)
        if check.status == VIOLATED:
            result.final, result.confirmation = trial, check
            result.local_minimum = result.local_minimum and trial is result.path[-1]
            return
        result.unconfirmed.append({"trial": trial.index, "status_at_twice_the_budget": check.status,
                                   "criterion": check.outcome.get("criterion"), "score": check.score})


def falsify(
    conjecture: str | Conjecture,
    budget: int = 200,
    seed: int = 0,
    out_dir: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    plugins: tuple[str, ...] | list[str] = (),
    batch: int = DEFAULT_BATCH,
    shrink_budget: int = DEFAULT_SHRINK_BUDGET,
    shrink_batch: int = DEFAULT_SHRINK_BATCH,
    progress: bool = False,
    resume: bool = False,
) -> FalsifyResult:
    """Search for a minimal counterexample to ``conjecture`` (see the module docstring).

    Writes DIR/counterexample.jsonl, DIR/embeddings.json, DIR/explanation.md and
    DIR/falsify.json when ``out_dir`` is given (also on Ctrl-C, with what was found so far,
    before re-raising KeyboardInterrupt).
    """
    from theorycheck.falsify.output import write_outputs

    if budget < 1:
        raise InputError("--budget must be at least 1 candidate")
    if batch < 1 or shrink_batch < 1 or shrink_budget < 0:
        raise InputError("--batch and --shrink-batch must be at least 1 and --shrink-budget at least 0")
    if workers is not None and workers < 0:
        raise InputError(f"--workers {workers}: use 0 (serial, in this process) or a positive number of processes")
    plugins = tuple(str(Path(p).resolve()) for p in plugins)
    for path in plugins:
        load_plugin(path)
    conj = conjecture if isinstance(conjecture, Conjecture) else get_conjecture(conjecture)
    out = None
    if out_dir is not None:
        from theorycheck.falsify.output import OUTPUT_FILES
        from theorycheck.io import prepare_out_dir

        out = prepare_out_dir(out_dir, list(plugins), OUTPUT_FILES)
    result = FalsifyResult(conj, seed, budget, batch, shrink_budget, shrink_batch, plugins)
    runner = Runner(conj, plugins, out, scheduler, workers, progress, resume)
    try:
        runner.start()
        search(runner, result)
        start = simplest_violation(result.trials)
        if start is not None:
            result.original = start
            shrink(runner, result, start)
            confirm(runner, result)
    except KeyboardInterrupt:
        result.interrupted = True
        if result.final is None:  # keep the simplest violation reached so far (unconfirmed)
            result.final = result.path[-1] if result.path else simplest_violation(result.search_trials)
            result.original = result.original or result.final
        if out is not None:
            write_outputs(result, out)
        raise
    finally:
        runner.close()
    if out is not None:
        write_outputs(result, out)
    return result
