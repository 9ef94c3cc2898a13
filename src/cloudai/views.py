"""Rich renderings of the master's admin data, shared by the console and the client.

Every function here is pure: it takes the JSON-shaped dicts of the admin API (which
the console builds with the same helpers, ``worker_view`` and ``task_json``) plus the
current time, and returns a rich renderable. ``render_text`` turns one into a string.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

TASK_STATUSES = ("queued", "assigned", "running", "success", "failure", "cancelled", "rejected")

_STATUS_STYLE = {
    "queued": "cyan",
    "assigned": "cyan",
    "running": "bold blue",
    "success": "green",
    "failure": "red",
    "cancelled": "yellow",
    "rejected": "red",
}


def render_text(renderable: RenderableType, width: int = 100, color: bool = False) -> str:
    """Render to a string: plain text, or with ANSI colours for a terminal.

    Soft wrap: lines of text (messages, logs) are never broken or cropped by rich, the
    terminal wraps them; tables still fit ``width``.
    """
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=max(20, width),
        force_terminal=color,
        markup=False,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )
    console.print(renderable, soft_wrap=True)
    return buffer.getvalue()


# -- small formatters -------------------------------------------------------------------------


def format_age(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h04m``, ``3d02h``; ``never`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def age_since(timestamp: float | None, now: float) -> str:
    return format_age(None if timestamp is None else now - timestamp)


def ago(timestamp: float | None, now: float) -> str:
    return "never" if timestamp is None else f"{format_age(now - timestamp)} ago"


def format_percent(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{number:.1f}%" if math.isfinite(number) else "-"


def format_amount(value: Any, unit: str = "") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(number):
        return "-"
    text = f"{number:g}"
    return f"{text} {unit}".rstrip()


def usage_style(percent: float) -> str:
    if percent >= 85:
        return "red"
    if percent >= 60:
        return "yellow"
    return "green"


def percent_text(value: Any) -> Text:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Text("-")
    return Text(format_percent(number), style=usage_style(number))


def worker_state(worker: Mapping[str, Any]) -> tuple[str, str]:
    """(label, style): active, inactive, or waiting (authorised, not registered yet)."""
    if worker.get("is_active"):
        return "active", "green"
    if worker.get("registered") is False and worker.get("last_update") is None:
        return "waiting", "dim"
    return "inactive", "red"


def task_what(task: Mapping[str, Any]) -> str:
    image, command = task.get("docker_image") or "", task.get("command") or ""
    if image and command:
        return f"{image}: {command}"
    return image or (f"$ {command}" if command else "-")


def plain(value: Any) -> Text:
    """A table cell from data: never read as rich markup (ids may contain brackets)."""
    return Text(str(value))


def status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


# -- tables -----------------------------------------------------------------------------------


def workers_table(workers: Iterable[Mapping[str, Any]], now: float) -> RenderableType:
    rows = sorted(workers, key=lambda w: str(w.get("worker_id", "")))
    if not rows:
        return Text("no workers registered (use: register <worker_id> <ip:port>)")
    table = Table()
    table.add_column("ID", no_wrap=True, overflow="fold")
    table.add_column("Address", no_wrap=True)
    table.add_column("Active", no_wrap=True)
    table.add_column("CPU", justify="right", no_wrap=True)
    table.add_column("Mem", justify="right", no_wrap=True)
    table.add_column("GPU", justify="right", no_wrap=True)
    table.add_column("Tasks", justify="right", no_wrap=True)
    table.add_column("Heartbeat", justify="right", no_wrap=True)
    for worker in rows:
        label, style = worker_state(worker)
        table.add_row(
            plain(worker.get("worker_id", "?")),
            plain(worker.get("address") or "-"),
            Text(label, style=style),
            percent_text(worker.get("cpu_usage")),
            percent_text(worker.get("memory_usage")),
            percent_text(worker.get("gpu_usage")),
            str(len(worker.get("running_tasks") or [])),
            ago(worker.get("last_update"), now),
        )
    return table


def worker_detail(worker: Mapping[str, Any], now: float) -> RenderableType:
    label, style = worker_state(worker)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("Worker", plain(worker.get("worker_id", "?")))
    grid.add_row("Address", plain(worker.get("address") or "-"))
    grid.add_row("State", Text(label, style=style))
    grid.add_row("Registered", "yes" if worker.get("registered") else "no")
    grid.add_row("Last heartbeat", ago(worker.get("last_update"), now))
    grid.add_row(
        "CPU",
        Text.assemble(
            percent_text(worker.get("cpu_usage")),
            f" of {format_amount(worker.get('total_cpu'), 'cores')}",
        ),
    )
    grid.add_row(
        "Memory",
        Text.assemble(
            percent_text(worker.get("memory_usage")),
            f" of {format_amount(worker.get('total_memory'), 'GB')}",
        ),
    )
    grid.add_row(
        "Storage",
        Text.assemble(
            percent_text(worker.get("storage_usage")),
            f" of {format_amount(worker.get('total_storage'), 'GB')}",
        ),
    )
    grid.add_row(
        "GPU",
        Text.assemble(
            percent_text(worker.get("gpu_usage")),
            f" of {format_amount(worker.get('total_gpu'), 'GPUs')}",
        ),
    )
    running = worker.get("running_tasks") or []
    if not running:
        return Group(grid, Text("no running tasks"))
    tasks = Table()
    tasks.add_column("Task", no_wrap=True)
    tasks.add_column("Status", no_wrap=True)
    tasks.add_column("CPU alloc", justify="right")
    tasks.add_column("Mem alloc", justify="right")
    tasks.add_column("GPU alloc", justify="right")
    tasks.add_column("CPU use", justify="right")
    tasks.add_column("RSS", justify="right")
    for task in running:
        tasks.add_row(
            plain(task.get("task_id", "?")),
            plain(task.get("status", "")),
            format_amount(task.get("cpu_allocated")),
            format_amount(task.get("memory_allocated")),
            format_amount(task.get("gpu_allocated")),
            format_percent(task.get("cpu_usage")),
            format_bytes(task.get("memory_used_bytes")),
        )
    return Group(grid, tasks)


def format_bytes(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(number) < 1024:
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return f"{number:.1f} TiB"


def tasks_table(tasks: Iterable[Mapping[str, Any]], now: float) -> RenderableType:
    rows = sorted(tasks, key=lambda t: float(t.get("submitted_at") or 0.0))
    if not rows:
        return Text("no tasks")
    table = Table()
    table.add_column("Task", no_wrap=True, overflow="fold")
    table.add_column("Worker", no_wrap=True)
    table.add_column("Image / command", overflow="ellipsis", max_width=40)
    table.add_column("Status", no_wrap=True)
    table.add_column("Submitted", justify="right", no_wrap=True)
    table.add_column("Exit", justify="right", no_wrap=True)
    table.add_column("Message", overflow="ellipsis", max_width=40)
    for task in rows:
        exit_code = task.get("exit_code")
        table.add_row(
            plain(task.get("task_id", "?")),
            plain(task.get("worker_id", "?")),
            plain(task_what(task)),
            status_text(str(task.get("status", "?"))),
            ago(task.get("submitted_at"), now),
            "-" if exit_code is None else str(exit_code),
            plain(task.get("message") or ""),
        )
    return table


def status_panel(summary: Mapping[str, Any]) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row(
        "Workers",
        f"{summary.get('active_workers', 0)} active / {summary.get('workers', 0)} registered",
    )
    grid.add_row(
        "Tasks",
        f"{summary.get('tasks_running', 0)} running, {summary.get('tasks_queued', 0)} queued, "
        f"{summary.get('tasks_finished', 0)} finished",
    )
    by_status = summary.get("tasks_by_status") or {}
    if by_status:
        grid.add_row(
            "By status",
            ", ".join(f"{name} {count}" for name, count in sorted(by_status.items())),
        )
    grid.add_row(
        "Ingest",
        f"{float(summary.get('heartbeats_per_second', 0.0)):.1f} heartbeats/s "
        f"({summary.get('heartbeats', 0)} total)",
    )
    grid.add_row("WebSocket clients", str(summary.get("websocket_clients", 0)))
    return grid


def task_logs(payload: Mapping[str, Any]) -> RenderableType:
    """A task's logs with a one-line header (status, exit code)."""
    exit_code = payload.get("exit_code")
    header = Text.assemble(
        ("task ", "bold"),
        (str(payload.get("task_id", "?")), "bold"),
        ": ",
        status_text(str(payload.get("status", "?"))),
        "" if exit_code is None else f", exit code {exit_code}",
    )
    logs = str(payload.get("logs") or "")
    parts: list[RenderableType] = [header]
    if logs:
        parts.append(Text(logs.rstrip("\n")))
    else:
        parts.append(Text("(no logs yet)", style="dim"))
    if payload.get("logs_truncated"):
        parts.append(Text("(logs truncated by the worker)", style="dim"))
    return Group(*parts)
