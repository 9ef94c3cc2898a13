"""Task cgroups on a fake tree: detection from a mount table, the files written for the
limits, the wrapper that joins a cgroup, OOM detection and clean-up."""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from cloudai.worker.cgroups import (
    MODE_ACCOUNTED,
    MODE_V1,
    MODE_V2,
    CgroupFs,
    CgroupLimits,
    Hierarchy,
    find_hierarchy,
    format_bytes,
    joining_argv,
    owner_name,
    parse_mountinfo,
    setup_limits,
)
from cloudai.worker.runtimes.base import TaskSpec
from cloudai.worker.runtimes.process import OUT_OF_MEMORY, ProcessRuntime, oom_outcome

V1_FILES = {
    "cgroup.procs": "",
    "memory.limit_in_bytes": "9223372036854771712",
    "memory.memsw.limit_in_bytes": "9223372036854771712",
    "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    "memory.failcnt": "0",
    "cpu.cfs_period_us": "100000",
    "cpu.cfs_quota_us": "-1",
}
V2_FILES = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "memory.max": "max",
    "memory.swap.max": "max",
    "memory.oom.group": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    "cpu.max": "max 100000",
}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class FakeCgroupFs(CgroupFs):
    """A directory tree that behaves like cgroupfs where it matters: a new cgroup has
    its control files; one with children or live processes cannot be removed."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def mkdir(self, path: Path) -> None:
        path.mkdir()
        for name, content in self.files.items():
            (path / name).write_text(content)

    def rmdir(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "no such cgroup", str(path))
        procs = (path / "cgroup.procs").read_text().split()
        if any(p.is_dir() for p in path.iterdir()) or any(_alive(int(p)) for p in procs):
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        shutil.rmtree(path)


def fake_root(path: Path, files: dict[str, str], **extra: str) -> Path:
    path.mkdir(parents=True)
    for name, content in {**files, **extra}.items():
        (path / name).write_text(content)
    return path


def mountinfo_line(n: int, point: Path, fstype: str, options: str) -> str:
    return f"{n} 1 0:{n} / {point} rw,relatime shared:{n} - {fstype} {fstype} {options}"


@pytest.fixture
def v1(tmp_path: Path) -> CgroupLimits:
    memory = fake_root(tmp_path / "memory", V1_FILES)
    cpu = fake_root(tmp_path / "cpu", V1_FILES)
    return CgroupLimits(Hierarchy(1, memory, cpu), "w1-0123abcd", FakeCgroupFs(V1_FILES))


@pytest.fixture
def v2(tmp_path: Path) -> CgroupLimits:
    root = fake_root(tmp_path / "unified", V2_FILES, **{"cgroup.controllers": "cpu io memory"})
    return CgroupLimits(Hierarchy(2, root, root), "w1-0123abcd", FakeCgroupFs(V2_FILES))


# -- detection ------------------------------------------------------------------------------------


def test_parse_mountinfo_keeps_cgroup_mounts() -> None:
    text = "\n".join(
        [
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup"
            " rw,cpu,cpuacct",
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
            r"41 31 0:38 / /mnt/cgroup\040two rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
            "garbage",
        ]
    )
    mounts = parse_mountinfo(text)
    assert [(str(m.point), m.fstype) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", "cgroup"),
        ("/sys/fs/cgroup/memory", "cgroup"),
        ("/mnt/cgroup two", "cgroup2"),
    ]
    assert mounts[0].super_options == {"rw", "cpu", "cpuacct"}


def test_v1_per_controller_is_found_next_to_a_unified_mount_without_memory(
    tmp_path: Path,
) -> None:
    unified = fake_root(tmp_path / "unified", {"cgroup.controllers": "hugetlb\n"})
    lines = [
        mountinfo_line(1, tmp_path / "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        mountinfo_line(2, tmp_path / "cpuset", "cgroup", "rw,cpuset"),
        mountinfo_line(3, tmp_path / "memory", "cgroup", "rw,memory"),
        mountinfo_line(4, unified, "cgroup2", "rw"),
    ]
    hierarchy, why = find_hierarchy(parse_mountinfo("\n".join(lines)))
    assert hierarchy == Hierarchy(1, tmp_path / "memory", tmp_path / "cpu,cpuacct")
    assert hierarchy.mode == MODE_V1
    assert why.startswith("cgroup v1 at ")


def test_v2_is_preferred_when_it_offers_memory_and_cpu(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "cg", {"cgroup.controllers": "cpuset cpu io memory pids\n"})
    lines = [
        mountinfo_line(1, tmp_path / "memory", "cgroup", "rw,memory"),
        mountinfo_line(2, tmp_path / "cpu", "cgroup", "rw,cpu"),
        mountinfo_line(3, root, "cgroup2", "rw"),
    ]
    hierarchy, why = find_hierarchy(parse_mountinfo("\n".join(lines)))
    assert hierarchy == Hierarchy(2, root, root)
    assert (hierarchy.mode, hierarchy.roots, why) == (MODE_V2, [root], f"cgroup v2 at {root}")


def test_no_usable_hierarchy_says_why(tmp_path: Path) -> None:
    assert find_hierarchy([]) == (None, "no cgroup file system is mounted")
    only_cpu = parse_mountinfo(mountinfo_line(1, tmp_path / "cpu", "cgroup", "rw,cpu"))
    assert find_hierarchy(only_cpu) == (
        None,
        "no cgroup hierarchy offers both the memory and the cpu controllers",
    )


def test_owner_names_differ_by_work_directory(tmp_path: Path) -> None:
    first = owner_name("w1", tmp_path / "a")
    assert first == owner_name("w1", tmp_path / "a")
    assert first.startswith("w1-") and len(first) == len("w1-") + 8
    assert first != owner_name("w1", tmp_path / "b")


# -- limits on a fake tree ---------------------------------------------------------------------


def test_v1_task_cgroup_gets_memory_and_cpu_limits(v1: CgroupLimits, tmp_path: Path) -> None:
    cgroup = v1.create("t1", 2, cores=0.5, memory_gib=0.0625)
    memory = tmp_path / "memory" / "cloudai" / "w1-0123abcd" / "t1-2"
    cpu = tmp_path / "cpu" / "cloudai" / "w1-0123abcd" / "t1-2"
    assert cgroup.dirs == [memory, cpu]
    assert cgroup.procs_files == [memory / "cgroup.procs", cpu / "cgroup.procs"]
    assert (memory / "memory.limit_in_bytes").read_text() == str(64 * 1024 * 1024)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(64 * 1024 * 1024)
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cgroup.memory_limit, cgroup.cpu_quota) == (64 * 1024 * 1024, 50_000)
    assert cgroup.remove()
    assert not memory.exists() and not cpu.exists()
    assert not memory.parent.exists()  # the owner directory goes with its last task
    assert (tmp_path / "memory" / "cloudai").is_dir()


def test_zero_requests_set_no_limit_and_tiny_ones_the_smallest_quota(v1: CgroupLimits) -> None:
    free = v1.create("free", 0, cores=0.0, memory_gib=0.0)
    assert (free.dirs[0] / "memory.limit_in_bytes").read_text() == V1_FILES["memory.limit_in_bytes"]
    assert (free.dirs[1] / "cpu.cfs_quota_us").read_text() == "-1"
    assert (free.memory_limit, free.cpu_quota) == (0, 0)
    tiny = v1.create("tiny", 0, cores=0.001, memory_gib=0.0)
    assert (tiny.dirs[1] / "cpu.cfs_quota_us").read_text() == "1000"
    free.remove()
    assert tiny.dirs[0].parent.is_dir()  # another task still has its cgroup
    tiny.remove()
    assert not tiny.dirs[0].parent.exists()


def test_without_swap_accounting_only_the_memory_limit_is_written(tmp_path: Path) -> None:
    files = {k: v for k, v in V1_FILES.items() if "memsw" not in k}
    memory = fake_root(tmp_path / "memory", files)
    limits = CgroupLimits(Hierarchy(1, memory, memory), "w", FakeCgroupFs(files))
    cgroup = limits.create("t1", 1, cores=0, memory_gib=1)
    assert (cgroup.dirs[0] / "memory.limit_in_bytes").read_text() == str(1024**3)
    assert not (cgroup.dirs[0] / "memory.memsw.limit_in_bytes").exists()


def test_v2_enables_the_controllers_and_writes_max_files(v2: CgroupLimits, tmp_path: Path) -> None:
    root = tmp_path / "unified"
    cgroup = v2.create("t1", 1, cores=1.5, memory_gib=0.5)
    task_dir = root / "cloudai" / "w1-0123abcd" / "t1-1"
    assert cgroup.dirs == [task_dir]
    for directory in (root, root / "cloudai", root / "cloudai" / "w1-0123abcd"):
        assert (directory / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert (task_dir / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (task_dir / "memory.swap.max").read_text() == "0"
    assert (task_dir / "memory.oom.group").read_text() == "1"
    assert (task_dir / "cpu.max").read_text() == "150000 100000"
    assert cgroup.oom_kills() == 0
    (task_dir / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert cgroup.oom_kills() == 1
    cgroup.remove()
    assert not task_dir.exists()


def test_v1_oom_counter_and_fail_count(v1: CgroupLimits) -> None:
    cgroup = v1.create("t1", 1, cores=0, memory_gib=0.1)
    assert (cgroup.oom_kills(), cgroup.hit_memory_limit()) == (0, False)
    (cgroup.dirs[0] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert cgroup.oom_kills() is None  # a kernel without the counter
    (cgroup.dirs[0] / "memory.failcnt").write_text("12\n")
    assert cgroup.hit_memory_limit()


def test_prepare_kills_and_removes_what_a_crashed_run_left(v1: CgroupLimits) -> None:
    leftover = subprocess.Popen(["sleep", "60"])
    try:
        stale = v1.create("old", 1, cores=1, memory_gib=1)
        for procs in stale.procs_files:
            procs.write_text(f"{leftover.pid}\n")
        assert v1.prepare() == 1  # one task's cgroup (a directory per controller)
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert not any(d.exists() for d in stale.dirs)
        assert not any(d.exists() for d in v1.owner_dirs())
    finally:
        leftover.kill()
        leftover.wait()


def test_a_stale_task_cgroup_of_the_same_name_is_replaced(v1: CgroupLimits) -> None:
    first = v1.create("t1", 1, cores=0, memory_gib=0)
    (first.dirs[0] / "memory.failcnt").write_text("5")
    second = v1.create("t1", 1, cores=0, memory_gib=0)
    assert (second.dirs[0] / "memory.failcnt").read_text() == "0"


def test_setup_limits_modes(tmp_path: Path) -> None:
    accounted = setup_limits("accounted", "w1-x")
    assert (accounted.limits, accounted.mode) == (None, MODE_ACCOUNTED)
    assert accounted.description == "accounted, not enforced (--task-limits accounted)"

    memory = fake_root(tmp_path / "memory", V1_FILES)
    cpu = fake_root(tmp_path / "cpu", V1_FILES)
    table = tmp_path / "mountinfo"
    table.write_text(
        mountinfo_line(1, memory, "cgroup", "rw,memory")
        + "\n"
        + mountinfo_line(2, cpu, "cgroup", "rw,cpu")
        + "\n"
    )
    enforced = setup_limits("auto", "w1-x", table, FakeCgroupFs(V1_FILES))
    assert enforced.mode == MODE_V1 and enforced.limits is not None
    assert enforced.description.startswith(f"enforced by cgroup v1 at {memory} and {cpu}")
    assert (memory / "cloudai").is_dir() and not (memory / "cloudai" / "w1-x").exists()

    missing = tmp_path / "mountinfo-missing-dirs"
    missing.write_text(
        mountinfo_line(1, tmp_path / "nope" / "memory", "cgroup", "rw,memory")
        + "\n"
        + mountinfo_line(2, tmp_path / "nope" / "cpu", "cgroup", "rw,cpu")
    )
    fallback = setup_limits("auto", "w1-x", missing)
    assert (fallback.limits, fallback.mode) == (None, MODE_ACCOUNTED)
    assert "is not writable" in fallback.description

    unreadable = setup_limits("auto", "w1-x", tmp_path / "no-such-mountinfo")
    assert unreadable.mode == MODE_ACCOUNTED and "cannot read" in unreadable.description


# -- joining and OOM --------------------------------------------------------------------------


def test_the_wrapper_joins_every_cgroup_before_the_task_runs(tmp_path: Path) -> None:
    procs = [tmp_path / "memory.procs", tmp_path / "cpu.procs"]
    for path in procs:
        path.write_text("")
    # The task prints its pid and what the procs files held when it started.
    argv = ["/bin/sh", "-c", f'echo $$; cat "{procs[0]}" "{procs[1]}"']
    run = subprocess.run(joining_argv("/bin/sh", procs, argv), capture_output=True, text=True)
    pid, in_memory, in_cpu = run.stdout.split()
    assert run.returncode == 0 and pid == in_memory == in_cpu


def test_the_wrapper_refuses_to_run_the_task_outside_its_cgroup(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = joining_argv("/bin/sh", [tmp_path / "gone" / "cgroup.procs"], ["touch", str(marker)])
    run = subprocess.run(argv, capture_output=True, text=True)
    assert run.returncode == 125
    assert "[cloudai] cannot join the task cgroup" in run.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("code", "kills", "hit_limit", "reason"),
    [
        (137, 1, True, OUT_OF_MEMORY),  # the shell itself was the victim
        (1, 2, True, OUT_OF_MEMORY),  # a child was, and the shell failed
        (0, 1, True, ""),  # a child was, but the task says it succeeded
        (137, 0, True, ""),  # killed by someone else
        (137, None, True, OUT_OF_MEMORY),  # no counter: the limit was hit, then SIGKILL
        (1, None, True, ""),
    ],
)
def test_oom_outcome(code: int, kills: int | None, hit_limit: bool, reason: str) -> None:
    how = "killed by signal SIGKILL" if code == 137 else f"exit code {code}"
    detail, got = oom_outcome(code, how, kills, hit_limit, 64 * 1024 * 1024)
    assert got == reason
    note = "the kernel killed a process of the task for exceeding the task's memory limit of 64 MiB"
    if reason or (code == 0 and kills):
        assert detail == (f"{how}; {note}" if code == 137 else note)
    else:
        assert detail == how


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (512, 2048, 64 * 1024**2, 3 * 1024**3 // 2)] == [
        "512 bytes",
        "2 KiB",
        "64 MiB",
        "1.5 GiB",
    ]


async def test_process_runtime_runs_the_task_in_its_cgroup(
    v1: CgroupLimits, tmp_path: Path
) -> None:
    runtime = ProcessRuntime(64 * 1024, kill_grace=0.5, limits=v1)
    spec = TaskSpec("t1", command="echo $$; exit 3", req_cpu=0.25, req_memory=0.0625, attempt=1)
    handle = await runtime.start(spec, tmp_path / "task", {})
    dirs = v1.owner_dirs()
    memory_dir, cpu_dir = (d / "t1-1" for d in dirs)
    assert (cpu_dir / "cpu.cfs_quota_us").read_text() == "25000"
    # The kernel counted an OOM kill (written before the task's end is examined).
    (memory_dir / "memory.oom_control").write_text("oom_kill 1\n")
    outcome = await handle.wait()
    assert outcome.exit_code == 3 and outcome.reason == OUT_OF_MEMORY
    assert "memory limit of 64 MiB" in outcome.detail
    pid = outcome.log_tail.decode().split()[0]
    assert (memory_dir.exists(), cpu_dir.exists()) == (False, False)  # removed at the end
    assert pid.isdigit()


async def test_process_runtime_reports_a_cgroup_it_cannot_create(tmp_path: Path) -> None:
    missing = tmp_path / "no-cgroup-fs"
    limits = CgroupLimits(Hierarchy(1, missing, missing), "w", FakeCgroupFs(V1_FILES))
    runtime = ProcessRuntime(1024, limits=limits)
    with pytest.raises(Exception, match="cannot create the task's cgroup"):
        await runtime.start(TaskSpec("t1", command="true"), tmp_path / "task", {})
