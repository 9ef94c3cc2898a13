from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudai.proto import pb
from cloudai.worker.results_spool import ResultSpool


def result(task_id: str, status: str = "success") -> pb.TaskResult:
    return pb.TaskResult(task_id=task_id, worker_id="w1", status=status, logs="out\n", exit_code=0)


def test_pending_results_survive_a_restart(tmp_path: Path) -> None:
    spool = ResultSpool(tmp_path)
    spool.put(result("t1"))
    spool.put(result("t2", "failure"))
    again = ResultSpool(tmp_path)  # a new worker process on the same directory
    assert [r.task_id for r in again.pending()] == ["t1", "t2"]
    assert again.pending()[1] == result("t2", "failure")
    assert len(again) == 2 and again.contains("t1")


def test_remove_only_after_ack(tmp_path: Path) -> None:
    spool = ResultSpool(tmp_path)
    spool.put(result("t1"))
    spool.remove("t1")
    spool.remove("t1")  # idempotent
    assert spool.pending() == [] and len(ResultSpool(tmp_path)) == 0


def test_oldest_first(tmp_path: Path) -> None:
    spool = ResultSpool(tmp_path)
    for i, name in enumerate(["b", "a", "c"]):
        path = spool.put(result(name))
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))
    assert [r.task_id for r in spool.pending()] == ["b", "a", "c"]


def test_interrupted_writes_and_corrupt_files_are_set_aside(tmp_path: Path) -> None:
    (tmp_path / "t9.result.tmp").write_bytes(b"half")
    (tmp_path / "bad.result").write_bytes(b"\xff\xff\xff")
    spool = ResultSpool(tmp_path)
    assert not (tmp_path / "t9.result.tmp").exists()
    assert spool.pending() == []
    assert (tmp_path / "rejected" / "bad.result").exists()


def test_reject_keeps_the_result_aside(tmp_path: Path) -> None:
    spool = ResultSpool(tmp_path)
    spool.put(result("t1"))
    spool.reject("t1")
    assert spool.pending() == []
    assert (tmp_path / "rejected" / "t1.result").exists()


def test_unsafe_task_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ResultSpool(tmp_path).put(result("../escape"))


def test_disk_failure_keeps_the_result_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = ResultSpool(tmp_path)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", disk_full)
        spool.put(result("t1"))
    assert not list(tmp_path.glob("*.tmp"))
    assert [r.task_id for r in spool.pending()] == ["t1"]
    assert spool.contains("t1") and len(spool) == 1
    spool.remove("t1")
    assert spool.pending() == []


def test_reason_and_attempt_survive_a_restart(tmp_path: Path) -> None:
    timed_out = pb.TaskResult(
        task_id="t1", worker_id="w1", status="failure", exit_code=143, reason="timed out", attempt=2
    )
    ResultSpool(tmp_path).put(timed_out)
    (again,) = ResultSpool(tmp_path).pending()
    assert (again.reason, again.attempt) == ("timed out", 2)
    assert again == timed_out


def test_results_spooled_by_the_previous_version_are_still_read(tmp_path: Path) -> None:
    # The bytes a worker without reason/attempt wrote (a failure, exit code 2).
    old = "0a027431120277311a076661696c7572652205626f6f6d0a2a0b2f772f7461736b732f74313002"
    (tmp_path / "t1.result").write_bytes(bytes.fromhex(old))
    (result,) = ResultSpool(tmp_path).pending()
    assert (result.task_id, result.status, result.logs, result.exit_code) == (
        "t1",
        "failure",
        "boom\n",
        2,
    )
    assert (result.reason, result.attempt) == ("", 0)


def test_an_ack_of_an_earlier_attempt_keeps_the_later_result(tmp_path: Path) -> None:
    """Attempt 2 of a task ran while attempt 1's result was still being delivered: the
    late ack of attempt 1 must not drop attempt 2's result."""
    spool = ResultSpool(tmp_path)
    assert spool.attempt("t1") is None
    spool.put(pb.TaskResult(task_id="t1", worker_id="w1", status="failure", attempt=1))
    assert spool.attempt("t1") == 1
    spool.put(pb.TaskResult(task_id="t1", worker_id="w1", status="success", attempt=2))
    spool.remove("t1", attempt=1)  # the ack of attempt 1
    assert spool.attempt("t1") == 2 and len(spool) == 1
    spool.remove("t1", attempt=2)
    assert spool.attempt("t1") is None and len(spool) == 0
