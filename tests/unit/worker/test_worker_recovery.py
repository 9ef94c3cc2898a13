"""After a worker restart: which runs' live output is resumed and which files go
(recovery.py), and the TaskManager doing it at start-up against a fake master (no
sockets)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from cloudai.proto import pb
from cloudai.worker.output_stream import OutputStreams
from cloudai.worker.recovery import StreamFile, find_streams, streams_to_resume, write_marker
from cloudai.worker.results_spool import ResultSpool
from cloudai.worker.runtimes.docker import DockerRuntime
from cloudai.worker.runtimes.process import ProcessRuntime
from cloudai.worker.samplers import MachineTotals
from cloudai.worker.tasks import TaskManager

TOTALS = MachineTotals(cpu_cores=2.0, memory_gb=4.0, storage_gb=100.0, gpu_count=0.0)


def no_engine() -> Any:
    raise FileNotFoundError("docker.sock")


def test_find_streams_takes_only_the_names_the_worker_gives(tmp_path: Path) -> None:
    for name in ("t1/output-1.stream", "t1/output-2.stream", "t2/output-0.stream"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for name in ("t1/output-x.stream", "t1/output-1.stream.tmp", "t1/output.log"):
        (tmp_path / name).write_bytes(b"x")  # the task's own files, say
    assert find_streams(tmp_path) == [
        StreamFile("t1", 1, tmp_path / "t1/output-1.stream"),
        StreamFile("t1", 2, tmp_path / "t1/output-2.stream"),
        StreamFile("t2", 0, tmp_path / "t2/output-0.stream"),
    ]
    assert find_streams(tmp_path / "none") == []


def test_streams_to_resume_are_those_of_runs_with_a_record() -> None:
    a1, a2, b0, c1 = (
        StreamFile("a", 1, Path("a/output-1.stream")),
        StreamFile("a", 2, Path("a/output-2.stream")),
        StreamFile("b", 0, Path("b/output-0.stream")),
        StreamFile("c", 1, Path("c/output-1.stream")),
    )
    # a: attempt 2 has a record (attempt 1's result was delivered); b: a master that does
    # not number runs (attempt 0); c: no record at all.
    resume, orphans = streams_to_resume([a1, a2, b0, c1], [("a", 2), ("b", 0), ("d", 1)])
    assert resume == [(a2, 2), (b0, 0)]
    assert orphans == [a1, c1]


class FakeMaster:
    """AppendTaskOutput with the master's offset rules."""

    def __init__(self, held: dict[tuple[str, int], bytes]) -> None:
        self.held = dict(held)
        self.final: set[tuple[str, int]] = set()
        self.calls: list[pb.TaskOutput] = []

    async def send(self, message: pb.TaskOutput) -> pb.TaskOutputAck:
        self.calls.append(message)
        key = (message.task_id, message.attempt)
        held = self.held.get(key, b"")
        if message.offset > len(held):
            return pb.TaskOutputAck(success=False, next_offset=len(held))
        self.held[key] = held + message.data[len(held) - message.offset :]
        if message.final:
            self.final.add(key)
        return pb.TaskOutputAck(success=True, next_offset=len(self.held[key]))


def manager(tmp_path: Path, output: OutputStreams) -> TaskManager:
    return TaskManager(
        "w1",
        TOTALS,
        tmp_path,
        ResultSpool(tmp_path / "results"),
        ProcessRuntime(64 * 1024),
        DockerRuntime("w1", 1024, no_engine),
        output=output,
    )


def stream(tmp_path: Path, task_id: str, attempt: int, data: bytes) -> Path:
    path = tmp_path / "tasks" / task_id / f"output-{attempt}.stream"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_a_restart_resumes_the_output_of_unreported_runs_and_deletes_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Left by the earlier process: an interrupted run (its marker), a finished run whose
    # result waits on disk, a run whose result was delivered, and an older attempt.
    interrupted = stream(tmp_path, "t1", 2, b"one\ntwo\nthree\n")
    write_marker(tmp_path / "tasks" / "t1", {"task_id": "t1", "runtime": "process", "attempt": 2})
    (tmp_path / "tasks" / "t1" / "output.log").write_bytes(b"one\ntwo\nthree\n")
    older = stream(tmp_path, "t1", 1, b"first run\n")
    waiting = stream(tmp_path, "t2", 1, b"done\n")
    ResultSpool(tmp_path / "results").put(pb.TaskResult(task_id="t2", status="success", attempt=1))
    delivered = stream(tmp_path, "t3", 1, b"gone\n")

    master = FakeMaster({("t1", 2): b"one\n"})
    output = OutputStreams("w1", master.send)
    tasks = manager(tmp_path, output)
    with caplog.at_level(logging.INFO, logger="cloudai.worker.tasks"):
        assert await tasks.recover_interrupted() == 1
    assert not older.exists() and not delivered.exists()
    removed = [r.getMessage() for r in caplog.records if "live output file" in r.getMessage()]
    assert removed == [
        "removed 2 live output file(s) of runs whose results were already delivered"
        " (the master no longer waits for their output): t1/output-1.stream, t3/output-1.stream"
    ]

    # As the delivery does: each result waits for its run's output.
    for result in tasks.spool.pending():
        await output.before_result(result)
    assert master.held == {("t1", 2): b"one\ntwo\nthree\n", ("t2", 1): b"done\n"}
    assert master.final == {("t1", 2), ("t2", 1)}
    assert not interrupted.exists() and not waiting.exists()
    (result,) = [r for r in tasks.spool.pending() if r.task_id == "t1"]
    assert (result.status, result.attempt) == ("failure", 2)
    assert not master.calls[0].data and master.calls[0].offset == 0  # asked first
    await output.close()


async def test_without_stream_files_nothing_is_sent(tmp_path: Path) -> None:
    write_marker(tmp_path / "tasks" / "t1", {"task_id": "t1", "runtime": "process", "attempt": 1})
    master = FakeMaster({})
    output = OutputStreams("w1", master.send)
    assert await manager(tmp_path, output).recover_interrupted() == 1
    await output.flush("t1", 1, 5)  # no run to wait for: returns at once
    assert not master.calls
    await output.close()


async def test_an_interrupted_run_replaces_the_unsent_result_of_an_earlier_attempt(
    tmp_path: Path,
) -> None:
    spool = ResultSpool(tmp_path / "results")
    # t1: attempt 1 finished but its result was not delivered; attempt 2 then ran and
    # was interrupted. t2: the run finished and spooled, the worker died before the
    # marker went: that result stands.
    spool.put(pb.TaskResult(task_id="t1", status="success", attempt=1))
    write_marker(tmp_path / "tasks" / "t1", {"task_id": "t1", "runtime": "process", "attempt": 2})
    spool.put(pb.TaskResult(task_id="t2", status="success", attempt=3))
    write_marker(tmp_path / "tasks" / "t2", {"task_id": "t2", "runtime": "process", "attempt": 3})
    output = OutputStreams("w1", FakeMaster({}).send)
    assert await manager(tmp_path, output).recover_interrupted() == 2
    results = {r.task_id: (r.status, r.attempt) for r in spool.pending()}
    assert results == {"t1": ("failure", 2), "t2": ("success", 3)}
    await output.close()
