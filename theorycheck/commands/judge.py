"""`theorycheck judge`: judge a trained run again, against other predictions, without retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from theorycheck.commands.common import console, handle_errors
from theorycheck.errors import InputError

HINT = "give the --out DIR of `theorycheck verify` (or `report`)"


def load_run(run_dir: Path):
    """(predictions, trajectory, config, heldout, stored results) of a verify run, rebuilt from its
    inputs and checked against the stored corpus fingerprint."""
    from theorycheck.commands.analyze import split_holdout
    from theorycheck.commands.common import load_input
    from theorycheck.commands.verify import corpus_fingerprint
    from theorycheck.io import read_json
    from theorycheck.predictions import analyze
    from theorycheck.train import TrainConfig
    from theorycheck.verify import Trajectory, build_heldout

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{str(run_dir)!r} is not a directory; {HINT}")
    results = read_json(run_dir / "results.json", HINT)
    run = results.get("verify")
    if not isinstance(run, dict) or "inputs" not in run or "config" not in run:
        raise InputError(f"{str(run_dir)!r} holds no verify run (results.json has no verify section with its "
                         f"inputs); {HINT}")
    if not (run_dir / "checkpoints.npz").is_file():
        raise InputError(f"{str(run_dir / 'checkpoints.npz')!r} is missing; rerun `theorycheck verify ... --out {run_dir}`")
    inputs = run["inputs"]
    try:
        config = TrainConfig(**{k: (tuple(v) if k == "adam_betas" else v) for k, v in run["config"].items()}).validate()
    except TypeError as exc:
        raise InputError(f"results.json has a training configuration this version cannot read ({exc}); rerun verify") from None
    corpus = load_input(inputs["input"], inputs["window"], inputs["vocab"], inputs["unit"], inputs["oov"],
                        None if inputs["embeddings"] is None else Path(inputs["embeddings"]), inputs.get("format", "auto"))
    corpus, held = split_holdout(corpus, inputs["holdout"], inputs["seed"])
    pred = analyze(corpus, strict=inputs["strict"], radii=None, svm_method=inputs["svm_method"])
    if corpus_fingerprint(pred) != run.get("corpus_fingerprint"):
        raise InputError(f"the input of this run ({inputs['input'] or 'the bundled corpus'}) has changed since it was "
                         "trained; rerun verify")
    traj = Trajectory.load(run_dir / "checkpoints.npz", pred.corpus.d, pred.stats.n_pairs)
    heldout = build_heldout(pred, held, probes=inputs["probes"], seed=inputs["seed"])
    return pred, traj, config, heldout, results


def load_matrix(path: Path, d: int, name: str):
    from theorycheck.io import read_npy

    W = read_npy(path, f"give {name} as a {d}×{d} float64 .npy (np.save(path, W), convention s_t = x_t^T W x_last)")
    if W.shape != (d, d):
        raise InputError(f"{str(path)!r} has shape {W.shape}; {name} must be {d}×{d} (the run's embedding dimension)")
    return W


def judge_run(run_dir: Path, w_svm: Path | None = None, w_fin: Path | None = None, tolerances: dict | None = None):
    """The Judgement of the stored li2024 run against its own or the given predictions (files)."""
    pred_d = _run_dimension(run_dir)
    W_svm = None if w_svm is None else load_matrix(w_svm, pred_d, "W^svm")
    W_fin = None if w_fin is None else load_matrix(w_fin, pred_d, "W^fin")
    return judge_arrays(run_dir, W_svm, W_fin, tolerances)


def _run_dimension(run_dir: Path) -> int:
    """The embedding dimension d of a stored run (its results.json), before anything is recomputed."""
    from theorycheck.io import read_json

    if not Path(run_dir).is_dir():
        raise InputError(f"{str(run_dir)!r} is not a directory; {HINT}")
    results = read_json(Path(run_dir) / "results.json", HINT)
    d = (results.get("embeddings") or {}).get("dimension")
    if not isinstance(d, int):
        raise InputError(f"{str(run_dir)!r} holds no verify run (results.json has no embeddings section); {HINT}")
    return d


def judge_arrays(run_dir: Path, W_svm=None, W_fin=None, tolerances: dict | None = None):
    """The Judgement of the stored li2024 run against its own or the given predictions (arrays)."""
    import dataclasses

    from theorycheck.verify import (
        Tolerances,
        applicability,
        judge_trajectory,
        replace_predictions,
        training_target,
    )

    pred, traj, config, heldout, results = load_run(run_dir)
    d = pred.corpus.d
    for name, W in (("W^svm", W_svm), ("W^fin", W_fin)):
        if W is not None and W.shape != (d, d):
            raise InputError(f"{name} has shape {W.shape}; it must be {d}×{d} (the run's embedding dimension)")
    stored = results["verify"].get("tolerances") or {}
    tol = Tolerances(**{k: v for k, v in stored.items() if k in {f.name for f in dataclasses.fields(Tolerances)}})
    tol = dataclasses.replace(tol, **{k: v for k, v in (tolerances or {}).items() if v is not None}).validate()
    target = W_svm
    if target is None:
        target, _ = training_target(pred, config)
    judged_pred = replace_predictions(pred, W_svm=W_svm, W_fin=W_fin)
    interrupted = bool(results["verify"].get("verdict") == "INCOMPLETE")
    own_target, _ = training_target(pred, config)
    return judge_trajectory(traj, judged_pred, config, tol, heldout, applicability(pred, config), interrupted,
                            target, reference=(pred, own_target)), results


def parse_predictions(items: list[str]) -> dict[str, Path]:
    """--prediction NAME=FILE.npy, repeated."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--prediction {item!r}: write NAME=FILE.npy, e.g. --prediction W_mm=my_W_mm.npy")
        out[name.strip()] = Path(path.strip())
    return out


def run_theory_of(run_dir: Path) -> str:
    """The theory a results directory was verified with (li2024 for directories without the key)."""
    from theorycheck.io import read_json

    if not Path(run_dir).is_dir():
        raise InputError(f"{str(run_dir)!r} is not a directory; {HINT}")
    return str(read_json(Path(run_dir) / "results.json", HINT).get("theory", "li2024"))


def register(app: typer.Typer) -> None:
    @app.command("judge")
    @handle_errors
    def judge_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Results directory of `theorycheck verify` (holds checkpoints.npz).")],
        w_svm: Annotated[Path | None, typer.Option("--w-svm", help="Predicted direction: a d×d float64 .npy (analyze convention). Default: the run's W^svm.", show_default=False)] = None,
        w_fin: Annotated[Path | None, typer.Option("--w-fin", help="Predicted finite component: a d×d float64 .npy in S_fin. Default: the run's W^fin.", show_default=False)] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write DIR/judgement.json (the verdict, criteria and resolution).", show_default=False)] = None,
        tol_angle: Annotated[float | None, typer.Option(help="Direction tolerance in degrees (default: the run's).", show_default=False)] = None,
        tol_fin: Annotated[float | None, typer.Option(help="Finite-part tolerance relative to ||W^fin|| (default: the run's).", show_default=False)] = None,
        tol_fin_abs: Annotated[float | None, typer.Option(help="Absolute floor of the finite-part tolerance (default: the run's).", show_default=False)] = None,
        prediction: Annotated[list[str] | None, typer.Option("--prediction", help="NAME=FILE.npy: replace one predicted array of the run's theory (repeatable), e.g. W_mm=my.npy for ntp2024 (`theorycheck theories` lists each theory's arrays). For li2024, --w-svm and --w-fin are the same as W_svm=... and W_fin=....", show_default=False)] = None,
    ) -> None:
        """Judge the trajectory that `verify` stored in RUN_DIR against other predictions: your
        own conjectured limit direction (--w-svm) and/or finite component (--w-fin), with the
        same criteria, statement of resolution and exit codes as `verify` (0 HOLDS, 1 VIOLATED,
        2 bad input, 3 NOT APPLICABLE, 4 INCONCLUSIVE). Nothing is retrained: the corpus is
        re-read and checked against the run's fingerprint, W at every checkpoint comes from
        RUN_DIR/checkpoints.npz.

        Examples:

          theorycheck verify examples/chain.jsonl --out run/

          theorycheck judge run/                          # the run's own predictions again

          theorycheck judge run/ --w-fin my_W_fin.npy --out judged/

          theorycheck verify --theory ntp2024 --out ntp/ && theorycheck judge ntp/ --prediction W_mm=my_W_mm.npy
        """
        from theorycheck.commands.verify import render_verdict
        from theorycheck.io import check_not_inputs, read_npy, write_json

        files = parse_predictions(prediction or [])
        if out is not None:
            inputs = [run_dir / "results.json", run_dir / "checkpoints.npz", w_svm, w_fin, *files.values()]
            check_not_inputs([Path(out) / "judgement.json"], inputs)
            if Path(out).exists() and not Path(out).is_dir():
                raise InputError(f"--out {str(out)!r} is an existing file; give a directory")
        theory_name = run_theory_of(run_dir)
        if theory_name == "li2024":
            w_svm = w_svm or files.pop("W_svm", None)
            w_fin = w_fin or files.pop("W_fin", None)
            if files:
                raise InputError(f"li2024 predicts W_svm and W_fin, not {', '.join(sorted(files))}")
            judgement, _ = judge_run(run_dir, w_svm, w_fin, {"direction_deg": tol_angle, "finite_relative": tol_fin,
                                                             "finite_absolute": tol_fin_abs})
            verdict, code = judgement.verdict.as_dict(), judgement.verdict.exit_code
        else:
            from theorycheck.theories import get

            if w_svm is not None or w_fin is not None or any(t is not None for t in (tol_angle, tol_fin, tol_fin_abs)):
                raise InputError(f"this is a {theory_name} run: --w-svm, --w-fin and the --tol-* options are li2024's; "
                                 "give --prediction NAME=FILE.npy")
            arrays = {name: read_npy(path, f"give {name} as a float64 .npy (np.save(path, W))")
                      for name, path in files.items()}
            outcome = get(theory_name).rejudge(run_dir, arrays, out)
            verdict, code = outcome.detail, outcome.exit_code
        render_verdict(verdict)
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            write_json(Path(out) / "judgement.json", {"command": "judge", "run": str(run_dir), "theory": theory_name,
                                                     "w_svm": None if w_svm is None else str(w_svm),
                                                     "w_fin": None if w_fin is None else str(w_fin),
                                                     "predictions": {k: str(v) for k, v in files.items()}, **verdict})
            console.print(f"wrote {Path(out) / 'judgement.json'}")
        raise typer.Exit(code)
