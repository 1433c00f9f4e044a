"""Output files: atomic writes, never over an input, ``.npy`` without pickles."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from theorycheck.errors import InputError

SCHEMA_VERSION = 1


def prepare_out_dir(out: str | Path, inputs: list[str | Path | None]) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is an existing file; give a directory path")
    resolved_inputs = {Path(p).resolve() for p in inputs if p}
    if out.resolve() in resolved_inputs:
        raise InputError(f"--out {str(out)!r} is one of the inputs; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "W_svm.npy", "W_fin.npy", "E.npy", "trajectory.json", "W_trained.npy"):
        if (out / name).resolve() in resolved_inputs:
            raise InputError(f"writing {name} in {str(out)!r} would overwrite an input; choose another --out")
    return out


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename over ``path``.

    mkstemp creates files 0600; the result gets the usual 0666 & ~umask instead.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda fh: fh.write(data))


def _default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _finite(obj):
    """JSON has no inf/nan: map them to strings so files stay standard."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, data: dict) -> None:
    text = json.dumps(_finite(json.loads(json.dumps(data, default=_default))), indent=2, sort_keys=False)
    _atomic(Path(path), lambda fh: fh.write((text + "\n").encode("utf-8")))


def write_text(path: str | Path, text: str) -> None:
    """UTF-8 text (reports), written atomically like the JSON and .npy outputs."""
    _atomic(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    _atomic(Path(path), lambda fh: np.save(fh, np.ascontiguousarray(array, dtype=np.float64), allow_pickle=False))


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist; run `theorycheck analyze ... --out DIR` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{str(path)!r} is not valid JSON ({exc.msg}); re-run analyze") from None


def read_npy(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist; run `theorycheck analyze ... --out DIR` first")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{str(path)!r} is not a plain .npy array ({exc})") from None
