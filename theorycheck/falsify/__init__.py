"""Counterexample search for conjectures about attention's implicit bias (`theorycheck falsify`).

See docs/falsify.md.  Public API: :class:`Conjecture`, :func:`register_conjecture`,
:func:`get_conjecture`, :func:`list_conjectures`, :func:`load_plugin`, :class:`Candidate`.
"""

from theorycheck.falsify.candidate import Candidate, make_candidate, random_candidate
from theorycheck.falsify.registry import (
    Conjecture,
    Outcome,
    get_conjecture,
    list_conjectures,
    load_entry_points,
    load_plugin,
    register_conjecture,
)

__all__ = [
    "Candidate",
    "Conjecture",
    "Outcome",
    "get_conjecture",
    "list_conjectures",
    "load_entry_points",
    "load_plugin",
    "make_candidate",
    "random_candidate",
    "register_conjecture",
]
