"""Proof obligations: the lemmas of THEORY.md that the pipeline relies on, checked with sympy.

Each file ``proofs/obligation_<name>.py`` at the repository root defines

    OBLIGATION = Obligation(name, statement, check, section, scope)

where ``check(altered=False)`` returns ``(holds, detail)``.  With ``altered=True`` the
check runs on a deliberately wrong variant of the statement (a dropped term, a missing
hypothesis, a transposed convention), which must fail: that shows the check can fail.
The files live outside the package (they are documentation that runs); an installed,
non-editable copy of theorycheck has no ``proofs/`` and says so.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from theorycheck.errors import InputError


@dataclass(frozen=True)
class Obligation:
    name: str
    statement: str
    check: Callable[..., tuple[bool, str]]
    section: str = ""  # THEORY.md section
    scope: str = ""  # what is proved in general and what on a symbolic instance


@dataclass(frozen=True)
class ObligationResult:
    name: str
    statement: str
    section: str
    scope: str
    holds: bool
    detail: str
    seconds: float
    altered: bool = False

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "section", "statement", "scope", "holds", "detail",
                                              "seconds", "altered")}


def proofs_dir() -> Path:
    """``proofs/`` next to the package (an editable install or a source checkout)."""
    import theorycheck

    return Path(theorycheck.__file__).resolve().parents[1] / "proofs"


def _broken(path: Path, error: Exception) -> Obligation:
    def check(altered: bool = False) -> tuple[bool, str]:
        return False, f"could not load {path.name}: {type(error).__name__}: {error}"

    return Obligation(path.stem.removeprefix("obligation_"), "(file failed to load)", check)


def load_obligations(directory: str | Path | None = None) -> list[Obligation]:
    """Every ``obligation_*.py`` in ``directory`` (default :func:`proofs_dir`), sorted by file name."""
    directory = Path(directory) if directory is not None else proofs_dir()
    if not directory.is_dir():
        raise InputError(
            f"no proof obligations found: {str(directory)!r} does not exist. They ship with the source "
            "tree, not with a non-editable install; run from a checkout (pip install -e .)"
        )
    out = []
    for path in sorted(directory.glob("obligation_*.py")):
        try:
            spec = importlib.util.spec_from_file_location(f"theorycheck_proofs.{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            obligation = module.OBLIGATION
            if not isinstance(obligation, Obligation):
                raise TypeError("OBLIGATION is not a theorycheck.symbolic.obligations.Obligation")
        except Exception as exc:  # noqa: BLE001 - a broken file is a failed obligation, not a crash
            obligation = _broken(path, exc)
        out.append(obligation)
    if not out:
        raise InputError(f"{str(directory)!r} holds no obligation_*.py files")
    return out


def run_obligation(obligation: Obligation, altered: bool = False) -> ObligationResult:
    t0 = time.perf_counter()
    try:
        holds, detail = obligation.check(altered=altered)
        holds = bool(holds)
    except Exception as exc:  # noqa: BLE001 - an exception means the obligation was not discharged
        holds, detail = False, f"raised {type(exc).__name__}: {exc}"
    return ObligationResult(obligation.name, obligation.statement, obligation.section, obligation.scope,
                            holds, str(detail), time.perf_counter() - t0, altered)


def run_obligations(names: list[str] | None = None, altered: bool = False,
                    directory: str | Path | None = None) -> list[ObligationResult]:
    """Run the obligations (all, or those in ``names``); unknown names are an input error."""
    obligations = load_obligations(directory)
    if names:
        known = {o.name for o in obligations}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"unknown obligation(s) {unknown}; choose from {', '.join(sorted(known))}")
        obligations = [o for o in obligations if o.name in names]
    return [run_obligation(o, altered) for o in obligations]


def vanishes(expr) -> bool:
    """True when sympy proves ``expr`` identically zero.

    First every exp(n x) atom (n an integer) is replaced by X^n for an independent positive
    symbol X per x and the rational function is cancelled (sound: an identity in independent
    symbols stays one after substituting the true values); then a non-zero value at a
    rational sample point refutes it; finally ``sympy.simplify``.
    """
    import sympy as sp

    expr = sp.sympify(expr)
    symbols: dict = {}
    replace = {}
    for atom in expr.atoms(sp.exp):
        power, base = atom.args[0].as_content_primitive()
        if base.could_extract_minus_sign():
            power, base = -power, -base
        if not power.is_integer:
            power, base = 1, atom.args[0]
        symbols.setdefault(base, sp.Dummy(positive=True))
        replace[atom] = symbols[base] ** power
    if sp.cancel(sp.together(expr.xreplace(replace))) == 0:
        return True
    # a non-zero value at a sample point refutes the identity without simplify
    free = sorted(expr.free_symbols, key=str)
    point = {x: sp.Rational(3 + 2 * i, 7 + i) for i, x in enumerate(free)}
    try:
        value = complex(expr.subs(point).evalf(30))
    except (TypeError, ValueError, ZeroDivisionError):
        value = 0.0  # a pole at the sample point: inconclusive
    if abs(value) > 1e-20:
        return False
    return sp.simplify(expr) == 0


def all_vanish(exprs) -> bool:
    return all(vanishes(e) for e in exprs)
