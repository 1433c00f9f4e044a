"""Power of the ntp2024 verdict (THEORY-ntp §5): true predictions must never be VIOLATED, slightly
wrong ones must not HOLD.  Prints one row per dataset and a summary per wrong-prediction family.

    python benchmarks/bench_power_ntp.py [--steps 16000]     (ntp2024's default budget)

Datasets: the bundled corpus (`last` contexts, vocabularies 20, 50 and 100, window 6), Li-style synthetic
corpora with one-hot, orthonormal and unit-norm embeddings (`last` contexts) and the paper example
corpora.  Families: W^mm turned by 5° towards a random direction orthogonal to F and W^mm; W^⋆
× 0.95, × 1.05, + 5 % noise in F, = 0 (where W^⋆ != 0).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from theorycheck.corpus import load_corpus
from theorycheck.theories.ntp2024 import DEFAULT_STEPS
from theorycheck.theories.ntp2024.contexts import build_contexts
from theorycheck.theories.ntp2024.judge import judge_decoder
from theorycheck.theories.ntp2024.predict import predict
from theorycheck.theories.ntp2024.train import train_decoder
from theorycheck.train import TrainConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAMILIES = ("mm_5deg", "star_x0.95", "star_x1.05", "star_noise_5pct", "star_zero")


def datasets():
    for vocab in (20, 50, 100):
        yield f"bundled V={vocab} T=6", (None, {"window": 6, "vocab": vocab})
    for emb in ("orthonormal", "unit-norm"):
        for seed in (1, 2, 3):
            spec = f"synthetic:n=60,T=6,K=12,d=12,embeddings={emb},graphs=cyclic,seed={seed}"
            yield spec, (spec, {})
    for name in ("paper_cyclic_n6T4K6d8", "paper_cyclic_n20T5K6d8", "paper_acyclic_n4T6K8d8"):
        yield name, (str(EXAMPLES / f"{name}.jsonl"), {"embeddings_path": EXAMPLES / f"{name}_embeddings.json"})


def wrong_predictions(pred, rng):
    ctx, F = pred.contexts, pred.finite
    out = {}
    if np.linalg.norm(pred.C_mm) > 0:
        u = pred.C_mm / np.linalg.norm(pred.C_mm)
        N = rng.standard_normal(u.shape)
        N -= F.project(N)
        N -= np.sum(N * u) * u
        if np.linalg.norm(N) > 0:
            N /= np.linalg.norm(N)
            t = np.radians(5.0)
            out["mm_5deg"] = {"W_mm": ctx.to_matrix(np.linalg.norm(pred.C_mm) * (np.cos(t) * u + np.sin(t) * N))}
    star = pred.W_star
    if np.linalg.norm(star) > 0:
        noise = ctx.to_matrix(F.project(rng.standard_normal(pred.C_star.shape)))
        noise *= 0.05 * np.linalg.norm(star) / np.linalg.norm(noise)
        out.update({"star_x0.95": {"W_star": 0.95 * star}, "star_x1.05": {"W_star": 1.05 * star},
                    "star_noise_5pct": {"W_star": star + noise}, "star_zero": {"W_star": 0 * star}})
    return out


ERROR_SIZE = {"mm_5deg": ("direction", 5.0), "star_x0.95": ("finite_part", 5.0), "star_x1.05": ("finite_part", 5.0),
              "star_noise_5pct": ("finite_part", 5.0), "star_zero": ("finite_part", 100.0)}


def run(config: TrainConfig) -> dict:
    """Judge every dataset's true and wrong predictions; rows, tallies, false alarms, wrong HOLDs and
    wrong predictions left open although finer than the run's stated resolution."""
    rows, truth = [], Counter()
    tally: dict[str, Counter] = {f: Counter() for f in FAMILIES}
    open_beyond = []
    for name, (spec, kwargs) in datasets():
        pred = predict(build_contexts(load_corpus(spec, **kwargs), "last"))
        if not pred.applicable:
            rows.append((name, None, "NOT APPLICABLE", {}, {}))
            continue
        _, traj = train_decoder(pred.contexts, config)
        verdict, _ = judge_decoder(traj, pred, config)
        truth[verdict.verdict] += 1
        cells = {}
        for family, wrong in wrong_predictions(pred, np.random.default_rng(0)).items():
            v, _ = judge_decoder(traj, pred, config, with_resolution=False, **wrong)
            tally[family][v.verdict] += 1
            cells[family] = v.verdict
            criterion, size = ERROR_SIZE[family]
            resolved = verdict.resolution.get(criterion)
            if v.verdict == "INCONCLUSIVE" and resolved is not None and resolved < size:
                open_beyond.append((name, family))
        rows.append((name, pred.contexts.m, verdict.verdict, verdict.resolution, cells))
    return {"rows": rows, "truth": truth, "tally": tally, "false_alarms": truth["VIOLATED"],
            "wrong_held": sum(c["HOLDS"] for c in tally.values()), "open_beyond_resolution": open_beyond}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    args = parser.parse_args()
    config = TrainConfig(steps=args.steps)
    t0 = time.perf_counter()
    out = run(config)
    print(f"# ntp2024 power: ngd, lr {config.lr} inverse schedule from {config.decay_from}, {config.steps} steps\n")
    print("| dataset | contexts | true prediction | direction res. (°) | W^⋆ res. (%) | " + " | ".join(FAMILIES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(FAMILIES))
    fmt = lambda x: "—" if x is None else f"{x:.2g}"  # noqa: E731
    for name, m, verdict, res, cells in out["rows"]:
        print(f"| {name} | {m if m is not None else '—'} | {verdict} | {fmt(res.get('direction'))} | "
              f"{fmt(res.get('finite_part'))} | " + " | ".join(cells.get(f, "n/a") for f in FAMILIES) + " |")
    print(f"\ntrue predictions: {dict(out['truth'])} (VIOLATED would be a false alarm)")
    for family, c in out["tally"].items():
        n = sum(c.values())
        print(f"{family}: {n} judged, {c['VIOLATED']} VIOLATED ({100 * c['VIOLATED'] / max(n, 1):.0f} %), "
              f"{c['HOLDS']} HOLD (must be 0), {c['INCONCLUSIVE']} INCONCLUSIVE")
    print(f"open although finer than the stated resolution: {out['open_beyond_resolution'] or 'none'}")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
