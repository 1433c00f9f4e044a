"""Exceptions that carry the CLI's exit-code contract.

Exit codes (DESIGN.md): 0 predictions hold, 1 violated, 2 bad input or usage,
3 the theorem does not apply (an assumption fails).
"""

from __future__ import annotations

# the fix named wherever dependent (or nearly dependent) embeddings exceed a solver's reach
DEPENDENT_EMBEDDINGS_FIX = ("The theorem assumes linearly independent embeddings: use embeddings of dimension "
                            "d >= the vocabulary size (or one-hot: omit --embeddings), or a smaller --vocab or "
                            "--window")


class TheoryCheckError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(TheoryCheckError):
    """Bad input or usage. The message names the problem and the fix."""

    exit_code = 2


class AssumptionViolated(TheoryCheckError):
    """The data breaks an assumption of the theorem (e.g. Graph-SVM infeasible).

    ``certificate`` holds machine-checkable evidence when one exists.
    """

    exit_code = 3

    def __init__(self, message: str, certificate: dict | None = None):
        super().__init__(message)
        self.certificate = certificate or {}
