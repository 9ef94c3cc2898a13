"""Time limits and retries with a real master and a real worker: a task past its time
limit is stopped and ends timed_out; a failing task with two retries runs three times,
each attempt kept; the `cloudai submit` flags and the task's JSON carry both."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from cloudai.cli.api_client import ApiClient
from cloudai.cli.main import main
from tests.harness import Process, start_master, start_worker, wait_heartbeat, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Process, ApiClient]]:
    master = start_master(tmp_path, CLOUDAI_TASK_RETRY_DELAY="0.2")
    worker = start_worker(tmp_path, "w1", "--interval", "0.3")
    api = ApiClient(master.extra["http"])
    try:
        api.register("w1", worker.extra["address"])
        wait_heartbeat(master.extra["http"], "w1")
        yield master, api
    finally:
        worker.kill()
        master.kill()


def finished(api: ApiClient, task_id: str) -> bool:
    return api.task(task_id).finished_at is not None


def test_a_task_past_its_time_limit_ends_timed_out(cluster: tuple[Process, ApiClient]) -> None:
    _master, api = cluster
    task = api.submit("w1", command="sleep 60", task_id="t-limit", time_limit=2.0)
    assert task.time_limit == 2.0
    wait_until(lambda: finished(api, "t-limit"), 15, "the time limit to stop the task")
    task = api.task("t-limit")
    assert task.status == "timed_out", task
    assert task.message.startswith("timed out"), task.message
    assert task.finished_at is not None
    # Stopped at its limit (2 s) plus the stop itself, not at the end of `sleep 60`.
    assert task.finished_at - task.submitted_at < 30


def test_a_failing_task_with_two_retries_runs_three_times(
    cluster: tuple[Process, ApiClient], capsys: pytest.CaptureFixture[str]
) -> None:
    master, api = cluster
    capsys.readouterr()
    code = main(
        [
            "submit",
            "w1",
            "--cmd",
            "echo try; exit 3",
            "--retries",
            "2",
            "--id",
            "t-retry",
            "--url",
            master.extra["http"],
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.search(r"task t-retry submitted to w1", out), out
    wait_until(lambda: api.task("t-retry").status == "failure", 30, "the third attempt to fail")
    task = api.task("t-retry")
    assert (task.retries, task.attempt, task.exit_code) == (2, 3, 3)
    assert [(a.attempt, a.status, a.exit_code) for a in task.attempts] == [
        (1, "failure", 3),
        (2, "failure", 3),
    ]
    assert all(a.worker_id == "w1" for a in task.attempts)
    assert api.logs("t-retry").logs.startswith("try\n")
    capsys.readouterr()
    assert main(["tasks", "--json", "--url", master.extra["http"]]) == 0
    listed = {t["task_id"]: t for t in json.loads(capsys.readouterr().out)}
    assert listed["t-retry"]["attempt"] == 3 and len(listed["t-retry"]["attempts"]) == 2


def test_a_timed_out_attempt_is_retried_and_can_succeed(
    cluster: tuple[Process, ApiClient], tmp_path: Path
) -> None:
    _master, api = cluster
    marker = tmp_path / "second-run"
    # The first run hangs past its limit; the second finds the marker and succeeds.
    command = f"if [ -e {marker} ]; then echo done; else touch {marker}; sleep 60; fi"
    api.submit("w1", command=command, task_id="t-slow", time_limit=1.5, retries=1)
    wait_until(lambda: api.task("t-slow").status == "success", 30, "the retry to succeed")
    task = api.task("t-slow")
    assert task.attempt == 2 and [a.status for a in task.attempts] == ["timed_out"]


async def test_the_tasks_topic_tells_each_change(cluster: tuple[Process, ApiClient]) -> None:
    master, api = cluster
    url = master.extra["http"].replace("http://", "ws://") + "/ws/telemetry?topics=tasks"
    seen: list[tuple[str, int]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await asyncio.to_thread(api.submit, "w1", command="exit 1", task_id="t-events", retries=1)
        async with asyncio.timeout(30):
            async for message in ws:
                frame = orjson.loads(message.data)
                if frame.get("topic") != "tasks":
                    continue
                event = frame["event"]
                assert event["task_id"] == "t-events" and "logs" not in event
                seen.append((event["status"], event["attempt"]))
                if event["status"] == "failure":
                    break
    assert seen[0] == ("queued", 1) and seen[-1] == ("failure", 2)
    assert ("queued", 2) in seen  # run again


def test_a_retry_of_an_any_worker_task_runs_on_another_worker(tmp_path: Path) -> None:
    master = start_master(tmp_path, CLOUDAI_TASK_RETRY_DELAY="0.2")
    workers = [start_worker(tmp_path, w, "--interval", "0.3") for w in ("p1", "p2")]
    try:
        api = ApiClient(master.extra["http"])
        for worker_id, worker in zip(("p1", "p2"), workers, strict=True):
            api.register(worker_id, worker.extra["address"])
            wait_heartbeat(master.extra["http"], worker_id)
        task = api.submit(None, command="exit 4", task_id="t-any", any_worker=True, retries=1)
        assert task.any_worker and task.worker_id in ("p1", "p2")
        wait_until(lambda: api.task("t-any").status == "failure", 30, "both attempts to fail")
        task = api.task("t-any")
        first = task.attempts[0].worker_id
        assert task.attempt == 2 and task.worker_id != first, task
        assert {first, task.worker_id} == {"p1", "p2"}
        assert task.exit_code == 4  # the second worker's own result, accepted from it
    finally:
        for worker in workers:
            worker.kill()
        master.kill()
