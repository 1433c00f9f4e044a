"""theorycheck: check the theory of how self-attention learns next-token prediction.

Public API: :func:`analyze` (corpus -> Predictions).  See README.md.
"""

__version__ = "0.1.0"


def analyze(*args, **kwargs):
    """theorycheck.predictions.analyze (imported lazily to keep ``import theorycheck`` light)."""
    from theorycheck.predictions import analyze as _analyze

    return _analyze(*args, **kwargs)
