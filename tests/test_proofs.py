"""The proof obligations in proofs/: every one holds, and every one fails when its statement is altered."""

from __future__ import annotations

import pytest

from theorycheck.errors import InputError
from theorycheck.symbolic.obligations import (
    load_obligations,
    proofs_dir,
    run_obligation,
    run_obligations,
    vanishes,
)

OBLIGATIONS = load_obligations()
NAMES = [o.name for o in OBLIGATIONS]

# the lemmas the issue lists, plus the others the pipeline relies on
REQUIRED = {
    "loss-gradient", "hessian-covariance", "orthonormal-split", "finite-lower-bound", "svm-dual",
    "shift-invariance", "path-summation", "svm-orthogonal-sfin", "r-fit", "stable-loss", "farkas",
    "isometric-coordinates", "strong-convexity-radius",
}


def test_every_required_lemma_has_an_obligation_file():
    assert REQUIRED <= set(NAMES)
    assert len(NAMES) == len(set(NAMES))
    for name in NAMES:
        assert (proofs_dir() / f"obligation_{name.replace('-', '_')}.py").exists()


@pytest.mark.parametrize("obligation", OBLIGATIONS, ids=NAMES)
def test_obligation_holds(obligation):
    result = run_obligation(obligation)
    assert result.holds, result.detail
    assert obligation.statement and obligation.scope and obligation.section


@pytest.mark.parametrize("obligation", OBLIGATIONS, ids=NAMES)
def test_obligation_fails_when_its_statement_is_altered(obligation):
    result = run_obligation(obligation, altered=True)
    assert not result.holds, f"{obligation.name} still holds when altered: {result.detail}"
    assert result.detail and not result.detail.startswith("raised")  # a failed check, not a crash


def test_runner_reports_broken_and_raising_files(tmp_path):
    (tmp_path / "obligation_broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "obligation_raises.py").write_text(
        "from theorycheck.symbolic.obligations import Obligation\n"
        "def check(altered=False):\n    raise ValueError('bad')\n"
        "OBLIGATION = Obligation('raises', 'a statement', check)\n")
    (tmp_path / "obligation_wrong_type.py").write_text("OBLIGATION = 42\n")
    results = {r.name: r for r in run_obligations(directory=tmp_path)}
    assert not results["broken"].holds and "RuntimeError: boom" in results["broken"].detail
    assert not results["raises"].holds and "ValueError" in results["raises"].detail
    assert not results["wrong_type"].holds
    with pytest.raises(InputError, match="unknown obligation"):
        run_obligations(names=["nope"], directory=tmp_path)


def test_missing_directory_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="non-editable install"):
        load_obligations(tmp_path / "absent")


def test_vanishes_proves_identities_and_refutes_non_identities():
    import sympy as sp

    x, y = sp.symbols("x y", real=True)
    assert vanishes(sp.exp(2 * x) * sp.exp(-x) ** 2 - 1)
    assert vanishes(sp.log(sp.exp(x) * sp.exp(y)) - x - y)
    assert not vanishes(sp.exp(x) - 1 - x)
    assert not vanishes(sp.exp(x + y) - sp.exp(x) - sp.exp(y))
