"""Tian, Wang, Chen & Du (NeurIPS 2023), "Scan and Snap": THEORY-scansnap.md.

Modules: ``stats`` (sequence classes, co-occurrence, distinct/common tokens,
Assumption 2), ``synthetic`` (the paper's generator), ``model`` (the Y/Z model
and its SGD), ``checks`` (P0-P14 and :func:`run_scansnap`), ``compare`` (both
theories on one corpus), ``report`` (HTML section).
"""


def run_scansnap(*args, **kwargs):
    """theorycheck.scansnap.checks.run_scansnap (imported lazily)."""
    from theorycheck.scansnap.checks import run_scansnap as _run

    return _run(*args, **kwargs)
