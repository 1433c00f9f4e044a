"""Symbolic layer: exact certificates for the numeric predictions and proof obligations.

* :func:`~theorycheck.symbolic.svm_certificate.certify_svm`: exact KKT certificate of W^svm.
* :func:`~theorycheck.symbolic.farkas.certify_infeasibility`: exact Farkas certificate.
* :func:`~theorycheck.symbolic.finite_bound.certify_finite`: certified radius around W^fin.
* :func:`~theorycheck.symbolic.obligations.run_obligations`: the sympy proof obligations in ``proofs/``.

See docs/certificates.md.
"""

from __future__ import annotations


def certify_predictions(pred) -> dict:
    """All certificates for a :class:`theorycheck.predictions.Predictions`, as JSON-ready dicts.

    Keys: ``svm`` (or None when infeasible), ``infeasibility`` (or None when feasible),
    ``finite``, and ``summary`` ("certified" | "rejected" | "partial": something was
    too large or could not be certified).
    """
    from theorycheck.symbolic.farkas import certify_infeasibility
    from theorycheck.symbolic.finite_bound import certify_finite
    from theorycheck.symbolic.svm_certificate import certify_svm

    corpus, graphs, vocab = pred.corpus, pred.graphs, pred.corpus.vocab
    out: dict = {"svm": None, "infeasibility": None}
    statuses = []
    if pred.svm is not None:
        svm = certify_svm(corpus.E, graphs, pred.svm.W, vocab=vocab)
        out["svm"] = svm.to_json(vocab)
        statuses.append(svm.status)
    if pred.infeasibility:
        farkas = certify_infeasibility(corpus.E, graphs, pred.infeasibility)
        out["infeasibility"] = farkas.to_json(vocab)
        statuses.append(farkas.status)
    finite = certify_finite(corpus, graphs, pred.finite.W, pred.subspace)
    out["finite"] = finite.to_json()
    statuses.append("certified" if finite.certified else finite.status)
    if "rejected" in statuses:
        out["summary"] = "rejected"
    elif all(s == "certified" for s in statuses):
        out["summary"] = "certified"
    else:
        out["summary"] = "partial"
    return out
