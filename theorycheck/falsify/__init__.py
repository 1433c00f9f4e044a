"""Counterexample search for conjectures about attention's implicit bias (`theorycheck falsify`).

See docs/falsify.md.  Writing a conjecture: subclass :class:`Conjecture` (or
:class:`LiClaims` / :class:`TrainedConjecture` to reuse the verify stage's trainer and
the evidence rules), decorate it with :func:`register_conjecture`, and load the module
with ``--plugin path/to/module.py``.
"""

from theorycheck.falsify.candidate import Candidate, make_candidate, random_candidate
from theorycheck.falsify.conjectures import (
    LiClaims,
    TrainedConjecture,
    analyze_candidate,
    li_assumption_failures,
)
from theorycheck.falsify.evidence import (
    DISCARDED,
    HOLDS,
    INCONCLUSIVE,
    VIOLATED,
    Finding,
    direction_claim,
    distance_claim,
)
from theorycheck.falsify.output import replay
from theorycheck.falsify.registry import (
    Conjecture,
    Outcome,
    discarded,
    get_conjecture,
    list_conjectures,
    load_entry_points,
    load_plugin,
    register_conjecture,
)
from theorycheck.falsify.search import FalsifyResult, falsify

__all__ = [
    "DISCARDED",
    "HOLDS",
    "INCONCLUSIVE",
    "VIOLATED",
    "Candidate",
    "Conjecture",
    "FalsifyResult",
    "Finding",
    "LiClaims",
    "Outcome",
    "TrainedConjecture",
    "analyze_candidate",
    "direction_claim",
    "discarded",
    "distance_claim",
    "falsify",
    "get_conjecture",
    "li_assumption_failures",
    "list_conjectures",
    "load_entry_points",
    "load_plugin",
    "make_candidate",
    "random_candidate",
    "register_conjecture",
    "replay",
]
