"""The process runtime, for real: local shells and Python processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from cloudai.worker.runtimes.base import TaskSpec
from cloudai.worker.runtimes.process import (
    ProcessHandle,
    ProcessRuntime,
    exit_code_of,
    live_group_members,
)

PY = sys.executable


def spec(command: str, task_id: str = "t1") -> TaskSpec:
    return TaskSpec(task_id=task_id, command=command)


async def wait_for(predicate, timeout: float = 10.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_refuses_a_task_without_command() -> None:
    runtime = ProcessRuntime(1024)
    assert await runtime.refusal(spec("")) == "task 't1' has no command to run"
    assert await runtime.refusal(spec("  ")) is not None
    assert await runtime.refusal(spec("true")) is None


async def test_python_task_prints_and_exits(tmp_path: Path) -> None:
    runtime = ProcessRuntime(1024 * 1024)
    command = f"""{PY} -c 'import os, sys; print("hello from", os.environ["CLOUDAI_TASK_ID"]); \
print("oops", file=sys.stderr); open("result.txt", "w").write("42")'"""
    handle = await runtime.start(spec(command), tmp_path / "t1", {"CLOUDAI_TASK_ID": "t1"})
    outcome = await asyncio.wait_for(handle.wait(), 10)
    assert outcome.exit_code == 0
    assert outcome.detail == "exit code 0"
    assert outcome.log_tail == b"hello from t1\noops\n"
    assert outcome.dropped_bytes == 0
    assert (tmp_path / "t1" / "result.txt").read_text() == "42"  # ran in its own directory
    assert (tmp_path / "t1" / "output.log").read_bytes() == b"hello from t1\noops\n"


async def test_exit_code_of_a_failing_task(tmp_path: Path) -> None:
    handle = await ProcessRuntime(1024).start(spec("echo bye; exit 3"), tmp_path, {})
    outcome = await asyncio.wait_for(handle.wait(), 10)
    assert (outcome.exit_code, outcome.log_tail) == (3, b"bye\n")


def test_exit_code_of_signals() -> None:
    assert exit_code_of(0) == (0, "exit code 0")
    assert exit_code_of(-15) == (143, "killed by signal SIGTERM")
    assert exit_code_of(-9) == (137, "killed by signal SIGKILL")


async def test_output_is_bounded_to_the_last_bytes(tmp_path: Path) -> None:
    runtime = ProcessRuntime(max_log_bytes=4096)
    command = f"{PY} -c 'import sys; [print(f\"line {{i:06d}}\") for i in range(20000)]'"
    handle = await runtime.start(spec(command), tmp_path, {})
    outcome = await asyncio.wait_for(handle.wait(), 20)
    total = 20000 * len("line 000000\n")
    assert len(outcome.log_tail) == 4096
    assert outcome.dropped_bytes == total - 4096
    assert outcome.log_tail.endswith(b"line 019999\n")
    assert (tmp_path / "output.log").stat().st_size <= 2 * 4096


async def test_cancel_kills_the_whole_process_tree(tmp_path: Path) -> None:
    # A shell with a child, a grandchild that ignores SIGTERM, and one that left the group.
    command = (
        f"{PY} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        ' open("stubborn.ready", "w"); time.sleep(60)\' & '
        f'{PY} -c \'import os, time; os.setsid(); open("escaped.ready", "w");'
        " time.sleep(60)' & "
        "sleep 60; wait"
    )
    runtime = ProcessRuntime(1024, kill_grace=0.5)
    handle = await runtime.start(spec(command), tmp_path, {})
    assert isinstance(handle, ProcessHandle)
    await wait_for(
        lambda: (tmp_path / "stubborn.ready").exists() and (tmp_path / "escaped.ready").exists(),
        what="the process tree to start",
    )
    # The shell forks `sleep 60` on its own time: wait for the whole tree.
    await wait_for(lambda: len(handle.tree()) >= 4, what="the shell's sleep")
    pids = [p.pid for p in handle.tree()]
    started = time.monotonic()
    await asyncio.wait_for(handle.cancel(0.5), 10)
    outcome = await asyncio.wait_for(handle.wait(), 10)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5  # the stubborn one needed SIGKILL after the grace period
    assert outcome.exit_code in (128 + 15, 128 + 9)
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]
    assert live_group_members(handle.pid) == []


async def test_cancel_is_idempotent_and_after_exit_harmless(tmp_path: Path) -> None:
    handle = await ProcessRuntime(1024).start(spec("true"), tmp_path, {})
    await asyncio.wait_for(handle.wait(), 10)
    await handle.cancel(0.1)
    await handle.cancel(0.1)
    assert (await handle.wait()).exit_code == 0


async def test_leftover_background_processes_are_stopped_when_the_shell_ends(
    tmp_path: Path,
) -> None:
    command = "sleep 60 > /dev/null 2>&1 & echo $! > bg.pid; echo done"
    handle = await ProcessRuntime(1024, kill_grace=0.5).start(spec(command), tmp_path, {})
    outcome = await asyncio.wait_for(handle.wait(), 10)
    assert outcome.exit_code == 0 and outcome.log_tail == b"done\n"
    assert gone(int((tmp_path / "bg.pid").read_text()))


async def test_usage_measures_the_process_tree(tmp_path: Path) -> None:
    command = (
        f"{PY} -c 'import time; b = bytearray(64 * 1024 * 1024); e = time.time() + 30\n"
        "while time.time() < e: pass'"
    )
    handle = await ProcessRuntime(1024).start(spec(command), tmp_path, {})
    assert isinstance(handle, ProcessHandle)
    try:
        await wait_for(
            lambda: handle.usage().memory_bytes > 64 * 1024 * 1024,
            what="the task's memory to show",
        )
        await wait_for(lambda: handle.usage().cpu_percent > 20, what="the task's CPU to show")
    finally:
        await handle.cancel(0.5)
        await handle.wait()
    usage = handle.usage()
    assert (usage.cpu_percent, usage.memory_bytes) == (0.0, 0)  # nothing left to measure


async def test_start_failure_is_a_clear_error(tmp_path: Path) -> None:
    from cloudai.worker.runtimes.base import RuntimeStartError

    runtime = ProcessRuntime(1024, shell=str(tmp_path / "no-such-shell"))
    with pytest.raises(RuntimeStartError, match="cannot start"):
        await runtime.start(spec("true"), tmp_path / "t", {})


def test_live_group_members_of_our_own_group() -> None:
    assert os.getpid() in live_group_members(os.getpgid(0))
    assert live_group_members(2**22 + 12345) == []


def test_runs_and_cancels_under_uvloop(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")  # `cloudai worker` runs on uvloop

    async def scenario() -> tuple[int, bytes, list[int]]:
        runtime = ProcessRuntime(1024, kill_grace=0.5)
        handle = await runtime.start(spec("echo hi; sleep 60 & sleep 60"), tmp_path, {})
        assert isinstance(handle, ProcessHandle)
        await wait_for(lambda: len(handle.tree()) >= 3, what="the tree")
        pids = [p.pid for p in handle.tree()]
        await handle.cancel(0.5)
        outcome = await asyncio.wait_for(handle.wait(), 10)
        return outcome.exit_code, outcome.log_tail, pids

    exit_code, output, pids = uvloop.run(scenario())
    assert (exit_code, output) == (143, b"hi\n")
    assert all(gone(pid) for pid in pids)
