"""What a theory is to theorycheck: one object with one interface (docs/theories.md).

A theory has a name and a citation, the assumptions it checks on a corpus, typed predictions
saved in the output contract, a model it trains, criteria judged with theorycheck's verdict rule
(theorycheck.theories.rule: HOLDS / VIOLATED / INCONCLUSIVE / NOT APPLICABLE and the statement of
resolution), and its section of the report.

``Theory`` is the interface.  ``StagedTheory`` implements ``run`` and ``rejudge`` for a theory
written as five stages (load, assumptions, predict, train, judge), with the shared output
contract: DIR/results.json (``{"theory": name, name: section}``), one ``NAME.npy`` per predicted
array, DIR/W_trained.npy, DIR/checkpoints.npz and DIR/trajectory.json.  li2024 and tian2023 keep
their own contracts and override ``run``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from theorycheck.errors import InputError

HINT = "give the --out DIR of `theorycheck verify --theory NAME`"


@dataclass(frozen=True)
class Request:
    """What a run is asked to do: every option of `theorycheck verify` by name, resolved
    (``typed``: those given on the command line, so a theory may apply its own defaults to the
    others), and the output directory."""

    options: dict[str, Any]
    typed: frozenset[str] = frozenset()
    out: Path = Path("theorycheck-results")
    on_step: Any = None  # callable(step) for a progress bar, or None

    def __getitem__(self, name: str):
        return self.options[name]


@dataclass(frozen=True)
class Outcome:
    """The result of one theory on one corpus, as the CLI shows it."""

    theory: str
    verdict: str  # HOLDS / VIOLATED / INCONCLUSIVE / NOT APPLICABLE / INCOMPLETE
    exit_code: int
    statement: str
    out_dir: Path
    section: dict  # the theory's section of results.json
    detail: dict | None = None  # verdict with criteria (rendered as the criteria table), if the theory has one
    predictions: dict = field(default_factory=dict)  # a few headline numbers of what it predicts
    assumptions: tuple[dict, ...] = ()


@dataclass(frozen=True)
class ReportSection:
    title: str
    html: str
    markdown: str


class Theory(ABC):
    """The interface every theory implements."""

    name: ClassVar[str]
    title: ClassVar[str]
    citation: ClassVar[str]
    summary: ClassVar[str]
    assumption_names: ClassVar[tuple[tuple[str, str], ...]] = ()  # (name, what is checked)
    prediction_arrays: ClassVar[tuple[tuple[str, str], ...]] = ()  # (file stem, meaning): what `judge` may replace
    options: ClassVar[frozenset[str]] = frozenset()  # the `verify` options it reads
    defaults: ClassVar[dict[str, Any]] = {}  # its defaults for options not typed

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "citation": self.citation, "summary": self.summary,
                "assumptions": [{"name": n, "checks": w} for n, w in self.assumption_names],
                "predictions": [{"file": f"{n}.npy", "meaning": m} for n, m in self.prediction_arrays],
                "options": sorted(self.options)}

    def option(self, request: Request, name: str):
        """The request's value of ``name``, or the theory's default when it was not typed."""
        if name in self.defaults and name not in request.typed:
            return self.defaults[name]
        return request[name]

    @abstractmethod
    def run(self, request: Request) -> Outcome:
        """Check the assumptions, predict, train, judge; write DIR; return the outcome."""

    @abstractmethod
    def rejudge(self, run_dir: Path, arrays: dict[str, np.ndarray], out: Path | None = None) -> Outcome:
        """Judge the run stored in ``run_dir`` again, with some predicted arrays replaced."""

    def render(self, outcome: Outcome) -> None:
        """Print an outcome on the console (default: assumptions, criteria table, verdict line)."""
        from theorycheck.commands.verify import render_outcome

        render_outcome(outcome)

    def report_section(self, results: dict) -> ReportSection:
        """Its section of a report, from its section of results.json (default: the verdict)."""
        from theorycheck.report.html import esc

        section = results.get(self.name, {})
        verdict = section.get("verify", {})
        statement = verdict.get("statement") or verdict.get("verdict") or "no verdict"
        rows = "".join(f"<li>{esc(a['name'])}: {'holds' if a.get('holds') else 'fails'} — {esc(a.get('detail', ''))}</li>"
                       for a in section.get("assumptions", []))
        html = f"<p><b>{esc(statement)}</b></p><ul>{rows}</ul>"
        md = f"**{statement}**\n\n" + "".join(f"- {a['name']}: {'holds' if a.get('holds') else 'fails'} — "
                                             f"{a.get('detail', '')}\n" for a in section.get("assumptions", []))
        return ReportSection(f"{self.title}", html, md)


def fingerprint(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' bytes: `judge` refuses a run whose input has changed."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def corpus_fingerprint(corpus) -> str:
    """The training windows (counts, labels, queries) and the embeddings."""
    c = corpus
    return fingerprint(c.counts.indptr, c.counts.indices, c.counts.data, c.label, c.last, c.E)


def stored_path(path) -> str | None:
    """An input as `judge` will find it again: files by absolute path, specs as written."""
    if path is None:
        return None
    p = Path(path)
    return str(p.resolve()) if p.exists() else str(path)


CORPUS_OPTIONS = ("input_path", "input_format", "window", "vocab", "unit", "oov", "embeddings")


class StagedTheory(Theory):
    """A theory written as stages, with the shared output contract (module docstring).

    Subclasses implement ``load``, ``assumptions``, ``predict``, ``train``, ``judge``,
    ``save_trajectory`` / ``load_trajectory`` and ``prediction_values``."""

    outputs: ClassVar[tuple[str, ...]] = ("results.json", "W_trained.npy", "checkpoints.npz", "trajectory.json")

    # -- stages ------------------------------------------------------------------------------
    def load(self, request: Request):
        """The data the theory works on (default: the corpus through theorycheck's readers)."""
        from theorycheck.commands.common import load_input

        o = request.options
        return load_input(o["input_path"], o["window"], o["vocab"], o["unit"], o["oov"], o["embeddings"],
                          o["input_format"])

    @abstractmethod
    def prepare(self, corpus, request: Request):
        """Corpus -> the theory's data (e.g. its contexts)."""

    @abstractmethod
    def assumptions(self, data, request: Request) -> list[dict]:
        """[{name, holds, detail}] (holds None: not checked)."""

    @abstractmethod
    def predict(self, data, request: Request):
        """Typed predictions; ``prediction_values(prediction)`` gives its arrays by file stem."""

    @abstractmethod
    def prediction_values(self, prediction) -> dict[str, np.ndarray]:
        ...

    @abstractmethod
    def train(self, data, prediction, request: Request):
        """(TrainResult, trajectory, W_trained)."""

    @abstractmethod
    def judge(self, data, prediction, trajectory, request: Request, arrays: dict[str, np.ndarray] | None = None,
              interrupted: bool = False):
        """(verdict with .as_dict() and .exit_code, checkpoint records)."""

    @abstractmethod
    def save_trajectory(self, trajectory, path: Path) -> None:
        ...

    @abstractmethod
    def load_trajectory(self, data, path: Path):
        ...

    def summary_of(self, data, prediction) -> dict:
        """Headline numbers of the predictions (for the side-by-side report)."""
        return {}

    # -- the pipeline -------------------------------------------------------------------------
    def run(self, request: Request) -> Outcome:
        from theorycheck import __version__
        from theorycheck.io import SCHEMA_VERSION, prepare_out_dir, write_json, write_npy

        o = request.options
        files = (*self.outputs, *(f"{n}.npy" for n, _ in self.prediction_arrays))
        out = prepare_out_dir(request.out, [o.get("input_path"), o.get("embeddings")], files)
        corpus = self.load(request)
        data = self.prepare(corpus, request)
        checks = self.assumptions(data, request)
        inputs = {name: (stored_path(o[name]) if name in ("input_path", "embeddings") else o[name])
                  for name in CORPUS_OPTIONS}
        inputs.update({name: self.option(request, name) for name in sorted(self.options)})
        section: dict = {"citation": self.citation, "assumptions": checks, "inputs": inputs,
                         "corpus_fingerprint": corpus_fingerprint(corpus)}
        results = {"schema_version": SCHEMA_VERSION, "theorycheck_version": __version__, "command": "verify",
                   "theory": self.name, self.name: section}
        failing = [a for a in checks if a["holds"] is not True]
        if failing:
            reasons = [f"assumption fails: {a['name']} ({a['detail']})" for a in failing if a["holds"] is False]
            section["verify"] = {"verdict": "NOT APPLICABLE", "exit_code": 3, "statement": "NOT APPLICABLE: " +
                                 "; ".join(reasons), "reasons": reasons, "criteria": []}
            write_json(out / "results.json", results)
            return Outcome(self.name, "NOT APPLICABLE", 3, section["verify"]["statement"], out, section,
                           section["verify"], {}, tuple(checks))
        prediction = self.predict(data, request)
        for stem, array in self.prediction_values(prediction).items():
            write_npy(out / f"{stem}.npy", array)
        section["predictions"] = self.summary_of(data, prediction)
        trained, trajectory, W_trained = self.train(data, prediction, request)
        interrupted = trained.interrupted
        verdict, records = self.judge(data, prediction, trajectory, request, interrupted=interrupted)
        write_npy(out / "W_trained.npy", W_trained)
        self.save_trajectory(trajectory, out / "checkpoints.npz")
        write_json(out / "trajectory.json", {"schema_version": SCHEMA_VERSION, "theory": self.name,
                                             "steps_done": trained.steps_done, "interrupted": interrupted,
                                             "checkpoints": records})
        detail = verdict.as_dict()
        section["verify"] = {**detail, "config": trained.config.as_dict(), "steps_done": trained.steps_done}
        write_json(out / "results.json", results)
        code = 143 if trained.extra.get("signal") == "SIGTERM" else verdict.exit_code
        return Outcome(self.name, verdict.verdict, code, verdict.statement(), out, section, detail,
                       section["predictions"], tuple(checks))

    def rejudge(self, run_dir: Path, arrays: dict[str, np.ndarray], out: Path | None = None) -> Outcome:
        from theorycheck.io import read_json

        results = read_json(Path(run_dir) / "results.json", HINT)
        section = results.get(self.name)
        if not isinstance(section, dict) or "inputs" not in section or "verify" not in section:
            raise InputError(f"{str(run_dir)!r} holds no {self.name} run; {HINT}")
        if section["verify"]["verdict"] == "NOT APPLICABLE":
            raise InputError(f"the {self.name} run in {str(run_dir)!r} did not train (NOT APPLICABLE): nothing to judge")
        if not (Path(run_dir) / "checkpoints.npz").is_file():
            raise InputError(f"{str(Path(run_dir) / 'checkpoints.npz')!r} is missing; rerun verify")
        inputs = dict(section["inputs"])
        options = {**{k: inputs.get(k) for k in CORPUS_OPTIONS}, **{k: inputs[k] for k in self.options if k in inputs}}
        if options.get("embeddings") is not None:
            options["embeddings"] = Path(options["embeddings"])
        request = Request(options, frozenset(options), Path(run_dir))  # the stored values, not today's defaults
        corpus = self.load(request)
        if corpus_fingerprint(corpus) != section.get("corpus_fingerprint"):
            raise InputError(f"the input of this run ({inputs.get('input_path') or 'the bundled corpus'}) has changed "
                             "since it was trained; rerun verify")
        data = self.prepare(corpus, request)
        prediction = self.predict(data, request)
        trajectory = self.load_trajectory(data, Path(run_dir) / "checkpoints.npz")
        unknown = set(arrays) - {n for n, _ in self.prediction_arrays}
        if unknown:
            names = ", ".join(n for n, _ in self.prediction_arrays)
            raise InputError(f"{self.name} has no predicted array {', '.join(sorted(unknown))}; it predicts {names}")
        interrupted = section["verify"]["verdict"] == "INCOMPLETE"
        verdict, _ = self.judge(data, prediction, trajectory, request, arrays, interrupted=interrupted)
        detail = verdict.as_dict()
        return Outcome(self.name, verdict.verdict, verdict.exit_code, verdict.statement(), Path(out or run_dir),
                       {**section, "verify": detail}, detail, section.get("predictions", {}),
                       tuple(section.get("assumptions", ())))
