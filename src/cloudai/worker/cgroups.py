"""Per-task cgroups: the kernel holds a process task to its ``req_cpu`` and ``req_memory``.

Detection (pure, testable on a fake tree): the mount table (``/proc/self/mountinfo``)
names the cgroup hierarchies. A unified (v2) hierarchy whose ``cgroup.controllers``
offers ``memory`` and ``cpu`` is preferred; otherwise v1 hierarchies mounted per
controller (``memory`` and ``cpu``). Neither, or none writable: tasks are "accounted"
(their requests count against the worker's capacity; nothing stops a task that uses
more).

Layout: ``<controller root>/cloudai/<owner>/<task id>-<attempt>/``, where the owner
is ``<worker id>-<hash of the work directory>``: the work directory is locked by its
worker, so the owner directory belongs to one live worker at most, and what a crashed
worker left in it can be killed and removed at the next start. The owner directory
exists only while the worker has tasks (a worker killed while idle leaves nothing).

Limits: ``req_memory`` GiB -> ``memory.limit_in_bytes`` (v1; and
``memory.memsw.limit_in_bytes`` when swap is accounted, so that swap cannot extend the
limit) or ``memory.max`` (v2; ``memory.swap.max`` 0, ``memory.oom.group`` 1: an OOM
kill stops the whole task). ``req_cpu`` cores -> a CFS quota per 100 ms period
(``cpu.cfs_quota_us``/``cpu.cfs_period_us`` in v1, ``cpu.max`` in v2). 0: no limit.

A task's shell is placed in its cgroup *before* it runs any of the task's code: the
runtime starts a tiny ``/bin/sh`` wrapper that writes its own pid into each
``cgroup.procs`` and then ``exec``s the task (see ``joining_argv``).

OOM: the kernel counts its kills per cgroup (v1: ``oom_kill`` in
``memory.oom_control``; v2: ``oom_kill`` in ``memory.events``).

Blocking file I/O: the async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODE_V2, MODE_V1, MODE_ACCOUNTED = "cgroup-v2", "cgroup-v1", "accounted"
PARENT = "cloudai"
GIB = 1024**3
CFS_PERIOD_US = 100_000  # the kernel's default period: 100 ms
MIN_QUOTA_US = 1_000  # the smallest quota the kernel accepts
_EMPTY_WAIT = 5.0  # removing a cgroup: how long its killed processes may take to go
_POLL = 0.02

# The wrapper that joins the cgroups, then becomes the task: ``$0`` is a label, then the
# cgroup.procs files, ``--``, and the task's argv. ``$$`` stays the pid after ``exec``.
JOIN_SCRIPT = (
    'p=$$; while [ "$1" != -- ]; do'
    ' echo "$p" > "$1" || { echo "[cloudai] cannot join the task cgroup $1" >&2; exit 125; };'
    ' shift; done; shift; exec "$@"'
)


# -- detection (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mount:
    point: Path
    fstype: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    """Mount points escape space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts of a ``/proc/<pid>/mountinfo`` text (others are skipped)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 3:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(fields[sep + 3].split(","))
        mounts.append(Mount(Path(_unescape(fields[4])), fstype, options))
    return mounts


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where the memory and cpu controllers are (v2: both at the unified root)."""

    version: int
    memory: Path
    cpu: Path

    @property
    def mode(self) -> str:
        return MODE_V2 if self.version == 2 else MODE_V1

    @property
    def roots(self) -> list[Path]:
        return [self.memory] if self.memory == self.cpu else [self.memory, self.cpu]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def find_hierarchy(mounts: Sequence[Mount]) -> tuple[Hierarchy | None, str]:
    """The hierarchy to use, or None and why not."""
    for mount in mounts:
        if mount.fstype != "cgroup2":
            continue
        controllers = set((_read(mount.point / "cgroup.controllers") or "").split())
        if {"memory", "cpu"} <= controllers:
            return Hierarchy(2, mount.point, mount.point), f"cgroup v2 at {mount.point}"
    v1 = [m for m in mounts if m.fstype == "cgroup"]
    memory = next((m.point for m in v1 if "memory" in m.super_options), None)
    cpu = next((m.point for m in v1 if "cpu" in m.super_options), None)
    if memory is not None and cpu is not None:
        return Hierarchy(1, memory, cpu), f"cgroup v1 at {memory} and {cpu}"
    if not mounts:
        return None, "no cgroup file system is mounted"
    return None, "no cgroup hierarchy offers both the memory and the cpu controllers"


def owner_name(worker_id: str, work_dir: Path) -> str:
    """This worker's directory name: its id and a hash of its (locked) work directory."""
    digest = hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:8]
    return f"{worker_id}-{digest}"


def cpu_quota_us(cores: float, period_us: int = CFS_PERIOD_US) -> int:
    return max(MIN_QUOTA_US, round(cores * period_us))


def memory_limit_bytes(gib: float) -> int:
    return max(1, int(gib * GIB))


def format_bytes(count: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.4g} {unit}"
    return f"{count} bytes"


def joining_argv(shell: str, procs_files: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """``argv`` started through the wrapper that first joins ``procs_files``' cgroups."""
    return [shell, "-c", JOIN_SCRIPT, "cloudai-cgroup", *map(str, procs_files), "--", *argv]


def _counter(text: str | None, name: str) -> int | None:
    """``name N`` from a flat-keyed cgroup file (memory.events, memory.oom_control)."""
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _pids(directory: Path) -> list[int]:
    text = _read(directory / "cgroup.procs") or ""
    return [int(p) for p in text.split() if p.isdigit()]


def _kill_all(directory: Path) -> int:
    pids = _pids(directory)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


class CgroupFs:
    """How cgroup directories are made and removed: the kernel's cgroup file system
    creates a new cgroup's control files itself and removes a cgroup without processes
    or children together with them. Tests substitute a fake tree."""

    def mkdir(self, path: Path) -> None:
        path.mkdir()

    def rmdir(self, path: Path) -> None:
        path.rmdir()


KERNEL_FS = CgroupFs()


def _remove_dir(directory: Path, fs: CgroupFs = KERNEL_FS, wait: float = _EMPTY_WAIT) -> bool:
    """Kill what runs in ``directory`` (a cgroup without children) and remove it."""
    deadline = time.monotonic() + wait
    while True:
        _kill_all(directory)
        try:
            fs.rmdir(directory)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() >= deadline:
                log.warning("cannot remove cgroup %s: %s", directory, exc.strerror or exc)
                return False
        time.sleep(_POLL)


# -- per task -------------------------------------------------------------------------------------


@dataclass(slots=True)
class TaskCgroup:
    """One task's cgroup: one directory (v2) or one per controller (v1)."""

    hierarchy: Hierarchy
    dirs: list[Path]
    memory_limit: int = 0  # bytes; 0: none
    cpu_quota: int = 0  # µs per CFS_PERIOD_US; 0: none
    on_removed: Callable[[], None] | None = None
    fs: CgroupFs = KERNEL_FS

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    @property
    def memory_dir(self) -> Path:
        return self.dirs[0]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self.dirs:
            found.update(_pids(directory))
        return sorted(found)

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def oom_kills(self) -> int | None:
        """How many processes the kernel killed for the memory limit (None: unknown)."""
        if self.hierarchy.version == 2:
            return _counter(_read(self.memory_dir / "memory.events"), "oom_kill")
        return _counter(_read(self.memory_dir / "memory.oom_control"), "oom_kill")

    def hit_memory_limit(self) -> bool:
        """v1 kernels without an oom_kill counter: the limit was reached at least once."""
        text = _read(self.memory_dir / "memory.failcnt")
        return bool(text and text.strip().isdigit() and int(text) > 0)

    def remove(self) -> bool:
        """Kill anything left in the cgroup and remove it (idempotent)."""
        removed = all([_remove_dir(d, self.fs) for d in self.dirs])
        if self.on_removed is not None:
            self.on_removed()
        return removed


class CgroupLimits:
    """Creates and removes this worker's task cgroups in ``hierarchy``."""

    def __init__(self, hierarchy: Hierarchy, owner: str, fs: CgroupFs = KERNEL_FS) -> None:
        self.hierarchy = hierarchy
        self.owner = owner
        self.fs = fs
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return self.hierarchy.mode

    def owner_dirs(self) -> list[Path]:
        return [root / PARENT / self.owner for root in self.hierarchy.roots]

    def _enable_controllers(self, directory: Path) -> None:
        """v2: let the children of ``directory`` use the memory and cpu controllers."""
        control = directory / "cgroup.subtree_control"
        enabled = set((_read(control) or "").split())
        missing = [c for c in ("memory", "cpu") if c not in enabled]
        if missing:
            _write(control, " ".join(f"+{c}" for c in missing))

    def _ensure_owner(self) -> None:
        for root in self.hierarchy.roots:
            parent = root / PARENT
            if self.hierarchy.version == 2:
                self._enable_controllers(root)
            self._mkdir(parent)
            if self.hierarchy.version == 2:
                self._enable_controllers(parent)
            self._mkdir(parent / self.owner)
            if self.hierarchy.version == 2:
                self._enable_controllers(parent / self.owner)

    def _mkdir(self, path: Path) -> None:
        with contextlib.suppress(FileExistsError):
            self.fs.mkdir(path)

    def _remove_owner_if_idle(self) -> None:
        with self._lock:
            for directory in self.owner_dirs():
                with contextlib.suppress(OSError):  # busy: tasks still run
                    self.fs.rmdir(directory)

    def prepare(self) -> int:
        """At start-up: check that we can create our cgroups; kill and remove what a
        crashed run of this worker left. Returns how many leftover cgroups were removed.
        Raises OSError when the hierarchy is not writable."""
        leftovers = self.remove_leftovers()
        with self._lock:
            self._ensure_owner()
        self._remove_owner_if_idle()
        return leftovers

    def remove_leftovers(self) -> int:
        """Kill and remove the task cgroups in our owner directories; returns how many
        tasks had some."""
        removed: set[str] = set()
        for owner_dir in self.owner_dirs():
            if not owner_dir.is_dir():
                continue
            for child in sorted(p for p in owner_dir.iterdir() if p.is_dir()):
                killed = len(_pids(child))
                if _remove_dir(child, self.fs):
                    removed.add(child.name)
                    log.info(
                        "removed the leftover cgroup %s (%d process(es) killed)", child, killed
                    )
            with contextlib.suppress(OSError):
                self.fs.rmdir(owner_dir)
        return len(removed)

    def create(self, task_id: str, attempt: int, cores: float, memory_gib: float) -> TaskCgroup:
        """Make the task's cgroup with its limits (0: no limit); OSError on failure."""
        dirs = self._make_task_dirs(f"{task_id}-{attempt}")
        cgroup = TaskCgroup(self.hierarchy, dirs, on_removed=self._remove_owner_if_idle, fs=self.fs)
        try:
            self._apply(cgroup, cores, memory_gib)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def _make_task_dirs(self, name: str, tries: int = 3) -> list[Path]:
        for tries_left in range(tries - 1, -1, -1):
            try:
                with self._lock:
                    self._ensure_owner()
                    dirs = [d / name for d in self.owner_dirs()]
                    for directory in dirs:
                        if directory.exists():  # a stale one of an earlier run
                            _remove_dir(directory, self.fs)
                        self.fs.mkdir(directory)
                return dirs
            except FileNotFoundError:  # a parent vanished meanwhile: build it again
                if not tries_left:
                    raise
        raise AssertionError("unreachable")

    def _apply(self, cgroup: TaskCgroup, cores: float, memory_gib: float) -> None:
        mem_dir, cpu_dir = cgroup.dirs[0], cgroup.dirs[-1]
        if memory_gib > 0:
            limit = memory_limit_bytes(memory_gib)
            if self.hierarchy.version == 2:
                _write(mem_dir / "memory.max", str(limit))
                for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if (mem_dir / name).exists():
                        with contextlib.suppress(OSError):
                            _write(mem_dir / name, value)
            else:
                _write(mem_dir / "memory.limit_in_bytes", str(limit))
                memsw = mem_dir / "memory.memsw.limit_in_bytes"
                if memsw.exists():  # swap accounted: memory + swap stays within the limit
                    with contextlib.suppress(OSError):
                        _write(memsw, str(limit))
            cgroup.memory_limit = limit
        if cores > 0:
            quota = cpu_quota_us(cores)
            if self.hierarchy.version == 2:
                _write(cpu_dir / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            else:
                _write(cpu_dir / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(cpu_dir / "cpu.cfs_quota_us", str(quota))
            cgroup.cpu_quota = quota

    def close(self) -> None:
        """At shutdown: remove the owner directories if no task cgroup is left."""
        self._remove_owner_if_idle()


# -- set-up ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitsSetup:
    limits: CgroupLimits | None
    mode: str
    description: str  # for the start-up log line


def setup_limits(
    wanted: str,
    owner: str,
    mountinfo: Path = Path("/proc/self/mountinfo"),
    fs: CgroupFs = KERNEL_FS,
) -> LimitsSetup:
    """The worker's task limits: ``wanted`` "accounted" turns enforcement off; "auto"
    uses the kernel's cgroups when it can."""
    if wanted == MODE_ACCOUNTED:
        return LimitsSetup(
            None, MODE_ACCOUNTED, "accounted, not enforced (--task-limits accounted)"
        )
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
    except OSError as exc:
        why = f"cannot read {mountinfo}: {exc.strerror or exc}"
        return LimitsSetup(None, MODE_ACCOUNTED, f"accounted, not enforced ({why})")
    hierarchy, why = find_hierarchy(mounts)
    if hierarchy is None:
        return LimitsSetup(None, MODE_ACCOUNTED, f"accounted, not enforced ({why})")
    limits = CgroupLimits(hierarchy, owner, fs)
    try:
        leftovers = limits.prepare()
    except OSError as exc:
        return LimitsSetup(
            None,
            MODE_ACCOUNTED,
            f"accounted, not enforced ({why} is not writable: {exc.strerror or exc})",
        )
    where = ", ".join(str(d) for d in limits.owner_dirs())
    text = f"enforced by {why} (task cgroups under {where})"
    if leftovers:
        text += f"; removed {leftovers} leftover task cgroup(s) of an earlier run"
    return LimitsSetup(limits, hierarchy.mode, text)
