"""Falsify outputs: the counterexample as files that ``analyze`` and ``verify`` read, a short
explanation, and falsify.json; and ``replay`` that re-reads and re-scores them.

DIR/counterexample.jsonl  one ``{"context": [...], "next": "t3"}`` per window (query last)
DIR/embeddings.json       ``{"t0": [e_0], ...}`` in token-id order (floats at full precision)
DIR/explanation.md        which criterion broke, by how much, the evidence, the search counts
DIR/falsify.json          schema-versioned summary (no timings: same seed, same bytes)
DIR/trials/*.jsonl        every trial, streamed while the campaign runs

All files are written atomically; the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from theorycheck.errors import InputError
from theorycheck.falsify.candidate import Candidate
from theorycheck.io import SCHEMA_VERSION, write_json, write_text

CORPUS_FILE = "counterexample.jsonl"
EMBEDDINGS_FILE = "embeddings.json"
SUMMARY_FILE = "falsify.json"
EXPLANATION_FILE = "explanation.md"
OUTPUT_FILES = (CORPUS_FILE, EMBEDDINGS_FILE, SUMMARY_FILE, EXPLANATION_FILE)


def corpus_jsonl(c: Candidate) -> str:
    vocab = c.vocab
    lines = [json.dumps({"context": [vocab[t] for t in w], "next": vocab[y]}) for w, y in zip(c.windows, c.labels, strict=True)]
    return "\n".join(lines) + "\n"


def embeddings_json(c: Candidate) -> dict:
    return {tok: list(row) for tok, row in zip(c.vocab, c.E, strict=True)}


def write_counterexample(c: Candidate, out: Path) -> None:
    write_text(out / CORPUS_FILE, corpus_jsonl(c))
    write_json(out / EMBEDDINGS_FILE, embeddings_json(c))


def _size(c: Candidate) -> dict:
    return dict(zip(("samples", "tokens", "dimension", "positions"), c.size_key(), strict=True))


def _headline(outcome: dict) -> dict | None:
    crit = outcome.get("criterion")
    return next((f for f in outcome.get("findings", []) if f["id"] == crit), None)


def _discard_reasons(result) -> dict[str, int]:
    reasons = Counter(r.split(":")[0] for t in result.search_trials if t.status == "discarded"
                      for r in t.outcome["reasons"][:1])
    return dict(sorted(reasons.items()))


def summary(result) -> dict:
    """falsify.json; paths are written as DIR so that the same seed gives the same bytes anywhere."""
    conj = result.conjecture
    final, original = result.final, result.original
    status = "interrupted" if result.interrupted else ("falsified" if result.found else "survived")
    counts = result.counts()
    data = {
        "schema_version": SCHEMA_VERSION,
        "command": "falsify",
        "status": status,
        "conjecture": conj.describe(),
        "seed": result.seed,
        "budget": result.budget,
        "batch": result.batch,
        "shrink_budget": result.shrink_budget,
        "shrink_batch": result.shrink_batch,
        "plugins": list(result.plugins),
        "candidates_tried": len(result.search_trials),
        "candidates_by_phase": {p: sum(t.phase == p for t in result.search_trials) for p in ("random", "targeted")},
        "discarded_for_assumptions": counts["discarded"],
        "discard_reasons": _discard_reasons(result),
        "status_counts": counts,
        "best_violation": None,
        "counterexample": None,
        "original": None,
        "shrinking": {"evaluations": result.shrink_evaluations, "status_counts": result.counts("shrink"),
                      "local_minimum": result.local_minimum, "history": result.history},
        "confirmation": None,
        "unconfirmed": result.unconfirmed,
        "closest": None,
        "trials": "trials/*.jsonl",
    }
    if final is not None:
        head = _headline(final.outcome)
        data["best_violation"] = {"criterion": final.outcome["criterion"], "value": head["value"] if head else None,
                                  "tolerance": head["tolerance"] if head else None,
                                  "relation": head["relation"] if head else None, "score": final.score,
                                  "description": head["description"] if head else None,
                                  "evidence": head["evidence"] if head else {}}
        data["counterexample"] = {"files": {"corpus": CORPUS_FILE, "embeddings": EMBEDDINGS_FILE},
                                  "trial": final.index, "size": _size(final.candidate),
                                  "train_seed": final.candidate.train_seed, "options": dict(final.candidate.options),
                                  "embedding_kind": final.candidate.embedding_kind,
                                  "outcome": final.outcome,
                                  "reproduce": {"verify": conj.reproduce_command(
                                      f"DIR/{CORPUS_FILE}", f"DIR/{EMBEDDINGS_FILE}", final.candidate),
                                      "replay": "theorycheck falsify --replay DIR"}}
        if result.confirmation is not None:
            check = _headline(result.confirmation.outcome)
            data["confirmation"] = {"steps_scale": 2, "status": result.confirmation.status,
                                    "criterion": result.confirmation.outcome["criterion"],
                                    "value": check["value"] if check else None, "score": result.confirmation.score}
        data["original"] = {"trial": original.index, "origin": original.origin, "size": _size(original.candidate),
                            "criterion": original.outcome["criterion"], "score": original.score}
    else:
        scored = [t for t in result.search_trials if t.status not in ("discarded", "error")]
        if scored:
            best = max(scored, key=lambda t: (t.score, -t.index))
            data["closest"] = {**best.summary(), "headline": _headline(best.outcome)}
    return data


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def explanation(result, data: dict, out: Path) -> str:
    conj = result.conjecture
    lines = [f"# theorycheck falsify: `{conj.name}`", "", f"**Conjecture.** {conj.statement}", ""]
    if conj.keeps:
        lines.append("Keeps: " + "; ".join(conj.keeps) + ".")
    if conj.drops:
        lines.append("Drops or changes: " + "; ".join(conj.drops) + ".")
    lines.append("")
    c = data["status_counts"]
    search_line = (f"**Search.** {data['candidates_tried']} candidates tried (seed {result.seed}, budget {result.budget}, "
                   f"{data['candidates_by_phase']['random']} random, {data['candidates_by_phase']['targeted']} targeted): "
                   f"{c['violated']} violated, {c['holds']} held, {c['inconclusive']} inconclusive, "
                   f"{c['discarded']} discarded for breaking the conjecture's assumptions, {c['error']} errors.")
    if result.found:
        bv = data["best_violation"]
        ev = bv["evidence"]
        size = data["counterexample"]["size"]
        state = "Interrupted; best counterexample so far" if result.interrupted else "Falsified"
        lines += [f"**{state}.** Criterion `{bv['criterion']}` broke: {bv['description']}.",
                  f"Measured {_fmt(bv['value'])} at step {ev.get('final_step')}, tolerance {bv['relation']} "
                  f"{_fmt(bv['tolerance'])} (violation score {_fmt(bv['score'])}).", ""]
        lines += ["Evidence that the run settled away from the claimed limit:"]
        if "angle_deg" in ev:
            lines.append(f"- the last increment of the diverging part is {_fmt(ev['angle_deg'])}° from the claimed "
                         f"direction and the run still turns by at most {_fmt(ev.get('turn_bound_deg'))}° (a bound "
                         "fitted to its own turning and checked on its past): its limit is at least "
                         f"{_fmt(ev.get('limit_lower_bound_deg'))}° away;")
        if "remaining_bound" in ev:
            lines.append(f"- the distance still moves by at most {_fmt(ev['remaining_bound'])} (decay fitted to the run);")
        if "alternative" in ev:
            lines.append(f"- the run's direction is {_fmt(ev['alternative_angle_deg'])}° from the {ev['alternative']}.")
        if "relative_residual" in ev:
            lines.append(f"- relative residual ||W - W^fin - ||W|| U||/||W|| = {_fmt(ev['relative_residual'])}.")
        conf = data["confirmation"]
        if conf is not None:
            lines.append(f"- confirmed with twice the training budget: `{conf['criterion']}` = {_fmt(conf['value'])}, "
                         f"still {conf['status']}.")
        else:
            lines.append("- NOT confirmed with twice the training budget (the campaign was interrupted first).")
        lines += ["", search_line, ""]
        o = data["original"]
        lines += [f"**Shrinking.** From trial #{o['trial']} ({o['size']['samples']} samples, {o['size']['tokens']} tokens, "
                  f"d = {o['size']['dimension']}) to {size['samples']} samples, {size['tokens']} tokens, d = "
                  f"{size['dimension']} in {result.shrink_evaluations} evaluations"
                  + (" (a local minimum: no further simplification violates):" if result.local_minimum
                     else " (stopped by --shrink-budget):")]
        lines += [f"- {h['operation']} -> size {h['size']}, score {_fmt(h['score'])}" for h in result.history[1:]] or ["- (no simplification kept)"]
        cand = result.final.candidate
        lines += ["", f"**Counterexample** (`{CORPUS_FILE}`, `{EMBEDDINGS_FILE}`; {cand.embedding_kind} embeddings, "
                  f"training seed {cand.train_seed}" + (f", options {dict(cand.options)}" if cand.options else "") + "):", ""]
        lines += [f"    {' '.join(cand.vocab[t] for t in w)}  ->  {cand.vocab[y]}" for w, y in zip(cand.windows, cand.labels, strict=True)]
        rep = {k: v.replace("DIR", str(out)) if v else v for k, v in data["counterexample"]["reproduce"].items()}
        lines += ["", "**Reproduce.** `" + rep["replay"] + "` re-reads the files and re-scores them."]
        if rep["verify"]:
            lines.append(f"The same run through the verify stage: `{rep['verify']}` (criterion "
                         f"`{data['best_violation']['criterion']}` in {out}/verify/results.json; W_trained.npy and W_svm.npy there "
                         "hold the trained W and the Frobenius W^svm).")
    else:
        lines += ["**Not falsified within the budget.**" if not result.interrupted else "**Interrupted; no counterexample found so far.**",
                  "", search_line]
        if result.unconfirmed:
            lines.append(f"{len(result.unconfirmed)} violation(s) found at the conjecture's budget did not survive twice "
                         "the training budget, so none is reported (see `unconfirmed` in falsify.json).")
        if data["closest"]:
            cl = data["closest"]
            head = cl["headline"]
            if head:
                lines.append(f"Closest attempt: trial #{cl['index']} ({cl['status']}), criterion `{head['id']}` = "
                             f"{_fmt(head['value'])} (tolerance {head['relation']} {_fmt(head['tolerance'])}).")
    lines += ["", "Decision rule (docs/falsify.md): a limit claim is violated only when the final value is beyond the "
              "tolerance *and* the run has settled elsewhere (no logarithmic approach, increments pointing away, and, "
              "where the conjecture names one, closer to the alternative direction); otherwise the trial is inconclusive "
              "and never reported. Candidates that break the conjecture's assumptions are discarded and counted.", ""]
    return "\n".join(lines)


def write_outputs(result, out: Path) -> dict:
    data = summary(result)
    if result.found:
        write_counterexample(result.final.candidate, out)
    else:
        for name in (CORPUS_FILE, EMBEDDINGS_FILE):
            stale = out / name
            if stale.exists() and (out / SUMMARY_FILE).exists():
                stale.unlink()  # from an earlier campaign in this directory (falsify.json proves it is ours)
    write_text(out / EXPLANATION_FILE, explanation(result, data, out))
    write_json(out / SUMMARY_FILE, data)
    return data


def replay(out_dir: str | Path):
    """Re-read DIR/counterexample.jsonl + DIR/embeddings.json with ``load_corpus`` and re-score
    them with the conjecture named in DIR/falsify.json.  Returns (conjecture, candidate, outcome)."""
    from theorycheck.corpus import load_corpus
    from theorycheck.falsify.registry import get_conjecture, load_plugin
    from theorycheck.io import read_json

    out = Path(out_dir)
    hint = "give the --out DIR of an earlier `theorycheck falsify --conjecture NAME` run"
    if not out.is_dir():
        raise InputError(f"--replay {str(out)!r} is not a directory; {hint}")
    if not (out / SUMMARY_FILE).exists():
        raise InputError(f"--replay {str(out)!r} has no {SUMMARY_FILE}; {hint}")
    data = read_json(out / SUMMARY_FILE, hint)
    if not data.get("counterexample"):
        raise InputError(f"{str(out)!r} holds no counterexample (status {data.get('status')!r}); nothing to replay")
    if not isinstance(data.get("conjecture"), dict) or "name" not in data["conjecture"]:
        raise InputError(f"{str(out / SUMMARY_FILE)!r} names no conjecture; {hint}")
    for path in data.get("plugins", []):
        load_plugin(path)
    conj = get_conjecture(data["conjecture"]["name"])
    corpus = load_corpus(out / CORPUS_FILE, embeddings_path=out / EMBEDDINGS_FILE)
    info = data["counterexample"]
    cand = Candidate.from_corpus(corpus, int(info["train_seed"]), info.get("options", {}))
    return conj, cand, conj.evaluate(cand)
