"""Tian, Wang, Chen & Du (NeurIPS 2023), "Scan and Snap": THEORY-scansnap.md.

Modules: ``stats`` (sequence classes, co-occurrence, distinct/common tokens,
Assumption 2), ``synthetic`` (the paper's generator), ``model`` (the Y/Z model
and its SGD), ``checks`` (P0-P14 and :func:`run_scansnap`), ``compare`` (both
theories on one corpus), ``report`` (HTML section).
"""


__all__ = ["ScanSnapOptions", "run_scansnap"]


def __getattr__(name: str):
    """``run_scansnap`` and ``ScanSnapOptions`` from ``checks``, imported on first use."""
    if name in __all__:
        from theorycheck.scansnap import checks

        return getattr(checks, name)
    raise AttributeError(f"module 'theorycheck.scansnap' has no attribute {name!r}")
