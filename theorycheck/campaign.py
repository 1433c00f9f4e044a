"""Parallel campaigns: run one function over many small tasks, on Dask or in-process.

``run_campaign(tasks, fn)`` evaluates ``fn(task)`` (or ``fn(task, shared)``) for every task
dict and returns the results **in task order**, whatever order they finish in, so a
campaign whose tasks are deterministic (each carries its own seed) gives identical
results with 0, 1 or 16 workers.

Where it runs:

* ``workers=0``: serially in this process (tests, debugging, tiny campaigns).
* ``scheduler="tcp://host:8786"``: on an existing ``dask.distributed`` cluster.
* otherwise: a ``dask.distributed.LocalCluster`` with ``workers`` single-threaded worker
  processes (default: one per CPU core), closed when the campaign ends.

``fn`` must be picklable (a module-level function) for the process and cluster modes.
``shared`` is sent to the workers once (scattered) instead of once per task: use it for
the corpus or anything large that every task reads.

Every finished task is appended to ``out_jsonl`` immediately as one line
``{"index": i, "task": {...}, "result": ...}`` (results and tasks must be JSON
serialisable), so an interrupted campaign keeps what finished; ``resume=True`` reads
that file and runs only the tasks whose (index, task) are not in it yet.
A rich progress bar is drawn on stderr when ``progress`` is true.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from theorycheck.errors import InputError

__all__ = ["run_campaign", "read_campaign_log"]


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _line(index: int, task: dict, result: Any) -> str:
    return json.dumps({"index": index, "task": _jsonable(task), "result": _jsonable(result)},
                      sort_keys=True, allow_nan=True)


def read_campaign_log(path: str | Path) -> dict[int, dict]:
    """Finished entries of a campaign log by task index; a torn last line is ignored."""
    path = Path(path)
    out: dict[int, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption
        if isinstance(entry, dict) and isinstance(entry.get("index"), int) and "result" in entry:
            out[entry["index"]] = entry
    return out


class _Log:
    """Append-only JSONL writer: one flushed, fsynced line per finished task."""

    def __init__(self, path: Path | None, resume: bool):
        self.fh = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            torn = resume and path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
            self.fh = open(path, "a" if resume else "w", encoding="utf-8")
            if torn:  # end the line an interruption cut short, so the next entry starts clean
                self.fh.write("\n")

    def write(self, index: int, task: dict, result: Any) -> None:
        if self.fh is None:
            return
        self.fh.write(_line(index, task, result) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


class _Bar:
    def __init__(self, enabled: bool, total: int, label: str):
        self.progress = None
        if enabled and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            from theorycheck.commands.common import err_console

            self.progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=err_console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(label, total=total)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_campaign(
    tasks: Sequence[dict],
    fn: Callable,
    scheduler: str | None = None,
    workers: int | None = None,
    out_jsonl: Path | None = None,
    progress: bool = False,
    shared: Any = None,
    resume: bool = False,
    label: str = "campaign",
) -> list:
    """Run ``fn`` over ``tasks``; results in task order (see the module docstring).

    ``fn(task)`` when ``shared`` is None, else ``fn(task, shared)``.  A task that raises
    makes the campaign raise (after the finished tasks were logged).
    """
    tasks = list(tasks)
    if workers is not None and workers < 0:
        raise InputError(f"--workers {workers}: use 0 (serial) or a positive number of processes")
    done: dict[int, Any] = {}
    if resume and out_jsonl is not None:
        for index, entry in read_campaign_log(out_jsonl).items():
            if 0 <= index < len(tasks) and entry.get("task") == _jsonable(tasks[index]):
                done[index] = entry["result"]
    todo = [i for i in range(len(tasks)) if i not in done]
    log = _Log(out_jsonl, resume)
    bar = _Bar(progress, len(tasks), label)
    for _ in done:
        bar.advance()
    try:
        if todo and workers == 0 and scheduler is None:
            for i in todo:
                result = fn(tasks[i]) if shared is None else fn(tasks[i], shared)
                done[i] = result
                log.write(i, tasks[i], result)
                bar.advance()
        elif todo:
            _run_dask(tasks, todo, fn, shared, scheduler, workers, done, log, bar)
    finally:
        bar.close()
        log.close()
    return [done[i] for i in range(len(tasks))]


def _run_dask(tasks, todo, fn, shared, scheduler, workers, done, log, bar) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler {scheduler!r} ({exc}); check the address "
                             "or omit --scheduler to use local processes") from None
    else:
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=40)  # any free port: no clash
        client = Client(cluster)
    try:
        if shared is None:
            futures = [client.submit(fn, tasks[i], key=f"task-{i}-{os.getpid()}-{id(tasks)}", pure=False)
                       for i in todo]
        else:
            handle = client.scatter(shared, broadcast=True)
            futures = [client.submit(fn, tasks[i], handle, key=f"task-{i}-{os.getpid()}-{id(tasks)}", pure=False)
                       for i in todo]
        index_of = {f.key: i for f, i in zip(futures, todo)}
        for future in as_completed(futures):
            i = index_of[future.key]
            result = future.result()
            done[i] = result
            log.write(i, tasks[i], result)
            bar.advance()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
