"""Remote admin commands: `cloudai workers|status|register|unregister|submit|tasks|cancel|logs`.

They call the master's admin JSON API (see ``master/admin_api.py`` and
``/api/openapi.json``), so an operator can run the cluster from another machine.
Common options: ``--url`` (env ``CLOUDAI_URL``, default http://127.0.0.1:8080),
``--token`` (env ``CLOUDAI_ADMIN_TOKEN``, sent as ``Authorization: Bearer``) and
``--json`` (print the API's JSON instead of a table).

Exit status: 0 done; 1 the master refused the call (its message is printed);
2 bad usage; 3 the master could not be reached.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from rich.console import Console, RenderableType

from cloudai import views
from cloudai.cli.api_client import DEFAULT_URL, ApiClient, ApiError

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("master connection")
    group.add_argument(
        "--url", help=f"the master's HTTP address (env CLOUDAI_URL; default {DEFAULT_URL})"
    )
    group.add_argument("--token", help="admin token for mutating calls (env CLOUDAI_ADMIN_TOKEN)")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    group.add_argument("--json", action="store_true", help="print the API's raw JSON")
    return common


def register(subparsers: argparse._SubParsersAction) -> None:
    common = _common()

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        p = subparsers.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("workers", "list the master's workers (or one worker in detail)", run_workers)
    p.add_argument("worker_id", nargs="?", metavar="WORKER_ID", help="show only this worker")

    add("status", "cluster summary: workers, tasks, heartbeat ingest rate", run_status)

    p = add("register", "authorise a worker; the master calls its MasterRegister", run_register)
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
    p.add_argument("worker_id", metavar="WORKER", help="target worker id")
    p.add_argument("--image", default="", help="docker image to run")
    p.add_argument("--cmd", default="", help="command to run (process runtime, or in --image)")
    p.add_argument("--cpu", type=_amount, default=0.0, metavar="N", help="CPU cores")
    p.add_argument("--mem", type=_amount, default=0.0, metavar="GB", help="memory in GB")
    p.add_argument("--storage", type=_amount, default=0.0, metavar="GB", help="storage in GB")
    p.add_argument("--gpu", type=_amount, default=0.0, metavar="N", help="GPUs")
    p.add_argument("--id", default="", metavar="TASK_ID", help="task id (default: generated)")

    p = add("tasks", "list tasks", run_tasks)
    p.add_argument("--status", choices=views.TASK_STATUSES, help="only tasks with this status")
    p.add_argument("--worker", metavar="WORKER_ID", help="only tasks of this worker")

    p = add("cancel", "ask a task's worker to cancel it", run_cancel)
    p.add_argument("task_id", metavar="TASK_ID")

    p = add("logs", "print a task's logs", run_logs)
    p.add_argument("task_id", metavar="TASK_ID")


# -- plumbing ---------------------------------------------------------------------------------


def client_from_args(args: argparse.Namespace) -> ApiClient:
    token = args.token if args.token is not None else os.environ.get("CLOUDAI_ADMIN_TOKEN")
    return ApiClient(args.url, token or None, timeout=args.timeout)


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True, markup=False)


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def _call(
    args: argparse.Namespace,
    call: Callable[[ApiClient], Any],
    show: Callable[[Any], RenderableType | str | None],
) -> int:
    """Run one API call; print the result (``--json``: raw) or its error in one line."""
    try:
        result = call(client_from_args(args))
    except ApiError as exc:
        print_error(exc.message)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    if args.json:
        if result is not None:
            print_json(result)
        return 0
    shown = show(result)
    if shown is not None:
        _out().print(shown)
    return 0


# -- commands ---------------------------------------------------------------------------------


def run_workers(args: argparse.Namespace) -> int:
    if args.worker_id:
        return _call(
            args,
            lambda c: c.worker(args.worker_id),
            lambda w: views.worker_detail(w, time.time()),
        )
    return _call(args, lambda c: c.workers(), lambda ws: views.workers_table(ws, time.time()))


def run_status(args: argparse.Namespace) -> int:
    return _call(args, lambda c: c.status(), views.status_panel)


def run_register(args: argparse.Namespace) -> int:
    def show(worker: dict[str, Any]) -> str:
        if not args.address:
            return f"worker {args.worker_id} authorised; it registers itself"
        return (
            f"worker {args.worker_id} authorised at {args.address}; the master is calling "
            "its MasterRegister (see: cloudai workers)"
        )

    return _call(args, lambda c: c.register(args.worker_id, args.address), show)


def run_unregister(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.unregister(args.worker_id),
        lambda _: f"worker {args.worker_id} unregistered",
    )


def run_submit(args: argparse.Namespace) -> int:
    if not args.image and not args.cmd:
        print_error("give --image IMAGE or --cmd COMMAND (or both)")
        return 2

    def show(task: dict[str, Any]) -> str:
        message = f" ({task['message']})" if task.get("message") else ""
        return f"task {task['task_id']} submitted to {task['worker_id']}: {task['status']}{message}"

    return _call(
        args,
        lambda c: c.submit(
            args.worker_id,
            docker_image=args.image,
            command=args.cmd,
            req_cpu=args.cpu,
            req_memory=args.mem,
            req_storage=args.storage,
            req_gpu=args.gpu,
            task_id=args.id,
        ),
        show,
    )


def run_tasks(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.tasks(status=args.status, worker_id=args.worker),
        lambda tasks: views.tasks_table(tasks, time.time()),
    )


def run_cancel(args: argparse.Namespace) -> int:
    def show(task: dict[str, Any]) -> str:
        return f"task {task['task_id']}: {task.get('message') or 'cancellation requested'}"

    return _call(args, lambda c: c.cancel(args.task_id), show)


def run_logs(args: argparse.Namespace) -> int:
    """Logs go to stdout as they are (pipe-friendly); the status line goes to stderr."""
    try:
        payload = client_from_args(args).logs(args.task_id)
    except ApiError as exc:
        print_error(exc.message)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    if args.json:
        print_json(payload)
        return 0
    exit_code = payload.get("exit_code")
    status = f"task {payload.get('task_id')}: {payload.get('status')}"
    if exit_code is not None:
        status += f", exit code {exit_code}"
    if payload.get("logs_truncated"):
        status += " (logs truncated by the worker)"
    logs = payload.get("logs") or ""
    if not logs:
        status += " (no logs yet)"
    sys.stderr.write(status + "\n")
    sys.stderr.flush()
    sys.stdout.write(logs if not logs or logs.endswith("\n") else logs + "\n")
    sys.stdout.flush()
    return 0
