"""Rich renderings of the master's admin data, shared by the console and the client.

Every function here is pure: it takes the JSON-shaped dicts of the admin API (which
the console builds with the same helpers, ``worker_view`` and ``task_json``) plus the
current time, and returns a rich renderable. ``render_text`` turns one into a string.

Conventions: memory and storage amounts are GiB (1024**3 bytes, as workers report
them); a usage figure that is not known (no heartbeat from the worker since the master
started, or no value at all) is ``-``, never ``0.0%``; worker and task ids are never
cut, at any width (a table that cannot fit its ids is printed wider than the width).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from cloudai.task_status import TaskStatus

TASK_STATUSES = tuple(status.value for status in TaskStatus)

UNKNOWN = "-"
"""What a view shows for a value it does not know."""

_STATUS_STYLE = {
    "queued": "cyan",
    "assigned": "cyan",
    "running": "bold blue",
    "success": "green",
    "failure": "red",
    "cancelled": "yellow",
    "rejected": "red",
    "lost": "red",
    "timed_out": "red",
}


def render_text(renderable: RenderableType, width: int = 100, color: bool = False) -> str:
    """Render to a string: plain text, or with ANSI colours for a terminal.

    Soft wrap: lines of text (messages, logs) are never broken or cropped by rich, the
    terminal wraps them; tables fit ``width``, except that an id is never cut: a table
    whose ids cannot fit is rendered wider than ``width``.
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


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (absent, not a number, NaN, infinite)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_percent(value: Any) -> str:
    number = finite(value)
    return UNKNOWN if number is None else f"{number:.1f}%"


def format_amount(value: Any, unit: str = "") -> str:
    number = finite(value)
    if number is None:
        return UNKNOWN
    return f"{number:g} {unit}".rstrip()


def format_gib(value: Any) -> str:
    """An amount of GiB without its unit: ``0.3``, ``15.5``, ``16``, ``252``; ``-`` if unknown."""
    number = finite(value)
    if number is None:
        return UNKNOWN
    if abs(number) >= 100:
        return f"{number:.0f}"
    text = f"{number:.1f}"
    return text[:-2] if text.endswith(".0") else text


def plural(count: float, noun: str) -> str:
    """``1 core``, ``8 cores``, ``0.5 cores``."""
    return f"{count:g} {noun}" + ("" if count == 1 else "s")


def usage_style(percent: float) -> str:
    if percent >= 85:
        return "red"
    if percent >= 60:
        return "yellow"
    return "green"


def percent_text(value: Any) -> Text:
    number = finite(value)
    if number is None:
        return Text(UNKNOWN, style="dim")
    return Text(format_percent(number), style=usage_style(number))


def has_telemetry(worker: Mapping[str, Any]) -> bool:
    """Whether the worker's usage figures are known: it sent a heartbeat since the master
    started (``last_update`` is set)."""
    return worker.get("last_update") is not None


def usage(worker: Mapping[str, Any], name: str) -> float | None:
    """A usage percentage (``cpu_usage``, ``memory_usage``...), None when unknown."""
    return finite(worker.get(name)) if has_telemetry(worker) else None


def total(worker: Mapping[str, Any], name: str) -> float | None:
    """A capacity (``total_cpu``, ``total_memory``...), None when unknown; 0 is a known
    capacity only for GPUs (a machine without one)."""
    number = finite(worker.get(name))
    if number is None or number < 0 or (number == 0 and name != "total_gpu"):
        return None
    return number


def usage_cell(worker: Mapping[str, Any], kind: str, amounts: bool = True) -> Text:
    """A compact table cell for ``kind`` (cpu, memory, storage, gpu): the percentage,
    then, when ``amounts`` and the capacity is known, ``of 8`` (cores, GPUs) or
    ``5.3/16`` (GiB used / total). ``-`` for what is not known; ``none`` for no GPU."""
    percent = usage(worker, f"{kind}_usage")
    capacity = total(worker, f"total_{kind}")
    if kind == "gpu" and capacity == 0:
        return Text("none", style="dim")
    cell = percent_text(percent)
    if not amounts or capacity is None:
        return cell
    if kind in ("cpu", "gpu"):
        return cell.append(f" of {capacity:g}")
    if percent is None:
        return cell.append(f" of {format_gib(capacity)}")
    return cell.append(f" {format_gib(capacity * percent / 100)}/{format_gib(capacity)}")


def usage_line(worker: Mapping[str, Any], kind: str) -> Text:
    """A worker's usage of ``kind`` in words: ``42.0% of 8 cores``, ``33.0% of 16 GiB
    (5.3 GiB used)``, ``7.0% of 1 GPU``; ``-`` for what is not known."""
    percent = usage(worker, f"{kind}_usage")
    capacity = total(worker, f"total_{kind}")
    if kind == "gpu" and capacity == 0:
        return Text("none (no GPU)")
    cell = percent_text(percent)
    if capacity is None:
        return cell
    if kind == "cpu":
        return cell.append(f" of {plural(capacity, 'core')}")
    if kind == "gpu":
        return cell.append(f" of {plural(capacity, 'GPU')}")
    cell.append(f" of {format_gib(capacity)} GiB")
    if percent is not None:
        cell.append(f" ({format_gib(capacity * percent / 100)} GiB used)")
    return cell


def format_rate(value: Any) -> str:
    """Bytes a second: ``512 B/s``, ``1.5 MiB/s``; ``-`` if unknown."""
    text = format_bytes(value)
    return text if text == UNKNOWN else f"{text}/s"


def measured_rows(worker: Mapping[str, Any]) -> list[tuple[str, Text]]:
    """The richer telemetry a worker sent (network, disk, load, GPU devices) as labelled
    lines; nothing for what it did not send (a Go worker: no lines at all)."""
    rows: list[tuple[str, Text]] = []
    if not has_telemetry(worker):
        return rows
    rx, tx = worker.get("net_rx_bytes_per_sec"), worker.get("net_tx_bytes_per_sec")
    if rx is not None or tx is not None:
        rows.append(("Network", Text(f"in {format_rate(rx)}, out {format_rate(tx)}")))
    read, write = worker.get("disk_read_bytes_per_sec"), worker.get("disk_write_bytes_per_sec")
    if read is not None or write is not None:
        rows.append(("Disk I/O", Text(f"read {format_rate(read)}, write {format_rate(write)}")))
    load = worker.get("load_avg")
    if isinstance(load, list) and load:
        figures = " ".join(UNKNOWN if finite(v) is None else f"{finite(v):.2f}" for v in load)
        rows.append(("Load", Text(f"{figures} (1, 5, 15 min)")))
    for gpu in worker.get("gpus") or []:
        if not isinstance(gpu, Mapping):
            continue
        parts = [
            format_percent(gpu.get("utilization")),
            f"{format_bytes(gpu.get('memory_used_bytes'))} of "
            f"{format_bytes(gpu.get('memory_total_bytes'))}",
        ]
        temperature, power = finite(gpu.get("temperature_c")), finite(gpu.get("power_watts"))
        if temperature is not None:
            parts.append(f"{temperature:.0f} °C")
        if power is not None:
            parts.append(f"{power:.0f} W")
        name = str(gpu.get("name") or "")
        label = f"GPU {gpu.get('index', '?')}"
        rows.append((label, Text(f"{name + ': ' if name else ''}{', '.join(parts)}")))
    return rows


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

_UNBOUNDED = 100_000


class KeepIds:
    """A table that never cuts its ids, whatever the width.

    ``layouts`` are the same data from the most detailed to the most compact; the
    first whose natural width fits is drawn. When none fits, the last is squeezed: its
    other columns fold their text onto more lines, its ``no_wrap`` columns (the ids)
    keep their full width. Below the width those need, the table is drawn wider than
    asked: a terminal wraps the lines, a pipe keeps them intact.
    """

    def __init__(self, *layouts: Table) -> None:
        if not layouts:
            raise ValueError("KeepIds needs at least one layout")
        self.layouts = layouts

    def choose(self, console: Console, options: ConsoleOptions) -> tuple[Table, int]:
        """The layout to draw and the width to draw it at."""
        unbounded = options.update_width(_UNBOUNDED)
        for table in self.layouts:
            if Measurement.get(console, unbounded, table).maximum <= options.max_width:
                return table, options.max_width
        last = self.layouts[-1]
        return last, max(options.max_width, _squeezed_width(console, unbounded, last))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, width = self.choose(console, options)
        yield from console.render(table, options.update_width(width))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        table, width = self.choose(console, options)
        return Measurement.get(console, options.update_width(width), table)


_SQUEEZED_CELL = 5
"""The width below which a column that may wrap is not squeezed (fits "42.0%")."""


def _squeezed_width(console: Console, options: ConsoleOptions, table: Table) -> int:
    """The narrowest ``table`` gets with its ``no_wrap`` columns whole (an upper bound:
    rich then shrinks only the columns that may wrap)."""
    _, right, _, left = table.padding
    width = len(table.columns) + 1  # borders (or none: then this is a margin)
    for column in table.columns:
        widths = [
            Measurement.get(console, options, cell).maximum
            for cell in (column.header, *column.cells)
        ]
        widest = max([*widths, column.min_width or 0])
        width += left + right + (widest if column.no_wrap else min(widest, _SQUEEZED_CELL))
    return width


def id_column(table: Table, header: str, ids: Sequence[str], **kwargs: Any) -> None:
    """A column of ids: never wrapped, folded or cut (see ``KeepIds``)."""
    longest = max([cell_len(header), *(cell_len(i) for i in ids)])
    table.add_column(header, no_wrap=True, overflow="fold", min_width=longest, **kwargs)


def _workers_layout(
    rows: Sequence[Mapping[str, Any]], now: float, amounts: bool, storage: bool
) -> Table:
    table = Table()
    id_column(table, "ID", [str(w.get("worker_id", "?")) for w in rows])
    # Every other column may wrap: squeezed, they give way to the ids.
    fold: dict[str, Any] = {"overflow": "fold"}
    right: dict[str, Any] = {"overflow": "fold", "justify": "right"}
    table.add_column("Address", **fold)
    table.add_column("Active", **fold)
    table.add_column("CPU", **right)
    table.add_column("Mem (GiB)" if amounts else "Mem", **right)
    if storage:
        table.add_column("Disk (GiB)" if amounts else "Disk", **right)
    table.add_column("GPU", **right)
    table.add_column("Tasks", **right)
    table.add_column("Heartbeat", **right)
    for worker in rows:
        label, style = worker_state(worker)
        cells: list[RenderableType] = [
            plain(worker.get("worker_id", "?")),
            plain(worker.get("address") or UNKNOWN),
            Text(label, style=style),
            usage_cell(worker, "cpu", amounts),
            usage_cell(worker, "memory", amounts),
        ]
        if storage:
            cells.append(usage_cell(worker, "storage", amounts))
        cells += [
            usage_cell(worker, "gpu", amounts),
            str(len(worker.get("running_tasks") or [])),
            ago(worker.get("last_update"), now),
        ]
        table.add_row(*cells)
    return table


def workers_table(workers: Iterable[Mapping[str, Any]], now: float) -> RenderableType:
    """One row per worker, sorted by id. As much as the width allows: usage with the
    amounts (``42.0% of 8`` cores, ``5.3/16`` GiB) and storage when it fits, the
    percentages alone when not; ids always whole."""
    rows = sorted(workers, key=lambda w: str(w.get("worker_id", "")))
    if not rows:
        return Text("no workers registered (use: register <worker_id> <ip:port>)")
    return KeepIds(
        _workers_layout(rows, now, amounts=True, storage=True),
        _workers_layout(rows, now, amounts=True, storage=False),
        _workers_layout(rows, now, amounts=False, storage=False),
    )


_TASK_LIMITS = {
    "cgroup-v2": "enforced (cgroup v2)",
    "cgroup-v1": "enforced (cgroup v1)",
    "accounted": "accounted, not enforced",
}


def task_limits_text(mode: Any) -> str:
    """How a worker holds process tasks to their requests (``-``: it did not say)."""
    if not mode or not isinstance(mode, str):
        return UNKNOWN
    return _TASK_LIMITS.get(mode, mode)


def worker_detail(worker: Mapping[str, Any], now: float) -> RenderableType:
    label, style = worker_state(worker)
    worker_id = str(worker.get("worker_id", "?"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(min_width=cell_len(worker_id))
    grid.add_row("Worker", plain(worker_id))
    grid.add_row("Address", plain(worker.get("address") or UNKNOWN))
    grid.add_row("State", Text(label, style=style))
    grid.add_row("Registered", "yes" if worker.get("registered") else "no")
    grid.add_row("Last heartbeat", ago(worker.get("last_update"), now))
    grid.add_row("CPU", usage_line(worker, "cpu"))
    grid.add_row("Memory", usage_line(worker, "memory"))
    grid.add_row("Storage", usage_line(worker, "storage"))
    grid.add_row("GPU", usage_line(worker, "gpu"))
    for label, line in measured_rows(worker):
        grid.add_row(label, line)
    grid.add_row("Task limits", task_limits_text(worker.get("task_limits")))
    running = worker.get("running_tasks") or []
    if not running:
        return Group(KeepIds(grid), Text("no running tasks"))
    tasks = Table()
    id_column(tasks, "Task", [str(t.get("task_id", "?")) for t in running])
    right: dict[str, Any] = {"overflow": "fold", "justify": "right"}
    tasks.add_column("Status", overflow="fold")
    tasks.add_column("CPU alloc", **right)
    tasks.add_column("Mem alloc (GiB)", **right)
    tasks.add_column("GPU alloc", **right)
    tasks.add_column("CPU use", **right)
    tasks.add_column("RSS", **right)
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
    return Group(KeepIds(grid), KeepIds(tasks))


def format_bytes(value: Any) -> str:
    number = finite(value)
    if number is None:
        return UNKNOWN
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(number) < 1024:
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return f"{number:.1f} TiB"


def task_status_cell(task: Mapping[str, Any], now: float) -> Text:
    """The status; for a task with retries, also which attempt of how many and, while
    the next one waits for its back-off, when it starts."""
    cell = status_text(str(task.get("status", "?")))
    retries = task.get("retries")
    if isinstance(retries, int) and retries > 0:
        cell.append(f" {task.get('attempt', 1)}/{retries + 1}", style="dim")
    retry_at = finite(task.get("retry_at"))
    if retry_at is not None:
        cell.append(f" retry in {format_age(max(0.0, retry_at - now))}", style="dim")
    return cell


def tasks_table(tasks: Iterable[Mapping[str, Any]], now: float) -> RenderableType:
    rows = sorted(tasks, key=lambda t: finite(t.get("submitted_at")) or 0.0)
    if not rows:
        return Text("no tasks")
    table = Table()
    id_column(table, "Task", [str(t.get("task_id", "?")) for t in rows])
    id_column(table, "Worker", [str(t.get("worker_id", "?")) for t in rows])
    table.add_column("Image / command", overflow="ellipsis", max_width=40)
    table.add_column("Status", overflow="fold")
    table.add_column("Submitted", justify="right", overflow="fold")
    table.add_column("Exit", justify="right", overflow="fold")
    table.add_column("Message", overflow="ellipsis", max_width=40)
    for task in rows:
        exit_code = task.get("exit_code")
        table.add_row(
            plain(task.get("task_id", "?")),
            plain(task.get("worker_id", "?")),
            plain(task_what(task)),
            task_status_cell(task, now),
            ago(task.get("submitted_at"), now),
            UNKNOWN if exit_code is None else str(exit_code),
            plain(task.get("message") or ""),
        )
    return KeepIds(table)


def _run_time(started: Any, finished: Any, now: float) -> str:
    start = finite(started)
    if start is None:
        return UNKNOWN
    end = finite(finished)
    return format_age((now if end is None else end) - start)


def task_detail(task: Mapping[str, Any], now: float) -> RenderableType:
    """One task: its figures, then its earlier runs (a task that was run again)."""
    task_id = str(task.get("task_id", "?"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(min_width=cell_len(task_id))
    exit_code = task.get("exit_code")
    requested = ", ".join(
        f"{label} {format_amount(task.get(name))}"
        for label, name in (("CPU", "req_cpu"), ("memory GB", "req_memory"),
                            ("storage GB", "req_storage"), ("GPU", "req_gpu"))
        if finite(task.get(name))
    )  # fmt: skip
    time_limit = finite(task.get("time_limit"))
    rows: list[tuple[str, RenderableType]] = [
        ("Task", plain(task_id)),
        ("Worker", plain(task.get("worker_id", "?"))),
        ("Status", task_status_cell(task, now)),
        ("What", plain(task_what(task))),
        ("Requested", plain(requested or "nothing")),
        ("Submitted", ago(task.get("submitted_at"), now)),
        ("Started", UNKNOWN if task.get("started_at") is None else ago(task["started_at"], now)),
        ("Ran", _run_time(task.get("started_at"), task.get("finished_at"), now)),
        ("Exit code", UNKNOWN if exit_code is None else str(exit_code)),
        ("Message", plain(task.get("message") or UNKNOWN)),
        ("Time limit", format_age(time_limit) if time_limit else "none"),
    ]
    for label, value in rows:
        grid.add_row(label, value)
    attempts = task.get("attempts") or []
    if not attempts:
        return KeepIds(grid)
    runs = Table(title="Earlier attempts", title_justify="left")
    runs.add_column("#", justify="right")
    id_column(runs, "Worker", [str(a.get("worker_id", "?")) for a in attempts])
    runs.add_column("Status", overflow="fold")
    runs.add_column("Exit", justify="right")
    runs.add_column("Ran", justify="right")
    runs.add_column("Ended", justify="right")
    runs.add_column("Message", overflow="ellipsis", max_width=50)
    for run in attempts:
        code = run.get("exit_code")
        runs.add_row(
            str(run.get("attempt", "?")),
            plain(run.get("worker_id", "?")),
            status_text(str(run.get("status", "?"))),
            UNKNOWN if code is None else str(code),
            _run_time(run.get("started_at"), run.get("finished_at"), now),
            ago(run.get("finished_at"), now),
            plain(run.get("message") or ""),
        )
    return Group(KeepIds(grid), KeepIds(runs))


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
