"""Process runtime: ``command`` run by ``/bin/sh -c`` as a local process.

Each task gets its own session and process group (``start_new_session``), its own
directory (the current directory of the shell) and a log file holding the last
max-log-bytes of stdout+stderr. Cancelling sends SIGTERM to the group and to every
descendant found with psutil (a child that called setsid is not in the group), then
SIGKILL after the grace period. When the shell ends, processes it left running in its
group are stopped the same way: a finished task leaves nothing behind.

Usage is measured over the process tree with psutil: CPU seconds (including reaped
children) per wall-clock second, and the sum of resident set sizes.

With cgroup limits (``cloudai.worker.cgroups``), each task runs in its own cgroup, joined
by a wrapper before the task's code runs; the kernel enforces ``req_cpu`` and
``req_memory``. When the task ends, whatever is left in its cgroup is killed and the
cgroup removed; a task the OOM killer hit ends with reason "out of memory".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from cloudai.worker.cgroups import CgroupLimits, TaskCgroup, format_bytes, joining_argv
from cloudai.worker.runtimes.base import (
    Runtime,
    RuntimeStartError,
    TaskHandle,
    TaskOutcome,
    TaskSpec,
    TaskUsage,
)
from cloudai.worker.runtimes.logs import BoundedLog

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
_POLL = 0.05  # seconds between checks while waiting for processes to go
_OUTPUT_DRAIN = 2.0  # after the shell ended: how long its output may still arrive


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes of group ``pgid`` that are not zombies.

    Zombies do not count: where nobody reaps orphans (some container init processes),
    ``killpg(pgid, 0)`` would report a group of zombies alive forever.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: fall back to the kernel's view, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def kill_leftovers(pid: int, create_time: float) -> int:
    """SIGKILL what is left of a task started as session leader ``pid`` by a worker that
    died; returns how many processes were signalled.

    A live ``pid`` must be the same process (same start time); if it is gone, the
    processes still in its group are ours: Linux does not reuse a pid that is still
    the id of a process group.
    """
    procs: list[psutil.Process] = []
    try:
        leader = psutil.Process(pid)
        if abs(leader.create_time() - create_time) > 0.05:
            return 0  # the pid was reused: the task's group had ended before that
        procs = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        pass
    except psutil.Error:
        return 0
    members = set(live_group_members(pid)) | {p.pid for p in procs}
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if members:
        log.info("stopped %d leftover process(es) of an interrupted task", len(members))
    return len(members)


def exit_code_of(returncode: int) -> tuple[int, str]:
    """(exit code in the shell's convention, a description of how it ended)."""
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return 128 + signum, f"killed by signal {name}"
    return returncode, f"exit code {returncode}"


OUT_OF_MEMORY = "out of memory"


def oom_outcome(
    code: int, detail: str, oom_kills: int | None, hit_limit: bool, limit: int
) -> tuple[str, str]:
    """(detail, reason) of a task in a memory-limited cgroup: "out of memory" when the
    kernel killed a process of it for the limit and the task failed."""
    killed_by_oom = bool(oom_kills) or (
        oom_kills is None and hit_limit and code == 128 + signal.SIGKILL
    )
    if not killed_by_oom:
        return detail, ""
    note = (
        "the kernel killed a process of the task for exceeding the task's memory limit"
        f" of {format_bytes(limit)}"
    )
    # "exit code N" is the shell's own status, which the footer already says
    detail = note if detail.startswith("exit code") else f"{detail}; {note}"
    return detail, OUT_OF_MEMORY if code != 0 else ""


class ProcessHandle(TaskHandle):
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        output: BoundedLog,
        grace: float,
        cgroup: TaskCgroup | None = None,
    ) -> None:
        self._proc = proc
        self.cgroup = cgroup
        self.pid = proc.pid
        self._output = output
        self._grace = grace
        self._reader = asyncio.ensure_future(self._read_output())
        try:
            self._root: psutil.Process | None = psutil.Process(proc.pid)
            started = self._root.create_time()
        except psutil.Error:
            self._root = None
            started = time.time()
        # First usage sample: the average since the process started.
        self._started = started
        self._prev_cpu = 0.0
        self._prev_at = time.monotonic() - max(0.0, time.time() - started)
        self._cancelling: asyncio.Task[None] | None = None
        self._outcome: TaskOutcome | None = None

    async def _read_output(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        while chunk := await stream.read(READ_CHUNK):
            self._output.write(chunk)

    # -- process tree -----------------------------------------------------------------------

    def tree(self) -> list[psutil.Process]:
        """The shell and all its descendants still alive (empty once the shell ended)."""
        if self._root is None or self._proc.returncode is not None:
            return []
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    def _signal(self, sig: signal.Signals, procs: list[psutil.Process]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)  # the group: pgid == pid of the session leader
        if self.cgroup is not None:  # also what left the group and the tree
            self.cgroup.signal_all(sig)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)  # psutil checks the pid was not reused

    async def _wait_gone(self, procs: list[psutil.Process], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            alive = [p for p in procs if not _gone(p)]
            if not alive and self._proc.returncode is not None and not live_group_members(self.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL)

    async def _stop(self, procs: list[psutil.Process], grace: float) -> None:
        self._signal(signal.SIGTERM, procs)
        if await self._wait_gone(procs, grace):
            return
        survivors = [p for p in procs if not _gone(p)]
        log.info("task process %d: still running after %.1f s, sending SIGKILL", self.pid, grace)
        self._signal(signal.SIGKILL, survivors + self.tree())
        await self._wait_gone(survivors, 5.0)

    # -- TaskHandle -------------------------------------------------------------------------

    async def cancel(self, grace: float) -> None:
        if self._cancelling is None:
            self._cancelling = asyncio.ensure_future(self._stop(self.tree(), grace))
        await asyncio.shield(self._cancelling)

    async def wait(self) -> TaskOutcome:
        if self._outcome is not None:
            return self._outcome
        returncode = await self._proc.wait()
        if self._cancelling is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._cancelling)
        if live_group_members(self.pid):
            log.info("task process %d ended; stopping what it left running", self.pid)
            await self._stop([], self._grace)
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), _OUTPUT_DRAIN)
        except TimeoutError:  # a process outside the group still holds the pipe
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        code, detail = exit_code_of(returncode)
        reason = ""
        if self.cgroup is not None:
            cgroup = self.cgroup
            if cgroup.memory_limit:
                oom_kills = await asyncio.to_thread(cgroup.oom_kills)
                hit_limit = await asyncio.to_thread(cgroup.hit_memory_limit)
                detail, reason = oom_outcome(
                    code, detail, oom_kills, hit_limit, cgroup.memory_limit
                )
            await asyncio.to_thread(cgroup.remove)
        tail, dropped = self._output.tail()
        self._output.close()
        self._outcome = TaskOutcome(code, tail, dropped, detail, reason)
        return self._outcome

    def identity(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self._started}

    def usage(self) -> TaskUsage:
        cpu_seconds = 0.0
        rss = 0
        for proc in self.tree():
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    cpu_seconds += t.user + t.system + t.children_user + t.children_system
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
        now = time.monotonic()
        elapsed = now - self._prev_at
        delta = cpu_seconds - self._prev_cpu
        self._prev_cpu, self._prev_at = cpu_seconds, now
        percent = max(0.0, delta / elapsed * 100.0) if elapsed > 0 else 0.0
        return TaskUsage(cpu_percent=round(percent, 2), memory_bytes=rss)


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(
        self,
        max_log_bytes: int,
        kill_grace: float = 5.0,
        shell: str = "/bin/sh",
        limits: CgroupLimits | None = None,
    ) -> None:
        self.max_log_bytes = max_log_bytes
        self.kill_grace = kill_grace
        self.shell = shell
        self.limits = limits  # None: requests are accounted, not enforced

    async def refusal(self, spec: TaskSpec) -> str | None:
        if not spec.command.strip():
            return f"task {spec.task_id!r} has no command to run"
        return None

    async def cleanup_interrupted(self, marker: dict[str, Any]) -> None:
        pid, created = marker.get("pid"), marker.get("create_time")
        if not isinstance(pid, int) or not isinstance(created, (int, float)):
            return
        await asyncio.to_thread(kill_leftovers, pid, float(created))

    async def start(self, spec: TaskSpec, task_dir: Path, env: Mapping[str, str]) -> TaskHandle:
        await asyncio.to_thread(task_dir.mkdir, parents=True, exist_ok=True)
        argv = [self.shell, "-c", spec.command]
        cgroup: TaskCgroup | None = None
        if self.limits is not None:
            try:
                cgroup = await asyncio.to_thread(
                    self.limits.create, spec.task_id, spec.attempt, spec.req_cpu, spec.req_memory
                )
            except OSError as exc:
                raise RuntimeStartError(
                    f"cannot create the task's cgroup: {exc.strerror or exc}"
                ) from exc
            argv = joining_argv(self.shell, cgroup.procs_files, argv)
        output = BoundedLog(task_dir / "output.log", self.max_log_bytes)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=task_dir,
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                limit=READ_CHUNK,
            )
        except OSError as exc:
            output.close()
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            raise RuntimeStartError(f"cannot start {self.shell}: {exc}") from exc
        return ProcessHandle(proc, output, self.kill_grace, cgroup)
