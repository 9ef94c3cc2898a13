"""Console command parsing and dispatch against a real ClusterAdmin (real registry,
telemetry and task book; only the gRPC calls to workers are faked)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudai.master import console as console_module
from cloudai.master.cluster_admin import ClusterAdmin, MasterCounters
from cloudai.master.console import (
    COMMANDS,
    ConsoleCommands,
    Reply,
    UsageError,
    logs_through,
    make_console,
    parse_task,
)
from cloudai.master.registry import WorkerRegistry
from cloudai.master.tasks import TaskBook
from cloudai.proto import pb
from cloudai.telemetry.manager import TelemetryManager


class FakeLink:
    """Stands in for the gRPC calls to workers (AssignTask, CancelTask, MasterRegister)."""

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.assigned: list[pb.Task] = []
        self.accept = True
        self.unavailable = False

    def connect(self, worker_id: str) -> None:
        self.connected.append(worker_id)

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        from cloudai.master.worker_link import WorkerUnavailable

        if self.unavailable:
            raise WorkerUnavailable(f"worker {worker_id} did not answer AssignTask")
        self.assigned.append(task)
        return pb.TaskAck(success=self.accept, message="accepted" if self.accept else "no room")

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return pb.TaskAck(success=True, message="cancelling")

    async def close(self) -> None:
        pass


@dataclass
class Cluster:
    registry: WorkerRegistry
    telemetry: TelemetryManager
    tasks: TaskBook
    link: FakeLink
    admin: ClusterAdmin


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    registry = WorkerRegistry()
    telemetry = TelemetryManager(30.0)
    link = FakeLink()
    tasks = TaskBook(registry, link)  # type: ignore[arg-type]
    telemetry.subscribe(tasks.on_telemetry)
    counters = MasterCounters(
        heartbeats=lambda: 0,
        heartbeats_per_second=lambda: 0.0,
        websocket_clients=lambda: 0,
        fanout_tick=lambda: 0.005,
    )
    admin = ClusterAdmin(registry, telemetry, tasks, link, counters)  # type: ignore[arg-type]
    yield Cluster(registry, telemetry, tasks, link, admin)


@pytest.fixture
def commands(cluster: Cluster) -> ConsoleCommands:
    return ConsoleCommands(cluster.admin, clock=lambda: 1_000_000.0, register_wait=0)


def join(cluster: Cluster, worker_id: str = "w1", cpu: float = 42.0) -> None:
    """The worker registers (RegisterWorker) and sends one heartbeat."""
    ok, message = cluster.registry.register(
        pb.WorkerInfo(worker_id=worker_id, total_cpu=8, total_memory=16, total_gpu=1)
    )
    assert ok, message
    cluster.telemetry.process_heartbeat(
        pb.Heartbeat(
            worker_id=worker_id,
            cpu_usage=cpu,
            memory_usage=33.0,
            gpu_usage=7.0,
            running_tasks=[pb.RunningTask(task_id="t-run", cpu_allocated=1, status="running")],
        )
    )


async def run(commands: ConsoleCommands, line: str) -> tuple[Reply, str]:
    reply = await commands.execute(line)
    return reply, reply.text(width=160)


def single_error_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


# -- dispatch and bad input --------------------------------------------------------------------


async def test_empty_line_does_nothing(commands: ConsoleCommands) -> None:
    reply, text = await run(commands, "   ")
    assert text == "" and not reply.error and not reply.exit


async def test_help_lists_every_command(commands: ConsoleCommands) -> None:
    _, text = await run(commands, "help")
    for command in COMMANDS.values():
        assert command.usage.split()[0] in text
    assert "tasks [status]" in text  # brackets are text, not rich markup
    _, text = await run(commands, "help task")
    assert "-cpu_cores N" in text and "submit a task" in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("frobnicate", "error: unknown command 'frobnicate'; type 'help' for the list of commands"),
        ("wokers", "did you mean 'workers'?"),
        ("help nope", "unknown command 'nope'"),
        ("workers extra", "error: workers takes no arguments, got 1 (usage: workers)"),
        ("stats", "error: stats takes 1 argument, got 0 (usage: stats <worker_id>)"),
        ("stats a b", "stats takes 1 argument, got 2"),
        ("register", "register takes 1 to 2 arguments, got 0 (usage: register <worker_id>"),
        ("register a b c", "register takes 1 to 2 arguments, got 3"),
        ("unregister", "(usage: unregister <worker_id>)"),
        ("cancel", "(usage: cancel <task_id>)"),
        ("logs", "(usage: logs <task_id>)"),
        ("task", "task takes at least 1 argument(s), got 0"),
        ("exit now", "exit takes no arguments"),
        ("status -x", "error: unknown option '-x' (usage: status [-w])"),
        ("tasks bogus", "error: unknown task status 'bogus' (one of: queued,"),
        ('task w1 --cmd "unclosed', "error: cannot parse the line: No closing quotation"),
        ("stats nobody", "error: unknown worker 'nobody' (see 'workers') (usage: stats"),
        ("unregister nobody", "error: unknown worker 'nobody'"),
        ("cancel t-none", "error: unknown task 't-none' (usage: cancel <task_id>)"),
        ("logs t-none", "error: unknown task 't-none' (usage: logs <task_id>)"),
        ("register bad/id 1.2.3.4:5", "worker_id 'bad/id' has invalid characters"),
        ("register w1 nowhere", "error: address 'nowhere' is not HOST:PORT"),
        ("register w1 host:99999", "address 'host:99999' is not HOST:PORT"),
        ("task nobody ubuntu", "error: unknown worker 'nobody' (usage: task"),
        ("task w1", 'error: give a docker image or --cmd "<command>"'),
        ("task w1 ubuntu -mem lots", "error: -mem expects a number, got 'lots'"),
        ("task w1 ubuntu -cpu_cores -1", "-cpu_cores expects a finite number >= 0, got '-1'"),
        ("task w1 ubuntu -gpu_cores nan", "-gpu_cores expects a finite number >= 0"),
        ("task w1 ubuntu -storage", "error: -storage needs a value"),
        ("task w1 ubuntu --bogus 1", "error: unknown option '--bogus'"),
        ("task w1 ubuntu debian", "one docker image, got 2: ubuntu debian"),
        ("task -mem 1 ubuntu", "the first argument must be a worker id"),
        ("task w1 --cmd ''", "--cmd needs a non-empty value"),
    ],
)
async def test_bad_input_gives_one_line_with_the_usage(
    commands: ConsoleCommands, line: str, expected: str
) -> None:
    reply, text = await run(commands, line)
    assert reply.error and not reply.exit
    assert expected in single_error_line(text)


async def test_unexpected_failures_are_one_line_too(
    commands: ConsoleCommands, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(cluster.admin, "summary", broken)
    _, text = await run(commands, "status")
    assert single_error_line(text) == "error: status failed: RuntimeError: database on fire"


async def test_commands_are_case_insensitive(commands: ConsoleCommands) -> None:
    reply, text = await run(commands, "STATUS")
    assert not reply.error and "Workers" in text


async def test_exit_and_quit(commands: ConsoleCommands) -> None:
    for line in ("exit", "quit", "QUIT"):
        reply, text = await run(commands, line)
        assert reply.exit and "stopping the master" in text


# -- workers -----------------------------------------------------------------------------------


async def test_register_authorises_and_calls_master_register(
    commands: ConsoleCommands, cluster: Cluster
) -> None:
    reply, text = await run(commands, "register w1 127.0.0.1:50052")
    assert not reply.error
    assert "worker w1 authorised at 127.0.0.1:50052" in text
    assert "not answered MasterRegister yet" in text
    assert cluster.registry.get("w1").address == "127.0.0.1:50052"
    assert cluster.link.connected == ["w1"]


async def test_register_reports_the_worker_joining(
    commands: ConsoleCommands, cluster: Cluster
) -> None:
    commands.register_wait = 5.0

    def connect(worker_id: str) -> None:  # the worker answers at once and registers
        cluster.registry.register(pb.WorkerInfo(worker_id=worker_id))

    cluster.link.connect = connect  # type: ignore[method-assign]
    _, text = await run(commands, "register w1 127.0.0.1:50052")
    assert text == "worker w1 registered at 127.0.0.1:50052\n"


async def test_register_without_address(commands: ConsoleCommands, cluster: Cluster) -> None:
    _, text = await run(commands, "register w2")
    assert "worker w2 authorised; it registers itself" in text
    assert "w2" in cluster.registry and cluster.link.connected == []


async def test_unregister(commands: ConsoleCommands, cluster: Cluster) -> None:
    await run(commands, "register w1 127.0.0.1:50052")
    reply, text = await run(commands, "unregister w1")
    assert not reply.error and text == "worker w1 unregistered\n"
    assert "w1" not in cluster.registry


async def test_workers_table(commands: ConsoleCommands, cluster: Cluster) -> None:
    _, text = await run(commands, "workers")
    assert "no workers registered" in text
    await run(commands, "register w1 127.0.0.1:50052")
    await run(commands, "register w2 127.0.0.1:50053")
    join(cluster, "w1")
    _, text = await run(commands, "workers")
    header = next(line for line in text.splitlines() if "┃" in line)
    w1, w2 = [line for line in text.splitlines() if "│" in line]
    for column in ("ID", "Address", "Active", "CPU", "Mem", "GPU", "Tasks", "Heartbeat"):
        assert column in header
    assert [c.strip() for c in w1.split("│")[1:-1]][:8] == [
        "w1",
        "127.0.0.1:50052",
        "active",
        "42.0% of 8",
        "33.0% 5.3/16",
        "0.0%",
        "7.0% of 1",
        "1",
    ]
    assert "ago" in w1  # heartbeat age
    assert [c.strip() for c in w2.split("│")[1:-1]] == [  # never seen: unknown, not 0 %
        "w2",
        "127.0.0.1:50053",
        "waiting",
        "-",
        "-",
        "-",
        "none",
        "0",
        "never",
    ]


async def test_stats(commands: ConsoleCommands, cluster: Cluster) -> None:
    await run(commands, "register w1 127.0.0.1:50052")
    join(cluster, "w1")
    _, text = await run(commands, "stats w1")
    assert "CPU             42.0% of 8 cores" in text
    assert "Memory          33.0% of 16 GiB (5.3 GiB used)" in text
    assert "t-run" in text and "running" in text


async def test_status_and_live_status(commands: ConsoleCommands, cluster: Cluster) -> None:
    await run(commands, "register w1 127.0.0.1:50052")
    join(cluster, "w1")
    _, text = await run(commands, "status")
    assert "1 active / 1 registered" in text
    assert "0 running, 0 queued, 0 finished" in text
    assert "heartbeats/s" in text
    reply = await commands.execute("status -w")
    assert reply.live is not None and not reply.output
    assert "1 active / 1 registered" in Reply([reply.live()]).text()


# -- tasks -------------------------------------------------------------------------------------


def test_parse_task_forms() -> None:
    spec = parse_task(["w1", "ubuntu", "-cpu_cores", "2", "-mem", "1.5", "-storage", "10"])
    assert (spec.worker_id, spec.docker_image, spec.command) == ("w1", "ubuntu", "")
    assert (spec.req_cpu, spec.req_memory, spec.req_storage, spec.req_gpu) == (2, 1.5, 10, 0)
    spec = parse_task(["w1", "--cmd", "echo hi", "--gpu_cores=1", "--id", "t1"])
    assert (spec.docker_image, spec.command, spec.req_gpu, spec.task_id) == ("", "echo hi", 1, "t1")
    spec = parse_task(["w1", "python:3", "-cmd=python -V", "--mem", "2"])
    assert (spec.docker_image, spec.command, spec.req_memory) == ("python:3", "python -V", 2)
    with pytest.raises(UsageError):
        parse_task(["w1"])


async def test_task_submit_list_logs_cancel(commands: ConsoleCommands, cluster: Cluster) -> None:
    await run(commands, "register w1 127.0.0.1:50052")
    _, text = await run(commands, "task w1 ubuntu")
    assert text.startswith("task ") and "queued (waiting for worker 'w1' to connect" in text
    join(cluster, "w1")

    reply, text = await run(commands, 'task w1 --cmd "echo hello" -cpu_cores 1 --id t1')
    assert not reply.error
    assert text == "task t1 submitted to w1: assigned (accepted)\n"
    assigned = cluster.link.assigned[-1]
    assert (assigned.command, assigned.req_cpu, assigned.target_worker_id) == (
        "echo hello",
        1,
        "w1",
    )

    _, text = await run(commands, "task w1 ubuntu -mem 2")
    assert "submitted to w1: assigned" in text
    _, text = await run(commands, "task w1 ubuntu --id t1")
    assert single_error_line(text) == "error: task id 't1' already exists"

    _, text = await run(commands, "tasks")
    assert "t1" in text and "$ echo hello" in text and "ubuntu" in text and "assigned" in text

    _, text = await run(commands, "logs t1")
    assert "task t1: assigned" in text and "(no logs yet)" in text

    reply, text = await run(commands, "cancel t1")
    assert not reply.error and text == "task t1: cancelling\n"

    await cluster.tasks.record_result(
        pb.TaskResult(task_id="t1", worker_id="w1", status="success", logs="hello\n", exit_code=0)
    )
    _, text = await run(commands, "logs t1")
    assert "task t1: success, exit code 0" in text and "hello" in text
    _, text = await run(commands, "tasks success")
    assert "t1" in text and "ubuntu" not in text
    _, text = await run(commands, "tasks queued")
    assert "queued" in text and "waiting for worker" in text  # the first one still waits
    _, text = await run(commands, "cancel t1")
    assert single_error_line(text) == "error: task t1 already finished (success)"


async def test_task_rejected_or_unreachable(commands: ConsoleCommands, cluster: Cluster) -> None:
    await run(commands, "register w1 127.0.0.1:50052")
    join(cluster, "w1")
    cluster.link.accept = False
    _, text = await run(commands, "task w1 ubuntu --id t2")
    assert single_error_line(text) == "error: task t2 rejected by w1: no room"
    cluster.link.unavailable = True
    _, text = await run(commands, "task w1 ubuntu")
    assert single_error_line(text).startswith("error: worker w1 did not answer AssignTask")


# -- completion --------------------------------------------------------------------------------


async def test_completion(commands: ConsoleCommands, cluster: Cluster) -> None:
    await run(commands, "register w1 127.0.0.1:50052")
    await run(commands, "register w2 127.0.0.1:50053")
    join(cluster, "w1")
    await run(commands, "task w1 ubuntu --id t-abc")
    assert commands.complete("") == list(COMMANDS)
    assert commands.complete("st") == ["status", "stats"]
    assert commands.complete("stats ") == ["w1", "w2"]
    assert commands.complete("unregister w2") == ["w2"]
    assert commands.complete("task ") == ["w1", "w2"]
    assert commands.complete("task w1 ubuntu -m") == ["-mem"]
    assert commands.complete("logs t-") == ["t-abc"]
    assert commands.complete("cancel ") == ["t-abc"]
    assert commands.complete("tasks ru") == ["running"]
    assert commands.complete("help wo") == ["workers"]
    assert commands.complete("status ") == ["-w"]
    assert commands.complete("workers ") == []


def test_prompt_toolkit_completer(commands: ConsoleCommands) -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    completer = console_module._Completer(commands)
    completions = list(completer.get_completions(Document("wor"), CompleteEvent()))
    assert [(c.text, c.start_position) for c in completions] == [("workers", -3)]


# -- shell plumbing ----------------------------------------------------------------------------


def test_logs_through_moves_console_handlers_and_restores_them() -> None:
    import sys

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.__stderr__)
    root.addHandler(handler)
    try:
        target = io.StringIO()
        with logs_through(target):
            assert handler.stream is target
        assert handler.stream is sys.__stderr__
    finally:
        root.removeHandler(handler)


def test_make_console_returns_the_shell(cluster: Cluster, tmp_path: Path) -> None:
    foreground = make_console(cluster.admin, tmp_path / "history", "banner")
    assert callable(foreground)


def test_shell_history_lives_where_it_is_told(cluster: Cluster, tmp_path: Path) -> None:
    from prompt_toolkit.history import FileHistory

    path = tmp_path / "data" / "console_history"
    shell = console_module.ConsoleShell(ConsoleCommands(cluster.admin), path, "banner")
    history = shell._history()
    assert isinstance(history, FileHistory)
    assert Path(history.filename) == path
