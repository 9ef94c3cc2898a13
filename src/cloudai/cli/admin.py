"""Remote admin commands: `cloudai workers|status|register|unregister|submit|tasks|cancel|logs`.

They call the master's admin JSON API (see ``master/admin_api.py`` and
``/api/openapi.json``) through ``ApiClient``, which returns the API's models, so an
operator can run the cluster from another machine. Common options: ``--url`` (env
``CLOUDAI_URL``, default https://127.0.0.1:8080), ``--token`` (env
``CLOUDAI_ADMIN_TOKEN``, sent as ``Authorization: Bearer``), ``--ca`` (env
``CLOUDAI_CA_FILE``: the CA the master's certificate is checked against) and ``--json``
(print the API's JSON instead of a table); the listing commands also take ``--plain``
(tab-separated rows under a header line, for scripts). On the master's machine the
token and the CA default to the master's own (see ``ClientSettings``).

Exit status: 0 done; 1 the master refused the call (its message is printed);
2 bad usage; 3 the master could not be reached.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from rich.console import Console, RenderableType

from cloudai import views
from cloudai.api.models import Task, TaskLogs, Worker
from cloudai.cli.api_client import ApiClient, ApiError
from cloudai.settings import DEFAULT_URL, ClientSettings, SettingsError
from cloudai.task_status import TaskStatus

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
UNBOUNDED_WIDTH = 100_000
"""The width tables are drawn at when stdout is not a terminal: ids and columns whole."""

T = TypeVar("T")


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


TOKEN_HELP = (
    "API token (env CLOUDAI_ADMIN_TOKEN; default: the master's admin.token on this machine)"
)
CA_HELP = (
    "CA certificate the master's HTTPS certificate is checked against (env CLOUDAI_CA_FILE; "
    "default: the master's tls/ca.pem on this machine)"
)


def add_connection_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--url, --token and --ca: how to reach the master, and as whom."""
    parser.add_argument(
        "--url", help=f"the master's HTTP address (env CLOUDAI_URL; default {DEFAULT_URL})"
    )
    parser.add_argument("--token", help=TOKEN_HELP)
    parser.add_argument("--ca", type=Path, metavar="FILE", help=CA_HELP)


def connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("master connection")
    add_connection_options(group)
    group.add_argument(
        "--timeout", type=float, help=f"seconds (default {ClientSettings.default('timeout'):g})"
    )
    return common


def output_options(listing: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output").add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print the API's JSON")
    if listing:
        group.add_argument(
            "--plain",
            action="store_true",
            help="tab-separated rows under a header line, for scripts",
        )
    return parent


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connection = connection_options()
    output, listing = output_options(listing=False), output_options(listing=True)

    def add(
        name: str,
        help_text: str,
        func: Callable[[argparse.Namespace], int],
        lists: bool = False,
        description: str = "",
    ) -> argparse.ArgumentParser:
        parents = [connection, listing if lists else output]
        p = subparsers.add_parser(
            name, help=help_text, description=description or help_text, parents=parents
        )
        p.set_defaults(func=func, plain=False)
        return p

    p = add("workers", "list the master's workers, or show one", run_workers, True)
    p.add_argument("worker_id", nargs="?", metavar="WORKER_ID", help="show only this worker")

    add(
        "status",
        "cluster summary: workers, tasks, ingest rate",
        run_status,
        description="cluster summary: workers, tasks, heartbeat ingest rate",
    )

    p = add(
        "register",
        "authorise a worker on the master",
        run_register,
        description="authorise a worker; with its address, the master then calls its "
        "MasterRegister",
    )
    p.add_argument("worker_id", metavar="WORKER_ID")
    p.add_argument(
        "address",
        nargs="?",
        default="",
        metavar="IP:PORT",
        help="the worker's gRPC address (omit it for a worker that registers itself)",
    )

    p = add("unregister", "revoke a worker's authorisation", run_unregister)
    p.add_argument("worker_id", metavar="WORKER_ID")

    p = add("submit", "submit a task to a worker", run_submit)
    p.add_argument("worker_id", nargs="?", metavar="WORKER", help="target worker id")
    p.add_argument(
        "--any",
        action="store_true",
        help="instead of WORKER: the least-loaded active worker whose free CPU, memory and "
        "GPUs fit the request",
    )
    p.add_argument("--image", default="", help="docker image to run")
    p.add_argument("--cmd", default="", help="command to run (process runtime, or in --image)")
    p.add_argument("--cpu", type=_amount, default=0.0, metavar="N", help="CPU cores")
    p.add_argument("--mem", type=_amount, default=0.0, metavar="GB", help="memory in GB")
    p.add_argument("--storage", type=_amount, default=0.0, metavar="GB", help="storage in GB")
    p.add_argument("--gpu", type=_amount, default=0.0, metavar="N", help="GPUs")
    p.add_argument("--id", default="", metavar="TASK_ID", help="task id (default: generated)")
    p.add_argument(
        "--time-limit",
        type=_amount,
        default=0.0,
        metavar="SECONDS",
        help="stop the task when it has run this long; it ends timed_out (default: no limit)",
    )
    p.add_argument(
        "--retries",
        type=_count,
        default=0,
        metavar="N",
        help="run it again up to N times when it fails, times out or is lost (default: 0)",
    )

    p = add("tasks", "list tasks, or show one", run_tasks, True)
    p.add_argument(
        "task_id",
        nargs="?",
        metavar="TASK_ID",
        help="show only this task: its figures and earlier attempts",
    )
    p.add_argument(
        "--status", choices=[s.value for s in TaskStatus], help="only tasks with this status"
    )
    p.add_argument("--worker", metavar="WORKER_ID", help="only tasks of this worker")
    p.add_argument(
        "--limit", type=int, metavar="N", help="only the newest N tasks (still oldest first)"
    )

    p = add("cancel", "ask a task's worker to cancel it", run_cancel)
    p.add_argument("task_id", metavar="TASK_ID")

    p = add("logs", "print a task's logs", run_logs)
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="follow the output live until the task ends (through its retries)",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        type=Path,
        dest="output_file",
        help="write the task's whole output to FILE, byte for byte",
    )
    p.add_argument(
        "--attempt",
        type=_count,
        metavar="N",
        help="the output of this run of a retried task (default: the current or last)",
    )


# -- plumbing ---------------------------------------------------------------------------------


def settings_from_args(args: argparse.Namespace) -> ClientSettings:
    """Flags over ``CLOUDAI_URL``/``CLOUDAI_ADMIN_TOKEN``/``CLOUDAI_CA_FILE``/
    ``CLOUDAI_TIMEOUT`` over the config file's ``[client]`` table over the defaults (see
    ``cloudai.settings``)."""
    settings: ClientSettings = ClientSettings.load(
        url=args.url,
        admin_token=args.token,
        ca_file=getattr(args, "ca", None),
        timeout=getattr(args, "timeout", None),
    )
    return settings


def client_for(settings: ClientSettings) -> ApiClient:
    return ApiClient(
        settings.url,
        settings.admin_token or None,
        timeout=settings.timeout,
        ca_file=settings.ca_file,
    )


def client_from_args(args: argparse.Namespace) -> ApiClient:
    return client_for(settings_from_args(args))


def _out() -> Console:
    """stdout: the terminal's width on a terminal; unbounded otherwise, so that a table
    piped to a file or another program keeps every id and column whole."""
    console = Console(highlight=False, soft_wrap=True, markup=False)
    if not console.is_terminal:
        console.width = UNBOUNDED_WIDTH
    return console


def to_json(result: Any) -> Any:
    """What ``--json`` prints: the models as the API's JSON."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [to_json(item) for item in result]
    return result


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(to_json(data), option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def call_api(
    args: argparse.Namespace,
    call: Callable[[ApiClient], T],
    show: Callable[[T], RenderableType | str | None],
    plain: Callable[[T], str] | None = None,
) -> int:
    """Run one API call; print the result (a table, ``--json`` or ``--plain``) or its
    error in one line."""
    try:
        result = call(client_from_args(args))
    except SettingsError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        print_error(exc.message)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    if args.json:
        if result is not None:
            print_json(result)
        return 0
    if args.plain and plain is not None:
        sys.stdout.write(plain(result))
        sys.stdout.flush()
        return 0
    shown = show(result)
    if shown is not None:
        _out().print(shown)
    return 0


# -- plain rows -------------------------------------------------------------------------------

WORKER_COLUMNS = (
    "worker_id",
    "address",
    "state",
    "cpu_usage",
    "memory_usage",
    "storage_usage",
    "gpu_usage",
    "total_cpu",
    "total_memory",
    "total_storage",
    "total_gpu",
    "running_tasks",
    "last_update",
)
TASK_COLUMNS = (
    "task_id",
    "worker_id",
    "status",
    "exit_code",
    "submitted_at",
    "started_at",
    "finished_at",
    "docker_image",
    "command",
    "message",
)


def plain_cell(value: object) -> str:
    """One field of a ``--plain`` row: ``-`` for unknown (None); backslash, tab, newline
    and carriage return escaped as ``\\\\``, ``\\t``, ``\\n`` and ``\\r``."""
    if value is None:
        return views.UNKNOWN
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def plain_rows(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A header line, then one tab-separated line per row."""
    lines = ["\t".join(columns)]
    lines += ["\t".join(plain_cell(value) for value in row) for row in rows]
    return "\n".join(lines) + "\n"


def worker_row(worker: Worker) -> tuple[object, ...]:
    known = worker.last_update is not None  # usage is unknown until a heartbeat
    usage = [
        getattr(worker, name) if known else None
        for name in ("cpu_usage", "memory_usage", "storage_usage", "gpu_usage")
    ]
    state, _ = views.worker_state(worker.model_dump(mode="json"))
    return (
        worker.worker_id,
        worker.address or None,
        state,
        *usage,
        worker.total_cpu,
        worker.total_memory,
        worker.total_storage,
        worker.total_gpu,
        len(worker.running_tasks),
        worker.last_update,
    )


def plain_workers(workers: list[Worker]) -> str:
    rows = sorted(workers, key=lambda w: w.worker_id)
    return plain_rows(WORKER_COLUMNS, (worker_row(w) for w in rows))


def plain_tasks(tasks: list[Task]) -> str:
    rows = sorted(tasks, key=lambda t: t.submitted_at)
    return plain_rows(TASK_COLUMNS, ([getattr(t, c) for c in TASK_COLUMNS] for t in rows))


def _dumps(models: Iterable[BaseModel]) -> list[dict[str, Any]]:
    return [model.model_dump(mode="json") for model in models]


# -- commands ---------------------------------------------------------------------------------


def run_workers(args: argparse.Namespace) -> int:
    if args.worker_id:
        return call_api(
            args,
            lambda c: c.worker(args.worker_id),
            lambda w: views.worker_detail(w.model_dump(mode="json"), time.time()),
            lambda w: plain_workers([w]),
        )
    return call_api(
        args,
        lambda c: c.workers(),
        lambda ws: views.workers_table(_dumps(ws), time.time()),
        plain_workers,
    )


def run_status(args: argparse.Namespace) -> int:
    return call_api(
        args, lambda c: c.status(), lambda s: views.status_panel(s.model_dump(mode="json"))
    )


def run_register(args: argparse.Namespace) -> int:
    def show(worker: Worker) -> str:
        if not args.address:
            return f"worker {worker.worker_id} authorised; it registers itself"
        return (
            f"worker {worker.worker_id} authorised at {args.address}; the master is calling "
            "its MasterRegister (see: cloudai workers)"
        )

    return call_api(args, lambda c: c.register(args.worker_id, args.address), show)


def run_unregister(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.unregister(args.worker_id),
        lambda _: f"worker {args.worker_id} unregistered",
    )


def run_submit(args: argparse.Namespace) -> int:
    if not args.image and not args.cmd:
        print_error("give --image IMAGE or --cmd COMMAND (or both)")
        return EXIT_USAGE
    if (args.worker_id is None) == (not args.any):
        print_error("give a WORKER or --any (not both)")
        return EXIT_USAGE

    def show(task: Task) -> str:
        message = f" ({task.message})" if task.message else ""
        return f"task {task.task_id} submitted to {task.worker_id}: {task.status}{message}"

    return call_api(
        args,
        lambda c: c.submit(
            args.worker_id,
            any_worker=args.any,
            docker_image=args.image,
            command=args.cmd,
            req_cpu=args.cpu,
            req_memory=args.mem,
            req_storage=args.storage,
            req_gpu=args.gpu,
            task_id=args.id,
            time_limit=args.time_limit,
            retries=args.retries,
        ),
        show,
    )


def run_tasks(args: argparse.Namespace) -> int:
    if args.task_id:
        return call_api(
            args,
            lambda c: c.task(args.task_id),
            lambda t: views.task_detail(t.model_dump(mode="json"), time.time()),
            lambda t: plain_tasks([t]),
        )
    return call_api(
        args,
        lambda c: c.tasks(status=args.status, worker_id=args.worker, limit=args.limit),
        lambda tasks: views.tasks_table(_dumps(tasks), time.time()),
        plain_tasks,
    )


def run_cancel(args: argparse.Namespace) -> int:
    def show(task: Task) -> str:
        return f"task {task.task_id}: {task.message or 'cancellation requested'}"

    return call_api(args, lambda c: c.cancel(args.task_id), show)


def run_logs(args: argparse.Namespace) -> int:
    """Logs go to stdout as they are (pipe-friendly); the status line goes to stderr.
    The whole output, when the master holds it (live output: cli/task_output.py)."""
    if not args.json:
        from cloudai.cli.task_output import run_output

        handled = run_output(args, client_from_args, print_error)
        if handled is not None:
            return handled
    try:
        payload: TaskLogs = client_from_args(args).logs(args.task_id)
    except SettingsError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        print_error(exc.message)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    if args.json:
        print_json(payload)
        return 0
    status = f"task {payload.task_id}: {payload.status}"
    if payload.exit_code is not None:
        status += f", exit code {payload.exit_code}"
    if payload.logs_truncated:
        status += " (logs truncated by the worker)"
    logs = payload.logs
    if not logs:
        status += " (no logs yet)"
    sys.stderr.write(status + "\n")
    sys.stderr.flush()
    sys.stdout.write(logs if not logs or logs.endswith("\n") else logs + "\n")
    sys.stdout.flush()
    return 0
