"""Interactive admin console on the master's terminal.

Two layers:

- ``ConsoleCommands``: parsing and dispatch of one command line against a
  ``MasterServer``; returns a ``Reply`` (rich renderables, an exit flag, or a live
  view). Pure apart from the server calls, so it is unit-tested without a terminal.
- ``ConsoleShell``: the prompt_toolkit front end (history in the data directory, tab
  completion of commands, worker ids and task ids, ``patch_stdout`` so log lines are
  printed above the prompt instead of through it).

``make_console(server)`` returns the shell's coroutine function; ``MasterServer.run``
runs it in the foreground and shuts the master down when it returns (``exit``,
``quit``, Ctrl-D).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import inspect
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cloudai import views
from cloudai.master.admin_api import task_json
from cloudai.master.registry import RegistryError
from cloudai.master.status import worker_view
from cloudai.master.tasks import TaskError, TaskSpec

if TYPE_CHECKING:
    from cloudai.master.server import MasterServer

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
            'task <worker_id> (<docker_image> | --cmd "<command>") [-cpu_cores N] [-mem GB] '
            "[-storage GB] [-gpu_cores N] [--id TASK_ID]",
            "submit a task to a worker (a docker image, a command, or both)",
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
}
_TASK_STRING_FLAGS = {"cmd": "command", "command": "command", "id": "task_id", "image": "image"}
TASK_FLAGS = ("-cpu_cores", "-mem", "-storage", "-gpu_cores", "--cmd", "--id")


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


def parse_task(args: list[str]) -> TaskSpec:
    """``task`` arguments -> TaskSpec. Raises UsageError on bad input."""
    usage = COMMANDS["task"].usage
    if not args or args[0].startswith("-"):
        raise UsageError("the first argument must be a worker id", usage)
    spec = TaskSpec(target_worker_id=args[0])
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
            setattr(spec, _TASK_NUMBER_FLAGS[name], parse_number(flag, value, usage))
        elif _TASK_STRING_FLAGS[name] == "image":
            images.append(value)
        else:
            if not value:
                raise UsageError(f"{flag} needs a non-empty value", usage)
            setattr(spec, _TASK_STRING_FLAGS[name], value)
    if len(images) > 1:
        raise UsageError(f"one docker image, got {len(images)}: {' '.join(images)}", usage)
    if images:
        spec.docker_image = images[0]
    if not spec.docker_image and not spec.command:
        raise UsageError('give a docker image or --cmd "<command>"', usage)
    return spec


def split_words(text: str) -> list[str]:
    """Words of a partial line for completion: the last one is what is being typed."""
    words = text.split()
    if not text or text[-1].isspace():
        words.append("")
    return words


class ConsoleCommands:
    """Parses and runs console commands against a MasterServer; returns Replies."""

    def __init__(
        self,
        server: MasterServer,
        clock: Callable[[], float] = time.time,
        register_wait: float = 2.0,
    ) -> None:
        self.server = server
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
        return sorted(entry.worker_id for entry in self.server.registry)

    def task_ids(self) -> list[str]:
        tasks = self.server.tasks.list()
        tasks.sort(key=lambda t: t.submitted_at, reverse=True)
        return [task.task_id for task in tasks]

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

    def _worker(self, worker_id: str, usage: str) -> dict[str, Any]:
        entry = self.server.registry.get(worker_id)
        if entry is None:
            raise UsageError(f"unknown worker {worker_id!r} (see 'workers')", usage)
        return worker_view(entry, self.server.telemetry.get_worker_telemetry(worker_id))

    def _workers(self) -> list[dict[str, Any]]:
        telemetry = self.server.telemetry.get_all_worker_telemetry()
        return [worker_view(e, telemetry.get(e.worker_id)) for e in self.server.registry]

    def status_view(self) -> RenderableType:
        return views.status_panel(self.server.summary())

    def workers_view(self) -> RenderableType:
        return views.workers_table(self._workers(), self.clock())

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
        return Reply([views.worker_detail(worker, self.clock())])

    async def _cmd_register(self, args: list[str]) -> Reply:
        usage = COMMANDS["register"].usage
        worker_id = args[0]
        address = args[1] if len(args) > 1 else ""
        try:
            result: Any = self.server.authorise_worker(worker_id, address)
            if inspect.isawaitable(result):
                await result
        except (RegistryError, ValueError) as exc:
            raise UsageError(str(exc), usage) from None
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
        registry = self.server.registry
        deadline = time.monotonic() + self.register_wait
        while not registry.has_session(worker_id):
            if time.monotonic() >= deadline or worker_id not in registry:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _cmd_unregister(self, args: list[str]) -> Reply:
        worker_id = args[0]
        result: Any = self.server.revoke_worker(worker_id)
        if inspect.isawaitable(result):
            result = await result
        if not result:
            raise UsageError(
                f"unknown worker {worker_id!r} (see 'workers')", COMMANDS["unregister"].usage
            )
        return Reply([one_line(f"worker {worker_id} unregistered")])

    async def _cmd_task(self, args: list[str]) -> Reply:
        spec = parse_task(args)
        try:
            task = await self.server.tasks.submit(spec)
        except TaskError as exc:
            usage = COMMANDS["task"].usage if exc.kind in ("invalid", "not_found") else None
            raise UsageError(str(exc), usage) from None
        if task.status == "rejected":
            return _error(
                f"task {task.task_id} rejected by {task.target_worker_id}: {task.message}"
            )
        message = f" ({task.message})" if task.message else ""
        return Reply(
            [
                one_line(
                    f"task {task.task_id} submitted to {task.target_worker_id}: "
                    f"{task.status}{message}"
                )
            ]
        )

    async def _cmd_tasks(self, args: list[str]) -> Reply:
        status = args[0].lower() if args else None
        if status is not None and status not in views.TASK_STATUSES:
            raise UsageError(f"unknown status {args[0]!r}", COMMANDS["tasks"].usage)
        tasks = [task_json(t) for t in self.server.tasks.list(status=status)]
        return Reply([views.tasks_table(tasks, self.clock())])

    async def _cmd_cancel(self, args: list[str]) -> Reply:
        try:
            task = await self.server.tasks.cancel(args[0])
        except TaskError as exc:
            usage = COMMANDS["cancel"].usage if exc.kind == "not_found" else None
            raise UsageError(str(exc), usage) from None
        message = task.message or "cancellation requested"
        return Reply([one_line(f"task {task.task_id}: {message}")])

    async def _cmd_logs(self, args: list[str]) -> Reply:
        try:
            task = self.server.tasks.get(args[0])
        except TaskError as exc:
            raise UsageError(str(exc), COMMANDS["logs"].usage) from None
        return Reply([views.task_logs(task_json(task, with_logs=True))])

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
    def __init__(self, server: MasterServer, commands: ConsoleCommands | None = None) -> None:
        self.server = server
        self.commands = commands or ConsoleCommands(server)
        self.color = os.environ.get("NO_COLOR") is None and sys.stdout.isatty()
        self.session: PromptSession[str] | None = None

    def _history(self) -> History:
        path = self.server.settings.data_dir / "console_history"
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
        server = self.server
        parts = [f"gRPC port {server.grpc_port}"]
        if server.http_port:
            parts.append(f"HTTP port {server.http_port} (API /api, WebSocket /ws/telemetry)")
        return (
            f"CloudAI master console: {', '.join(parts)}.\n"
            "Type 'help' for the commands, 'exit' or Ctrl-D to stop the master.\n"
        )

    async def run(self) -> None:
        session: PromptSession[str] = PromptSession(
            history=self._history(),
            completer=_Completer(self.commands),
            complete_while_typing=False,
        )
        self.session = session
        with patch_stdout(raw=True), logs_through(sys.stdout):
            self._print(self.banner())
            while True:
                try:
                    line = await session.prompt_async(PROMPT)
                except KeyboardInterrupt:  # Ctrl-C clears the line
                    continue
                except EOFError:  # Ctrl-D
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


def make_console(server: MasterServer) -> Callable[[], Awaitable[object]] | None:
    """The console's coroutine function for ``MasterServer.run(foreground=...)``."""
    return ConsoleShell(server).run
