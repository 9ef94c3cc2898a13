"""Interactive admin console on the master's terminal.

Two layers:

- ``ConsoleCommands``: parsing and dispatch of one command line to the ``ClusterAdmin``
  (the same use cases the HTTP API calls); returns a ``Reply`` (rich renderables, an exit
  flag, or a live view). Pure apart from those calls, so it is unit-tested without a
  terminal.
- ``ConsoleShell``: the prompt_toolkit front end (history in the data directory, tab
  completion of commands, worker ids and task ids, ``patch_stdout`` so log lines are
  printed above the prompt instead of through it).

``make_console(admin, ...)`` returns the shell's coroutine function; ``run_master``
runs it in the foreground and shuts the master down when it returns (``exit``,
``quit``, Ctrl-D, or Ctrl-C on an empty line).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import ANSI
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import FormattedTextControl, Layout, Window
from prompt_toolkit.patch_stdout import patch_stdout
from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cloudai import views
from cloudai.alerts import views as alert_views
from cloudai.api.errors import describe
from cloudai.api.models import TaskSubmission, Worker, WorkerRegistration
from cloudai.master.alerts_admin import AlertsAdmin
from cloudai.master.cluster_admin import AdminError, ClusterAdmin, ErrorKind
from cloudai.task_status import TaskStatus

log = logging.getLogger(__name__)

PROMPT = "cloudai> "


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str
    summary: str
    min_args: int = 0
    max_args: int | None = 0  # None: any number


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("help", "help [command]", "list the commands, or explain one", 0, 1),
        Command(
            "status",
            "status [-w]",
            "cluster summary: workers, tasks, heartbeat ingest rate (-w: live until a key)",
            0,
            1,
        ),
        Command(
            "workers",
            "workers",
            "table of workers: address, active, CPU/mem/GPU %, tasks, heartbeat age",
        ),
        Command("stats", "stats <worker_id>", "one worker in detail, with its running tasks", 1, 1),
        Command(
            "register",
            "register <worker_id> <ip:port>",
            "authorise a worker and call its MasterRegister (no address: it registers itself)",
            1,
            2,
        ),
        Command("unregister", "unregister <worker_id>", "revoke a worker's authorisation", 1, 1),
        Command(
            "task",
            'task (<worker_id> | --any) (<docker_image> | --cmd "<command>") [-cpu_cores N] '
            "[-mem GiB] [-storage GiB] [-gpu_cores N] [--id TASK_ID] "
            "[--time-limit SECONDS] [--retries N]",
            "submit a task to a worker, or with --any to the least-loaded one that fits "
            "(a docker image, a command, or both)",
            1,
            None,
        ),
        Command(
            "tasks",
            "tasks [status]",
            "table of tasks, optionally only those with one status: "
            + ", ".join(views.TASK_STATUSES),
            0,
            1,
        ),
        Command("cancel", "cancel <task_id>", "ask the task's worker to cancel it", 1, 1),
        Command("logs", "logs <task_id>", "a task's status, exit code and logs", 1, 1),
        Command(
            "alerts",
            "alerts [pending|firing|resolved|rules|silences|history]",
            "current alerts (or one state), the alert rules, the silences or the history",
            0,
            1,
        ),
        Command("exit", "exit", "stop the master and leave (also: quit, Ctrl-D)"),
        Command("quit", "quit", "same as exit"),
    )
}

# Resource flags of `task`, as the existing Go CLI spells them, plus -- forms and aliases.
_TASK_NUMBER_FLAGS = {
    "cpu_cores": "req_cpu",
    "cpu": "req_cpu",
    "mem": "req_memory",
    "memory": "req_memory",
    "storage": "req_storage",
    "gpu_cores": "req_gpu",
    "gpu": "req_gpu",
    "time-limit": "time_limit",
    "time_limit": "time_limit",
    "retries": "retries",
}
_TASK_STRING_FLAGS = {"cmd": "command", "command": "command", "id": "task_id", "image": "image"}
TASK_FLAGS = (
    "-cpu_cores",
    "-mem",
    "-storage",
    "-gpu_cores",
    "--cmd",
    "--id",
    "--time-limit",
    "--retries",
)


class UsageError(Exception):
    """Bad input: one line of explanation, and the usage of the command if known."""

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage

    def line(self) -> str:
        if self.usage:
            return f"error: {self.message} (usage: {self.usage})"
        return f"error: {self.message}"


@dataclass
class Reply:
    """What one command produced."""

    output: list[RenderableType] = field(default_factory=list)
    error: bool = False
    exit: bool = False
    live: Callable[[], RenderableType] | None = None  # re-rendered until a key is pressed

    def text(self, width: int = 100, color: bool = False) -> str:
        return "".join(views.render_text(item, width, color) for item in self.output)


def one_line(text: str, style: str = "") -> Text:
    """One line of output (render_text never breaks it: the terminal wraps it if it must)."""
    return Text(text, style=style)


def _error(message: str, usage: str | None = None) -> Reply:
    return Reply([one_line(UsageError(message, usage).line(), "red")], error=True)


def parse_number(flag: str, text: str, usage: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag} expects a number, got {text!r}", usage) from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{flag} expects a finite number >= 0, got {text!r}", usage)
    return value


def parse_task(args: list[str]) -> TaskSubmission:
    """``task`` arguments -> TaskSubmission. Raises UsageError on bad input."""
    usage = COMMANDS["task"].usage
    if args and args[0] == "--any":  # the master places it on a worker that fits
        fields: dict[str, str | float | bool] = {"any_worker": True}
    elif not args or args[0].startswith("-"):
        raise UsageError("the first argument must be a worker id (or --any)", usage)
    else:
        fields = {"worker_id": args[0]}
    images: list[str] = []
    i = 1
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-") or token == "-":
            images.append(token)
            continue
        name, has_value, value = token.lstrip("-").partition("=")
        if name not in _TASK_NUMBER_FLAGS and name not in _TASK_STRING_FLAGS:
            raise UsageError(f"unknown option {token!r}", usage)
        if not has_value:
            if i >= len(args):
                raise UsageError(f"{token} needs a value", usage)
            value = args[i]
            i += 1
        flag = token.partition("=")[0]
        if name in _TASK_NUMBER_FLAGS:
            fields[_TASK_NUMBER_FLAGS[name]] = parse_number(flag, value, usage)
        elif _TASK_STRING_FLAGS[name] == "image":
            images.append(value)
        else:
            if not value:
                raise UsageError(f"{flag} needs a non-empty value", usage)
            fields[_TASK_STRING_FLAGS[name]] = value
    if len(images) > 1:
        raise UsageError(f"one docker image, got {len(images)}: {' '.join(images)}", usage)
    if images:
        fields["docker_image"] = images[0]
    if not fields.get("docker_image") and not fields.get("command"):
        raise UsageError('give a docker image or --cmd "<command>"', usage)
    try:
        return TaskSubmission.model_validate(fields)
    except ValidationError as exc:
        raise UsageError(describe(exc), usage) from None


def split_words(text: str) -> list[str]:
    """Words of a partial line for completion: the last one is what is being typed."""
    words = text.split()
    if not text or text[-1].isspace():
        words.append("")
    return words


class ConsoleCommands:
    """Parses console commands and runs them as ClusterAdmin use cases; returns Replies."""

    def __init__(
        self,
        admin: ClusterAdmin,
        clock: Callable[[], float] = time.time,
        register_wait: float = 2.0,
        alerts: AlertsAdmin | None = None,
    ) -> None:
        self.admin = admin
        self.alerts = alerts
        self.clock = clock
        self.register_wait = register_wait

    # -- dispatch ---------------------------------------------------------------------------

    async def execute(self, line: str) -> Reply:
        """Run one line. Never raises (bar cancellation): bad input gives an error line."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return _error(f"cannot parse the line: {exc}")
        if not words:
            return Reply()
        name, args = words[0].lower(), words[1:]
        command = COMMANDS.get(name)
        if command is None:
            return _error(self._unknown(words[0]))
        if len(args) < command.min_args or (
            command.max_args is not None and len(args) > command.max_args
        ):
            if command.max_args == 0:
                wanted = "no arguments"
            elif command.max_args is None:
                wanted = f"at least {command.min_args} argument(s)"
            elif command.min_args == command.max_args:
                wanted = f"{command.min_args} argument{'' if command.min_args == 1 else 's'}"
            else:
                wanted = f"{command.min_args} to {command.max_args} arguments"
            return _error(f"{name} takes {wanted}, got {len(args)}", command.usage)
        handler: Callable[[list[str]], Awaitable[Reply]] = getattr(self, f"_cmd_{name}")
        try:
            return await handler(args)
        except UsageError as exc:
            return Reply([one_line(exc.line(), "red")], error=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected failure: one line, details in the log
            log.debug("console command %r failed", line, exc_info=True)
            return _error(f"{name} failed: {type(exc).__name__}: {exc}")

    def _unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name.lower(), list(COMMANDS), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown command {name!r}; {hint}type 'help' for the list of commands"

    # -- completion -------------------------------------------------------------------------

    def worker_ids(self) -> list[str]:
        return self.admin.worker_ids()

    def task_ids(self) -> list[str]:
        return self.admin.task_ids()

    def complete(self, text_before_cursor: str) -> list[str]:
        """Candidates for the word being typed at the end of ``text_before_cursor``."""
        words = split_words(text_before_cursor)
        current = words[-1]
        if len(words) == 1:
            candidates = list(COMMANDS)
        else:
            name, position = words[0].lower(), len(words) - 1
            candidates = []
            if name in ("stats", "unregister", "register") and position == 1:
                candidates = self.worker_ids()
            elif name == "task":
                candidates = self.worker_ids() if position == 1 else list(TASK_FLAGS)
            elif name in ("cancel", "logs") and position == 1:
                candidates = self.task_ids()
            elif name == "tasks" and position == 1:
                candidates = list(views.TASK_STATUSES)
            elif name == "help" and position == 1:
                candidates = list(COMMANDS)
            elif name == "status" and position == 1:
                candidates = ["-w"]
        return [c for c in candidates if c.startswith(current)]

    # -- helpers ----------------------------------------------------------------------------

    def _worker(self, worker_id: str, usage: str) -> Worker:
        try:
            return self.admin.get_worker(worker_id)
        except AdminError:
            raise UsageError(f"unknown worker {worker_id!r} (see 'workers')", usage) from None

    def status_view(self) -> RenderableType:
        return views.status_panel(self.admin.summary().model_dump(mode="json"))

    def workers_view(self) -> RenderableType:
        workers = [worker.model_dump(mode="json") for worker in self.admin.list_workers()]
        return views.workers_table(workers, self.clock())

    # -- commands ---------------------------------------------------------------------------

    async def _cmd_help(self, args: list[str]) -> Reply:
        if args:
            command = COMMANDS.get(args[0].lower())
            if command is None:
                return _error(self._unknown(args[0]))
            return Reply([Text.assemble((command.usage, "bold"), "\n  ", command.summary)])
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", max_width=56)
        table.add_column()
        for command in COMMANDS.values():
            table.add_row(Text(command.usage), Text(command.summary))
        note = Text("Tab completes commands, worker ids and task ids.", style="dim")
        return Reply([table, note])

    async def _cmd_status(self, args: list[str]) -> Reply:
        if args and args[0] not in ("-w", "--watch"):
            raise UsageError(f"unknown option {args[0]!r}", COMMANDS["status"].usage)
        if args:
            return Reply(live=self.status_view)
        return Reply([self.status_view()])

    async def _cmd_workers(self, args: list[str]) -> Reply:
        return Reply([self.workers_view()])

    async def _cmd_stats(self, args: list[str]) -> Reply:
        worker = self._worker(args[0], COMMANDS["stats"].usage)
        return Reply([views.worker_detail(worker.model_dump(mode="json"), self.clock())])

    async def _cmd_register(self, args: list[str]) -> Reply:
        usage = COMMANDS["register"].usage
        worker_id = args[0]
        address = args[1] if len(args) > 1 else ""
        try:
            request = WorkerRegistration(worker_id=worker_id, address=address)
            worker = await self.admin.authorise_worker(request)
        except ValidationError as exc:
            raise UsageError(describe(exc), usage) from None
        except AdminError as exc:
            raise UsageError(exc.message, usage) from None
        address = address or worker.address  # a known worker's stored address: re-announced
        if not address:
            return Reply(
                [
                    one_line(
                        f"worker {worker_id} authorised; it registers itself "
                        "(start it with --master pointing at this master)"
                    )
                ]
            )
        if await self._wait_for_session(worker_id):
            return Reply([one_line(f"worker {worker_id} registered at {address}", "green")])
        return Reply(
            [
                one_line(
                    f"worker {worker_id} authorised at {address}; it has not answered "
                    "MasterRegister yet (retrying in the background; see 'workers')"
                )
            ]
        )

    async def _wait_for_session(self, worker_id: str) -> bool:
        deadline = time.monotonic() + self.register_wait
        while not self.admin.has_session(worker_id):
            if time.monotonic() >= deadline or worker_id not in self.admin.worker_ids():
                return False
            await asyncio.sleep(0.05)
        return True

    async def _cmd_unregister(self, args: list[str]) -> Reply:
        worker_id = args[0]
        try:
            await self.admin.revoke_worker(worker_id)
        except AdminError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                return _error(exc.message)
            raise UsageError(
                f"unknown worker {worker_id!r} (see 'workers')", COMMANDS["unregister"].usage
            ) from None
        return Reply([one_line(f"worker {worker_id} unregistered")])

    async def _cmd_task(self, args: list[str]) -> Reply:
        request = parse_task(args)
        try:
            task = await self.admin.submit_task(request)
        except AdminError as exc:
            usage = (
                COMMANDS["task"].usage
                if exc.kind in (ErrorKind.INVALID, ErrorKind.NOT_FOUND)
                else None
            )
            raise UsageError(exc.message, usage) from None
        if task.status is TaskStatus.REJECTED:
            return _error(f"task {task.task_id} rejected by {task.worker_id}: {task.message}")
        message = f" ({task.message})" if task.message else ""
        return Reply(
            [one_line(f"task {task.task_id} submitted to {task.worker_id}: {task.status}{message}")]
        )

    async def _cmd_tasks(self, args: list[str]) -> Reply:
        status = None
        if args:
            try:
                status = TaskStatus.parse(args[0])
            except ValueError as exc:
                raise UsageError(str(exc), COMMANDS["tasks"].usage) from None
        tasks = [task.model_dump(mode="json") for task in self.admin.list_tasks(status=status)]
        return Reply([views.tasks_table(tasks, self.clock())])

    async def _cmd_cancel(self, args: list[str]) -> Reply:
        try:
            task = await self.admin.cancel_task(args[0])
        except AdminError as exc:
            usage = COMMANDS["cancel"].usage if exc.kind is ErrorKind.NOT_FOUND else None
            raise UsageError(exc.message, usage) from None
        message = task.message or "cancellation requested"
        return Reply([one_line(f"task {task.task_id}: {message}")])

    async def _cmd_logs(self, args: list[str]) -> Reply:
        try:
            task = self.admin.get_task(args[0])
        except AdminError as exc:
            raise UsageError(exc.message, COMMANDS["logs"].usage) from None
        return Reply([views.task_logs(task.model_dump(mode="json"))])

    async def _cmd_alerts(self, args: list[str]) -> Reply:
        usage = COMMANDS["alerts"].usage
        if self.alerts is None:
            return _error("alerts are not enabled on this master")
        what = args[0].lower() if args else ""
        now = self.clock()
        if what == "rules":
            rules = [r.model_dump(mode="json") for r in self.alerts.rules()]
            return Reply([alert_views.rules_table(rules)])
        if what == "silences":
            silences = [s.model_dump(mode="json") for s in self.alerts.silences()]
            return Reply([alert_views.silences_table(silences, now)])
        if what == "history":
            events = [e.model_dump(mode="json") for e in await self.alerts.history(limit=50)]
            return Reply([alert_views.history_table(events, now)])
        if what and what not in ("pending", "firing", "resolved"):
            raise UsageError(f"unknown alerts view {args[0]!r}", usage)
        alerts = [a.model_dump(mode="json") for a in self.alerts.alerts(what or None)]
        return Reply([alert_views.alerts_table(alerts, now)])

    async def _cmd_exit(self, args: list[str]) -> Reply:
        return Reply([one_line("stopping the master")], exit=True)

    _cmd_quit = _cmd_exit


# -- the prompt_toolkit shell ---------------------------------------------------------------


@contextlib.contextmanager
def logs_through(stream: Any) -> Iterator[None]:
    """Point the root logger's console handlers at ``stream`` (the patch_stdout proxy)."""
    consoles = {id(s) for s in (sys.__stderr__, sys.__stdout__) if s is not None}
    moved: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) or not isinstance(
            handler, logging.StreamHandler
        ):
            continue
        if id(handler.stream) in consoles:
            moved.append((handler, handler.stream))
            handler.setStream(stream)
    try:
        yield
    finally:
        for handler, original in moved:
            handler.setStream(original)


class ConsoleShell:
    def __init__(self, commands: ConsoleCommands, history_path: Path, banner: str) -> None:
        self.commands = commands
        self.history_path = history_path
        self._banner = banner
        self.color = os.environ.get("NO_COLOR") is None and sys.stdout.isatty()
        self.session: PromptSession[str] | None = None

    def _history(self) -> History:
        path = self.history_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        except OSError as exc:
            log.warning("console history not kept: %s", exc)
            return InMemoryHistory()
        return FileHistory(str(path))

    def _width(self) -> int:
        if self.session is None:
            return 100
        return self.session.output.get_size().columns or 100

    def _render(self, renderable: RenderableType) -> str:
        return views.render_text(renderable, self._width(), self.color)

    def _print(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()

    def banner(self) -> str:
        return self._banner

    async def run(self) -> None:
        session: PromptSession[str] = PromptSession(
            history=self._history(),
            completer=_Completer(self.commands),
            complete_while_typing=False,
            key_bindings=_ctrl_c_bindings(),
        )
        self.session = session
        with patch_stdout(raw=True), logs_through(sys.stdout):
            self._print(self.banner())
            while True:
                try:
                    line = await session.prompt_async(PROMPT)
                except KeyboardInterrupt:
                    continue
                except EOFError:  # Ctrl-D, or Ctrl-C on an empty line
                    self._print("stopping the master\n")
                    return
                reply = await self.commands.execute(line)
                try:
                    self._print("".join(self._render(item) for item in reply.output))
                    if reply.live is not None:
                        await self._live(reply.live)
                except Exception as exc:  # a display failure must not end the console
                    log.debug("console output failed", exc_info=True)
                    self._print(f"error: cannot display the result: {type(exc).__name__}: {exc}\n")
                if reply.exit:
                    return

    async def _live(self, make: Callable[[], RenderableType]) -> None:
        """Re-render ``make()`` every second until a key is pressed."""

        def text() -> ANSI:
            frame = self._render(Group(make(), Text("(press any key to stop)", style="dim")))
            return ANSI(frame.rstrip("\n"))

        bindings = KeyBindings()

        @bindings.add(Keys.Any)
        def _stop(event: KeyPressEvent) -> None:
            if event.key_sequence and event.key_sequence[0].key == Keys.CPRResponse:
                return
            event.app.exit()

        app: Application[None] = Application(
            layout=Layout(Window(FormattedTextControl(text), wrap_lines=False)),
            key_bindings=bindings,
            refresh_interval=1.0,
            full_screen=False,
        )
        await app.run_async()


class _Completer(Completer):
    def __init__(self, commands: ConsoleCommands) -> None:
        self.commands = commands

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        current = split_words(text)[-1]
        for candidate in self.commands.complete(text):
            yield Completion(candidate, start_position=-len(current))


def _ctrl_c_bindings() -> KeyBindings:
    """Ctrl-C clears a line being typed; on an empty line it stops the master (as in a
    shell that a local cluster runs in the foreground of)."""
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        if event.app.current_buffer.text:
            event.app.exit(exception=KeyboardInterrupt())  # a fresh prompt
        else:
            event.app.exit(exception=EOFError())

    return bindings


def console_banner(grpc_port: int | None, http_port: int | None) -> str:
    parts = [f"gRPC port {grpc_port}"]
    if http_port:
        parts.append(f"HTTP port {http_port} (API /api, WebSocket /ws/telemetry)")
    return (
        f"CloudAI master console: {', '.join(parts)}.\n"
        "Type 'help' for the commands; 'exit', Ctrl-D or Ctrl-C on an empty line stops "
        "the master.\n"
    )


def make_console(
    admin: ClusterAdmin, history_path: Path, banner: str, *, alerts: AlertsAdmin | None = None
) -> Callable[[], Awaitable[None]]:
    """The console's coroutine function, run in the foreground by ``run_master``."""
    return ConsoleShell(ConsoleCommands(admin, alerts=alerts), history_path, banner).run
