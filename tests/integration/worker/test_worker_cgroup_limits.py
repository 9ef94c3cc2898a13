"""Task limits on this machine's real cgroups, through a real master and real workers:
memory (OOM), CPU quota, time limits, the mode a worker reports, crash leftovers.

Needs root and a writable cgroup hierarchy with the memory and cpu controllers (CI's
machines have cgroup v1); skipped elsewhere.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from cloudai.proto import pb, rpc
from cloudai.worker.cgroups import find_hierarchy, parse_mountinfo
from tests.harness import Process, admin_client, start_master, start_worker, wait_until

FAST = ["--interval", "0.3"]
FINAL = {"success", "failure", "cancelled", "timed_out", "lost", "rejected"}


def _hierarchy() -> Any:
    try:
        mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    hierarchy, _ = find_hierarchy(mounts)
    if hierarchy is None or os.geteuid() != 0:
        return None
    if not all(os.access(root, os.W_OK) for root in hierarchy.roots):
        return None
    return hierarchy


HIERARCHY = _hierarchy()
pytestmark = pytest.mark.skipif(
    HIERARCHY is None, reason="needs root and a writable cgroup hierarchy (memory and cpu)"
)


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.close()


def cluster(tmp_path: Path, procs: list[Process], *worker_args: str) -> tuple[Process, Any]:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    procs.append(start_worker(tmp_path, "w1", *FAST, *worker_args, master=master.extra["grpc"]))
    api = admin_client(master)
    wait_until(lambda: api.worker("w1").registered, 20, "w1 to register")
    return master, api


def finished(api: Any, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task = api.task(task_id).model_dump(mode="json")
        return task if task["status"] in FINAL else None

    result: dict[str, Any] = wait_until(done, timeout, f"task {task_id} to end")
    return result


def task_cgroups(output: Path) -> dict[str, Path]:
    """The cgroup directories named in the ``/proc/self/cgroup`` the task printed."""
    assert HIERARCHY is not None
    found = {}
    for line in output.read_text().splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if HIERARCHY.version == 2 and controllers == "":
            found["memory"] = found["cpu"] = HIERARCHY.memory / path.lstrip("/")
        elif "memory" in controllers.split(","):
            found["memory"] = HIERARCHY.memory / path.lstrip("/")
        elif "cpu" in controllers.split(","):
            found["cpu"] = HIERARCHY.cpu / path.lstrip("/")
    return found


def test_a_task_over_its_memory_limit_ends_out_of_memory(
    tmp_path: Path, procs: list[Process]
) -> None:
    _, api = cluster(tmp_path, procs)
    assert api.worker("w1").task_limits == HIERARCHY.mode
    assert f"task limits: enforced by cgroup v{HIERARCHY.version}" in procs[1].log()
    command = 'python3 -c "b = bytearray(200*1024*1024); import time; time.sleep(5)"'
    task_id = api.submit("w1", command=command, req_memory=0.0625).task_id
    task = finished(api, task_id)
    assert task["status"] == "failure", task
    assert task["exit_code"] == 137
    assert task["logs"].endswith(
        "[cloudai] out of memory: exit code 137 (the kernel killed a process of the task for"
        " exceeding the task's memory limit of 64 MiB)\n"
    )
    assert "out of memory" in task["message"]


def test_cpu_and_memory_limits_are_in_the_tasks_cgroup_while_it_runs(
    tmp_path: Path, procs: list[Process]
) -> None:
    _, api = cluster(tmp_path, procs)
    go = tmp_path / "go"
    command = f"cat /proc/self/cgroup; while [ ! -e {go} ]; do sleep 0.05; done"
    task_id = api.submit("w1", command=command, req_cpu=0.5, req_memory=0.25).task_id
    output = tmp_path / "work-w1" / "tasks" / task_id / "output.log"
    dirs = wait_until(
        lambda: output.exists() and len(task_cgroups(output)) == 2 and task_cgroups(output),
        20,
        "the task's cgroups in its output",
    )
    assert dirs["memory"].name.startswith(f"{task_id}-")  # then the attempt
    if HIERARCHY.version == 1:
        assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(2**28)
    else:
        assert (dirs["cpu"] / "cpu.max").read_text().split() == ["50000", "100000"]
        assert (dirs["memory"] / "memory.max").read_text().strip() == str(2**28)
    go.touch()
    assert finished(api, task_id)["status"] == "success"
    wait_until(lambda: not any(d.exists() for d in dirs.values()), 10, "the cgroups removed")


async def test_a_time_limit_stops_the_task_and_says_timed_out(
    tmp_path: Path, procs: list[Process], masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    """The worker's own TaskResult (a fake master records it): reason, attempt, timing."""
    master = fake_master_class()
    worker = start_worker(tmp_path, "w1", *FAST, master=await masters.start(master))
    procs.append(worker)
    (info,) = await eventually(lambda: master.registrations, what="the registration")
    assert info.task_limits == HIERARCHY.mode
    async with grpc.aio.insecure_channel(worker.extra["address"]) as channel:
        task = pb.Task(task_id="t1", command="sleep 60", time_limit_seconds=2, attempt=2)
        ack = await rpc.MasterWorkerStub(channel).AssignTask(task, timeout=5)
    assert ack.success, ack.message
    assigned = time.monotonic()
    # The limit is 2 s and SIGTERM ends `sleep` at once; the lower bound below shows the
    # limit was applied (the wait's bound leaves room for a loaded machine).
    result = await eventually(lambda: master.result("t1"), 15.0, "the result of t1")
    assert time.monotonic() - assigned >= 2.0
    assert (result.status, result.reason, result.attempt, result.exit_code) == (
        "failure",
        "timed out",
        2,
        143,
    )
    assert result.logs.endswith(
        "[cloudai] timed out after 2 s; exit code 143 (killed by signal SIGTERM)\n"
    )


def test_accounted_mode_is_said_and_enforces_nothing(tmp_path: Path, procs: list[Process]) -> None:
    _, api = cluster(tmp_path, procs, "--task-limits", "accounted")
    assert api.worker("w1").task_limits == "accounted"
    assert "task limits: accounted, not enforced (--task-limits accounted)" in procs[1].log()
    command = 'python3 -c "b = bytearray(100*1024*1024)"; cat /proc/self/cgroup'
    task_id = api.submit("w1", command=command, req_memory=0.0625).task_id
    task = finished(api, task_id)
    assert task["status"] == "success", task
    assert "/cloudai/" not in task["logs"]  # the task ran in no cgroup of ours


def test_a_restarted_worker_kills_and_removes_the_cgroups_of_its_crashed_run(
    tmp_path: Path, procs: list[Process]
) -> None:
    master, api = cluster(tmp_path, procs)
    task_id = api.submit("w1", command="cat /proc/self/cgroup; sleep 300").task_id
    output = tmp_path / "work-w1" / "tasks" / task_id / "output.log"
    dirs = wait_until(
        lambda: output.exists() and len(task_cgroups(output)) == 2 and task_cgroups(output),
        20,
        "the task's cgroups in its output",
    )
    pids = [int(p) for p in (dirs["memory"] / "cgroup.procs").read_text().split()]
    assert pids
    procs[1].send_signal(signal.SIGKILL)  # the worker dies; its task goes on
    procs[1].proc.wait(10)
    assert all(psutil.pid_exists(pid) for pid in pids)
    procs.append(start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"]))

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: all(gone(pid) for pid in pids), 20, "the leftover task killed")
    wait_until(lambda: not any(d.exists() for d in dirs.values()), 20, "its cgroups removed")
    assert "removed 1 leftover task cgroup(s) of an earlier run" in procs[-1].log()
