"""The report of `theorycheck report --theory NAME|all`: every theory side by side.

DIR/theories.json indexes the runs (one subdirectory per theory for ``all``); DIR/report.html and
DIR/summary.md show, per theory, what it predicts and whether it held, and for those that do not
apply, why.  Each theory renders its own section (Theory.report_section).
"""

from __future__ import annotations

from pathlib import Path

from theorycheck.errors import InputError

INDEX = "theories.json"
VERDICT_ORDER = {"VIOLATED": 1, "INCONCLUSIVE": 4, "INCOMPLETE": 130, "HOLDS": 0, "NOT APPLICABLE": 3}


def combined_exit_code(entries: list[dict]) -> int:
    """1 if a theory is VIOLATED; else 4 if one is INCONCLUSIVE; else 0 if one HOLDS; else 3 if
    none applies; 2 if every theory failed on bad input."""
    verdicts = [e["verdict"] for e in entries]
    for verdict, code in (("INCOMPLETE", 130), ("VIOLATED", 1), ("INCONCLUSIVE", 4), ("HOLDS", 0), ("NOT APPLICABLE", 3)):
        if verdict in verdicts:
            return code
    return 2


def entry_of(outcome, subdir: str) -> dict:
    return {"theory": outcome.theory, "verdict": outcome.verdict, "exit_code": outcome.exit_code,
            "statement": outcome.statement, "directory": subdir, "predictions": outcome.predictions,
            "assumptions": [dict(a) for a in outcome.assumptions]}


def failed_entry(name: str, message: str) -> dict:
    return {"theory": name, "verdict": "ERROR", "exit_code": 2, "statement": f"not run: {message}", "directory": None,
            "predictions": {}, "assumptions": []}


def _results_of(results_dir: Path, theory_name: str) -> dict:
    from theorycheck.io import read_json

    name = "scansnap.json" if theory_name == "tian2023" else "results.json"
    return read_json(results_dir / name, "rerun `theorycheck report --theory ...`")


def render(index: dict, root: Path) -> tuple[str, str]:
    """(HTML, Markdown) of the side-by-side report from DIR/theories.json and the runs it names."""
    from theorycheck.report.html import CSS, esc, table
    from theorycheck.theories import installed

    theories, _ = installed()
    entries = index["theories"]
    code = combined_exit_code(entries)
    source = index.get("source", "")
    rows, md_rows, sections, md_sections = [], [], [], []
    for e in entries:
        theory = theories.get(e["theory"])
        failing = [a["name"] for a in e["assumptions"] if a.get("holds") is False]
        why = ("; ".join(failing) + " fail") if failing and e["verdict"] == "NOT APPLICABLE" else ""
        headline = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in e["predictions"].items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        rows.append([f"<code>{esc(e['theory'])}</code>", esc(theory.citation if theory else ""), esc(headline or "—"),
                     f"<b>{esc(e['verdict'])}</b>", esc(e["statement"]) + (f"<br><em>{esc(why)}</em>" if why else "")])
        md_rows.append(f"| {e['theory']} | {headline or '—'} | {e['verdict']} | {e['statement']} |")
        if e["directory"] is None or theory is None:
            continue
        section = theory.report_section(_results_of(root / e["directory"], e["theory"]))
        sections.append(f'<h2 id="{esc(e["theory"])}">{esc(section.title)}</h2>'
                        f'<p class="muted">Results: <code>{esc(e["directory"])}/</code></p>{section.html}')
        md_sections.append(f"## {section.title}\n\nResults: `{e['directory']}/`\n\n{section.markdown}")
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>theorycheck report: theories side by side</title><style>{CSS}</style></head><body><main>",
            "<h1>theorycheck report: theories side by side</h1>",
            f'<p class="sub">On <strong>{esc(source)}</strong>; exit code {code} (1 if a theory is violated, 4 if one '
            "is inconclusive, 0 if one holds and none fails, 3 if none applies).</p>",
            table(["theory", "citation", "predicts", "verdict", "what it holds to / why not"], rows),
            *sections, "</main></body></html>\n"]
    md = ["# theorycheck report: theories side by side", "", f"On {source}; exit code {code}.", "",
          "| theory | predicts | verdict | statement |", "|---|---|---|---|", *md_rows, "", *md_sections]
    return "\n".join(page), "\n".join(md) + "\n"


def write(root: Path, index: dict) -> tuple[Path, Path]:
    from theorycheck.io import write_json, write_text

    write_json(root / INDEX, index)
    html, md = render(index, root)
    write_text(root / "report.html", html)
    write_text(root / "summary.md", md)
    return root / "report.html", root / "summary.md"


def load_index(root: Path) -> dict | None:
    from theorycheck.io import read_json

    if not (root / INDEX).is_file():
        return None
    index = read_json(root / INDEX, "rerun `theorycheck report --theory ...`")
    if not isinstance(index.get("theories"), list):
        raise InputError(f"{str(root / INDEX)!r} is not a theorycheck index; rerun `theorycheck report --theory ...`")
    return index
