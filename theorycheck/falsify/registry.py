"""The conjecture registry: conjectures as data, built-in and user-supplied.

A conjecture is a subclass of :class:`Conjecture` with a name, a statement, the
assumptions it keeps and drops, a generator of candidate datasets and an ``evaluate``
that turns one candidate into an :class:`Outcome` (holds / violated / inconclusive /
discarded).  Register one with the decorator::

    from theorycheck.falsify import Conjecture, register_conjecture

    @register_conjecture
    class Mine(Conjecture):
        name = "my-conjecture"
        statement = "..."
        ...

User modules are loaded by file path (``--plugin path/to/module.py``): the module is
imported with importlib (it is the user's own code, run as code; no data is evaluated)
and registers its conjectures on import.  Installed packages may also expose modules in
the ``theorycheck.conjectures`` entry-point group.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from theorycheck.errors import InputError
from theorycheck.falsify.candidate import Candidate, mutate, shrink_steps
from theorycheck.falsify.evidence import DISCARDED, Finding

ENTRY_POINT_GROUP = "theorycheck.conjectures"


@dataclass(frozen=True)
class Outcome:
    """The judgement of one candidate."""

    status: str  # holds / violated / inconclusive / discarded / error
    score: float  # violation score: > 0 beyond tolerance (targeted search maximises it)
    criterion: str | None = None  # headline criterion id
    findings: tuple[Finding, ...] = ()
    reasons: tuple[str, ...] = ()  # why discarded (assumptions broken) or the error
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["findings"] = [f.as_dict() for f in self.findings]
        out["reasons"] = list(self.reasons)
        return out

    @property
    def headline(self) -> Finding | None:
        return next((f for f in self.findings if f.id == self.criterion), None)


def discarded(reasons: list[str]) -> Outcome:
    return Outcome(DISCARDED, -np.inf, None, (), tuple(reasons))


class Conjecture:
    """Base class.  Subclasses set the class attributes and implement ``generate`` and
    ``evaluate``; ``assumption_failures``, ``mutate`` and ``shrink_steps`` have defaults."""

    name: str = ""
    statement: str = ""
    keeps: tuple[str, ...] = ()  # assumptions of Li et al. (2024) kept
    drops: tuple[str, ...] = ()  # assumptions dropped or changed
    expected: str = "open"  # documentation only: "holds" (a control), "fails", "open"
    reference: str = ""

    def generate(self, rng: np.random.Generator) -> Candidate:
        raise NotImplementedError

    def assumption_failures(self, candidate: Candidate) -> list[str]:
        """The stated assumptions this candidate breaks (empty list: it may be tested)."""
        return []

    def evaluate(self, candidate: Candidate, steps_scale: int = 1) -> Outcome:
        """Judge one candidate.  ``steps_scale`` multiplies the training budget: the search
        confirms a counterexample at twice the budget before reporting it."""
        raise NotImplementedError

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> tuple[str, Candidate]:
        return mutate(candidate, rng)

    def shrink_steps(self, candidate: Candidate):
        return shrink_steps(candidate)

    def reproduce_command(self, jsonl: str, embeddings: str, candidate: Candidate) -> str | None:
        """A ``theorycheck verify`` command line that re-runs the counterexample, if one exists."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "statement": self.statement, "keeps": list(self.keeps),
                "drops": list(self.drops), "expected": self.expected, "reference": self.reference}


_REGISTRY: dict[str, Conjecture] = {}
_LOADED_PLUGINS: dict[str, str] = {}
_ENTRY_POINTS_LOADED: list[bool] = []


def register_conjecture(cls: type[Conjecture] | None = None, *, replace: bool = False):
    """Class decorator: instantiate ``cls`` and register it under ``cls.name``."""

    def add(klass: type[Conjecture]) -> type[Conjecture]:
        if not (isinstance(klass, type) and issubclass(klass, Conjecture)):
            raise InputError("@register_conjecture decorates a subclass of theorycheck.falsify.Conjecture")
        name = getattr(klass, "name", "")
        if not name or not isinstance(name, str) or any(ch.isspace() for ch in name):
            raise InputError(f"conjecture class {klass.__name__} needs a non-empty `name` without spaces")
        existing = _REGISTRY.get(name)
        if existing is not None and not replace and type(existing).__qualname__ != klass.__qualname__:
            raise InputError(f"a conjecture named {name!r} is already registered; choose another name")
        _REGISTRY[name] = klass()
        return klass

    return add(cls) if cls is not None else add


def _ensure_builtins() -> None:
    import theorycheck.falsify.conjectures  # noqa: F401  (registers the built-ins)

    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED.append(True)
        load_entry_points()


def get_conjecture(name: str) -> Conjecture:
    _ensure_builtins()
    if name not in _REGISTRY:
        raise InputError(f"unknown conjecture {name!r}; use one of {', '.join(sorted(_REGISTRY))} "
                         "(or load yours with --plugin module.py)")
    return _REGISTRY[name]


def list_conjectures() -> list[Conjecture]:
    _ensure_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def load_plugin(path: str | Path) -> list[str]:
    """Import a user module by file path; returns the names it registered.

    Loading the same file twice is a no-op (workers of a campaign load it once each)."""
    _ensure_builtins()
    path = Path(path).resolve()
    key = str(path)
    if key in _LOADED_PLUGINS:
        return [n for n, conj in _REGISTRY.items() if getattr(type(conj), "__module__", "") == _LOADED_PLUGINS[key]]
    if not path.is_file() or path.suffix != ".py":
        raise InputError(f"--plugin {str(path)!r} is not a Python file; give the path of a module.py")
    module_name = "theorycheck_plugin_" + hashlib.sha1(key.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    before = set(_REGISTRY)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except InputError:
        del sys.modules[module_name]
        raise
    except Exception as exc:
        del sys.modules[module_name]
        raise InputError(f"importing plugin {str(path)!r} failed: {type(exc).__name__}: {exc}") from None
    _LOADED_PLUGINS[key] = module_name
    added = sorted(set(_REGISTRY) - before)
    if not added:
        raise InputError(f"plugin {str(path)!r} registered no conjecture; decorate a Conjecture subclass "
                         "with @register_conjecture")
    return added


def load_entry_points() -> list[str]:
    """Import the modules installed packages advertise in the ``theorycheck.conjectures``
    entry-point group (done once, automatically, by the registry look-ups)."""
    from importlib.metadata import entry_points

    before = set(_REGISTRY)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"conjecture entry point {ep.name!r} ({ep.value}) failed to load: "
                             f"{type(exc).__name__}: {exc}; fix or uninstall that package") from None
    return sorted(set(_REGISTRY) - before)
