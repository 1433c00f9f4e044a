"""Reports from a results directory: report.html (self-contained) and summary.md.

The report is rendered from the files of the directory only (results.json, trajectory.json,
the .npy arrays, optionally scansnap.json), so ``theorycheck report --from DIR`` reproduces
what a fresh ``theorycheck report INPUT --out DIR`` wrote, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from theorycheck.errors import InputError
from theorycheck.report.data import ReportData, load_results_dir


@dataclass(frozen=True)
class Report:
    html: str
    markdown: str
    exit_code: int  # the verify verdict's (analyze's for a directory without training)
    verdict: str


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    report: Report


def scansnap_section(data: ReportData) -> tuple[str | None, str | None]:
    """(HTML section, note) for a scansnap.json next to results.json, if any."""
    if data.scansnap is None:
        return None, None
    try:
        from theorycheck.scansnap.report import scansnap_html_section
    except ImportError:
        return None, ("scansnap.json is present, but this installation has no Scan-and-Snap report section "
                      "(theorycheck.scansnap.report); its results are in scansnap.json.")
    return scansnap_html_section(data.scansnap, None), None  # None: figures inlined, no files written


def build_report(data: ReportData) -> Report:
    from theorycheck.report.data import compare_windows
    from theorycheck.report.figures import all_figures
    from theorycheck.report.html import render_html, verdict_of
    from theorycheck.report.markdown import render_markdown

    rows = compare_windows(data)
    figures = all_figures(data, rows)
    section, note = scansnap_section(data)
    return Report(render_html(data, figures, rows, section, note), render_markdown(data, rows),
                  data.exit_code, verdict_of(data))


def write_report(results_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Render the report of ``results_dir`` into ``out_dir`` (default: the same directory)
    as report.html and summary.md, each written atomically."""
    from theorycheck.io import (
        LI_OUTPUTS,
        REPORT_OUTPUTS,
        check_not_inputs,
        prepare_out_dir,
        write_text,
    )

    data = load_results_dir(results_dir)
    src = Path(results_dir)
    inputs = [src / name for name in (*LI_OUTPUTS, "scansnap.json") if name not in REPORT_OUTPUTS]
    if out_dir is None:
        out = src
        check_not_inputs([out / name for name in REPORT_OUTPUTS], inputs)
    else:
        out = prepare_out_dir(out_dir, inputs, REPORT_OUTPUTS)
        if out.resolve() != src.resolve() and (out / "results.json").exists():
            raise InputError(f"--out {str(out_dir)!r} holds the results of another run; a report beside them would "
                             f"mix two runs: choose an empty directory or --out {str(results_dir)!r}")
    report = build_report(data)
    write_text(out / "report.html", report.html)
    write_text(out / "summary.md", report.markdown)
    return ReportFiles(out / "report.html", out / "summary.md", report)


__all__ = ["Report", "ReportData", "ReportFiles", "build_report", "load_results_dir", "write_report"]
