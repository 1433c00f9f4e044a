"""The generic campaign runner: order, JSONL log, resume, shared data, Dask path."""

from __future__ import annotations

import json

import pytest

from theorycheck.campaign import read_campaign_log, run_campaign
from theorycheck.errors import InputError

CALLS: list[int] = []


def square(task: dict) -> dict:
    CALLS.append(task["x"])
    return {"y": task["x"] ** 2}


def offset(task: dict, shared: dict) -> dict:
    return {"y": task["x"] + shared["offset"]}


def fail_on_three(task: dict) -> dict:
    if task["x"] == 3:
        raise ValueError("task three fails")
    return {"y": task["x"]}


def test_serial_results_in_task_order_and_logged(tmp_path):
    tasks = [{"x": x} for x in (5, 1, 4, 2)]
    log = tmp_path / "c.jsonl"
    out = run_campaign(tasks, square, workers=0, out_jsonl=log)
    assert out == [{"y": 25}, {"y": 1}, {"y": 16}, {"y": 4}]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["index"], e["task"]["x"], e["result"]["y"]) for e in lines] == [(0, 5, 25), (1, 1, 1), (2, 4, 16), (3, 2, 4)]


def test_shared_argument_is_passed():
    assert run_campaign([{"x": 1}, {"x": 2}], offset, workers=0, shared={"offset": 10}) == [{"y": 11}, {"y": 12}]


def test_resume_runs_only_missing_tasks_and_ignores_a_torn_line(tmp_path):
    tasks = [{"x": x} for x in range(4)]
    log = tmp_path / "c.jsonl"
    # two finished tasks (one with a stale task definition) and a line cut by an interruption
    log.write_text(json.dumps({"index": 0, "task": {"x": 0}, "result": {"y": 0}}) + "\n"
                   + json.dumps({"index": 2, "task": {"x": 99}, "result": {"y": -1}}) + "\n"
                   + '{"index": 1, "task": {"x"')
    CALLS.clear()
    out = run_campaign(tasks, square, workers=0, out_jsonl=log, resume=True)
    assert out == [{"y": 0}, {"y": 1}, {"y": 4}, {"y": 9}]
    assert sorted(CALLS) == [1, 2, 3]  # task 0 came from the log; task 2's entry was stale
    entries = read_campaign_log(log)
    assert entries[2]["result"] == {"y": 4} and set(entries) == {0, 1, 2, 3}


def test_failure_propagates_after_logging_finished_tasks(tmp_path):
    log = tmp_path / "c.jsonl"
    with pytest.raises(ValueError, match="task three"):
        run_campaign([{"x": x} for x in range(5)], fail_on_three, workers=0, out_jsonl=log)
    assert sorted(read_campaign_log(log)) == [0, 1, 2]


def test_negative_workers_is_a_usage_error():
    with pytest.raises(InputError):
        run_campaign([{"x": 1}], square, workers=-1)


def test_dask_scheduler_path_matches_serial(tmp_path):
    """Connect to an existing (in-process, threaded) Dask cluster by address."""
    distributed = pytest.importorskip("dask.distributed")
    tasks = [{"x": x} for x in range(12)]
    serial = run_campaign(tasks, offset, workers=0, shared={"offset": 3})
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        log = tmp_path / "d.jsonl"
        parallel = run_campaign(tasks, offset, scheduler=cluster.scheduler_address, shared={"offset": 3},
                                out_jsonl=log)
    assert parallel == serial
    assert sorted(read_campaign_log(log)) == list(range(12))
