"""Output files: atomic writes, never over an input, ``.npy`` without pickles."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from theorycheck.errors import InputError

SCHEMA_VERSION = 1


# Every file a Li-et-al. command (analyze, verify, report) writes into --out.  An input with one
# of these names inside --out is refused by every such command: the run would either overwrite
# it or retire it as a stale output of an earlier run.
ANALYZE_OUTPUTS = ("results.json", "W_svm.npy", "W_fin.npy", "E.npy", "timings.json")
VERIFY_OUTPUTS = (*ANALYZE_OUTPUTS, "trajectory.json", "W_trained.npy", "checkpoints.npz")
REPORT_OUTPUTS = ("report.html", "summary.md")
LI_OUTPUTS = (*VERIFY_OUTPUTS, *REPORT_OUTPUTS)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except (OSError, ValueError, RuntimeError):  # names the system refuses, symlink loops
        return False


def check_not_inputs(paths, inputs: list[str | Path | None], option: str = "--out") -> None:
    """Refuse to write any of ``paths`` when it is (or links to) one of ``inputs``."""
    inputs = [Path(p) for p in inputs if p]
    for path in map(Path, paths):
        for src in inputs:
            if _same_file(path, src):
                raise InputError(f"writing {path.name} in {str(path.parent)!r} would overwrite an input "
                                 f"({str(src)!r}); choose another {option} or move the input")


def prepare_out_dir(out: str | Path, inputs: list[str | Path | None],
                    writes: tuple[str, ...] | list[str] = LI_OUTPUTS) -> Path:
    """Check an output directory before any long work and create it.

    ``inputs``: every file (or directory) the command reads; ``writes``: every file name the
    command may write (or retire as stale) in ``out``.  Refuses (InputError, exit 2) when
    ``out`` is a file or an input, when one of the outputs is an input or a directory, and when
    the directory cannot be created or written.  Nothing is written but a probe file, removed
    at once.
    """
    out = Path(out)
    if exists(out) and not is_dir(out):
        raise InputError(f"--out {str(out)!r} is an existing file; give a directory path")
    for src in (Path(p) for p in inputs if p):
        if _same_file(out, src):
            raise InputError(f"--out {str(out)!r} is one of the inputs; choose another directory")
    check_not_inputs([out / name for name in writes], inputs)
    for name in writes:
        if is_dir(out / name):
            raise InputError(f"{str(out / name)!r} is a directory, so {name} cannot be written there; "
                             "remove it or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".theorycheck-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise InputError(f"cannot write to --out {str(out)!r} ({reason}); choose a writable directory") from None
    return out


# what each output starts with (or holds near its start) when theorycheck wrote it
SIGNATURES = {"report.html": b"<title>theorycheck report", "summary.md": b"# theorycheck report",
              "scansnap.html": b"<title>theorycheck scan-snap", "trajectory.json": b'"checkpoints"',
              "results.json": b'"theorycheck_version"'}


def _written_by_theorycheck(path: Path) -> bool:
    """Outputs are only retired when they look like ours (a user's summary.md is left alone)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    if path.suffix == ".npy":
        return head.startswith(b"\x93NUMPY")
    if path.suffix == ".npz":
        return head.startswith(b"PK\x03\x04")
    if path.suffix == ".png":
        return head.startswith(b"\x89PNG")
    return SIGNATURES.get(path.name, b"theorycheck") in head


def exists(path: str | Path) -> bool:
    """Path.exists that answers False for names the system refuses (too long, NUL bytes, ...)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def is_dir(path: str | Path) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def retire_stale_outputs(out: str | Path, written, family: tuple[str, ...] = LI_OUTPUTS) -> list[str]:
    """Remove the outputs of an earlier run that this run did not (re)write, so that a results
    directory never mixes two runs (e.g. an old W_trained.npy, trajectory.json or report.html
    beside a new results.json).  Call it after writing ``written``; returns the removed names."""
    out = Path(out)
    written = set(written)
    removed = []
    for name in family:
        path = out / name
        if name in written or not path.is_file() or not _written_by_theorycheck(path):
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(name)
    return removed


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
    """JSON has no inf/nan: map them to strings so files stay standard (numpy values included)."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float):
        if not np.isfinite(obj):
            return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
        return float(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


JSON_INDENT_DEPTH = 2  # containers this deep are laid out one item per line; deeper ones on one line


def _dumps_leaf(obj) -> str:
    """One line of standard JSON.  The C encoder (indent=None) refuses inf/nan; only a value
    that holds one takes the slow Python walk that turns them into strings."""
    try:
        return json.dumps(obj, default=_default, allow_nan=False)
    except ValueError as exc:
        if "Circular reference" in str(exc):  # not a non-finite float: the walk would never end
            raise
        return json.dumps(_finite(obj), default=_default, allow_nan=False)


def _json_key(key) -> str:
    """A dict key as json.dumps writes it (str, int, float, bool and None keys become strings)."""
    if not isinstance(key, str):
        if not (key is None or isinstance(key, (bool, int, float))):
            raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
        key = json.dumps(key)
    return json.dumps(key)


def dumps_json(data, depth: int = 0) -> str:
    """``data`` as JSON, indented two spaces for its first JSON_INDENT_DEPTH levels (each top-level
    key, each query of results.json on its own line) and compact below.  json.dumps(indent=2)
    puts every number on its own line and runs in pure Python: 112 MB and ~15 s for the
    V = 2,000 python3-doc results, against ~1 s here."""
    if depth >= JSON_INDENT_DEPTH or not isinstance(data, (dict, list, tuple)) or len(data) == 0:
        return _dumps_leaf(data)
    pad, close = "  " * (depth + 1), "  " * depth
    if isinstance(data, dict):
        items = [f"{pad}{_json_key(k)}: {dumps_json(v, depth + 1)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + close + "}"
    return "[\n" + ",\n".join(pad + dumps_json(v, depth + 1) for v in data) + "\n" + close + "]"


def write_json(path: str | Path, data: dict) -> None:
    text = dumps_json(data)
    _atomic(Path(path), lambda fh: fh.write((text + "\n").encode("utf-8")))


def write_text(path: str | Path, text: str) -> None:
    """UTF-8 text (reports), written atomically like the JSON and .npy outputs."""
    _atomic(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    _atomic(Path(path), lambda fh: np.save(fh, np.ascontiguousarray(array, dtype=np.float64), allow_pickle=False))


def read_json(path: str | Path, hint: str = "re-run analyze") -> dict:
    """A JSON object from ``path``; anything else (missing, unreadable, not UTF-8, not JSON, not an
    object) is bad input with a one-line message."""
    path = Path(path)
    if not exists(path):
        raise InputError(f"{str(path)!r} does not exist; run `theorycheck analyze ... --out DIR` first")
    if is_dir(path):
        raise InputError(f"{str(path)!r} is a directory, not a JSON file; {hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{str(path)!r} is not UTF-8 text (byte {exc.start}); {hint}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{str(path)!r} is not valid JSON ({exc.msg}); {hint}") from None
    except RecursionError:
        raise InputError(f"{str(path)!r} is nested too deeply to be a results file; {hint}") from None
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r} ({exc.strerror or type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object; {hint}")
    return data


def read_npy(path: str | Path, hint: str = "re-run analyze", finite: bool = True) -> np.ndarray:
    """A float64 array (finite unless ``finite=False``) from a plain (pickle-free) ``.npy`` file."""
    path = Path(path)
    if not exists(path):
        raise InputError(f"{str(path)!r} does not exist; run `theorycheck analyze ... --out DIR` first")
    if is_dir(path):
        raise InputError(f"{str(path)!r} is a directory, not a .npy file; {hint}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise InputError(f"{str(path)!r} is not a plain .npy array ({exc}); {hint}") from None
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r} ({exc.strerror or exc}); {hint}") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number) \
            or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{str(path)!r} does not hold a real numeric array; {hint}")
    array = array.astype(np.float64, copy=False)
    if finite and not np.all(np.isfinite(array)):
        raise InputError(f"{str(path)!r} contains NaN or infinite values; {hint}")
    return array
