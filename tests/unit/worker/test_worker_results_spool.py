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
