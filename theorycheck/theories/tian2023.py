"""tian2023: Tian, Wang, Chen & Du (NeurIPS 2023), "Scan and Snap" (THEORY-scansnap.md), behind the
theory interface.  The checks P0-P14 and the output files are `theorycheck scan-snap`'s, with its
default options; `scan-snap` itself stays the command with every knob."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from theorycheck.errors import InputError
from theorycheck.theories.base import ReportSection, Request, Theory

VERDICT = {"HOLDS": "HOLDS", "VIOLATED": "VIOLATED", "NOT APPLICABLE": "NOT APPLICABLE"}


class Tian2023(Theory):
    name = "tian2023"
    title = "Scan and Snap dynamics of a 1-layer transformer (Tian et al. 2023)"
    citation = ("Y. Tian, Y. Wang, B. Chen, S. Du, Scan and Snap: Understanding Training Dynamics and Token "
                "Composition in 1-layer Transformer, NeurIPS 2023")
    summary = ("SGD on the Y/Z model (decoder Y, attention logits Z, no positional encoding): attention scans "
               "towards distinct tokens and snaps (freezes) at a rate set by the learning rates (checks P0-P14).")
    assumption_names = (
        ("next_token_determines_query", "each next token follows one query only (the paper's data model)"),
        ("classes_sampled_uniformly", "every sequence class is about equally frequent"),
        ("per-check preconditions", "each check P0-P14 states its own; a check whose preconditions fail is N/A"),
    )
    prediction_arrays = ()
    options = frozenset({"seed"})

    def run(self, request: Request):
        from dataclasses import replace

        from theorycheck.commands.common import load_input
        from theorycheck.commands.scan_snap import (
            check_finite,
            check_outputs,
            is_scansnap_spec,
            load_scansnap_input,
            save_results,
        )
        from theorycheck.scansnap.checks import ScanSnapOptions, run_scansnap
        from theorycheck.theories.base import Outcome

        o = request.options
        out_dir = check_outputs(request.out, o["input_path"], o["input_format"])
        if is_scansnap_spec(o["input_path"]):
            corpus = load_scansnap_input(o["input_path"], o["seed"], o["window"], o["vocab"], o["unit"], o["oov"],
                                         o["input_format"])
        else:  # the same corpus as every other theory (the bundled one when INPUT is omitted)
            corpus = load_input(o["input_path"], o["window"], o["vocab"], o["unit"], o["oov"], o["embeddings"],
                                o["input_format"])
        opt = ScanSnapOptions(seed=o["seed"], progress=False, campaign_log=str(out_dir / "scansnap_campaign.jsonl"))
        result = run_scansnap(corpus, replace(opt))
        check_finite(result)
        save_results(result, out_dir, html=True)
        res = result.results
        verdict = res["verdict"]
        outcome = VERDICT.get(verdict["outcome"], verdict["outcome"])
        checks = res.get("checks", {})
        violated = ", ".join(verdict.get("violated", [])) or "none"
        statement = (f"{outcome}: {len(verdict.get('applicable', []))} of {len(checks)} checks applicable, "
                     f"violated: {violated}")
        assumptions = tuple({"name": cid, "holds": c["outcome"] != "NOT APPLICABLE", "detail": c.get("reason") or c["name"]}
                            for cid, c in checks.items())
        summary = {"checks": len(checks), "applicable": len(verdict.get("applicable", [])),
                   "violated": verdict.get("violated", [])}
        return Outcome(self.name, outcome, result.exit_code, statement, out_dir, res, None, summary, assumptions)

    def render(self, outcome) -> None:
        """scan-snap's console output (its checks table and verdict)."""
        from theorycheck.commands.common import console
        from theorycheck.commands.scan_snap import render

        render(outcome.section)
        console.print(f"wrote {outcome.out_dir}/scansnap.json, scansnap.html")

    def rejudge(self, run_dir: Path, arrays: dict[str, np.ndarray], out: Path | None = None):
        raise InputError("tian2023's checks are judged while training (scan-snap); `judge` re-judges li2024 and "
                         "ntp2024 runs")

    def report_section(self, results: dict) -> ReportSection:
        from theorycheck.scansnap.report import scansnap_html_section

        verdict = results.get("verdict", {})
        md = (f"**{verdict.get('outcome')}**: applicable {', '.join(verdict.get('applicable', [])) or 'none'}; "
              f"violated {', '.join(verdict.get('violated', [])) or 'none'}\n")
        return ReportSection(self.title, scansnap_html_section(results, None), md)


THEORY = Tian2023()
