"""`cloudai top`: a live full-screen view of the cluster, like htop, from the WebSocket
telemetry stream (``wss://HOST:PORT/ws/telemetry``; ``ws://`` for a master run with
``--insecure``), with the token and CA of the other client commands.

Per worker: state, CPU/memory/GPU bars, running tasks, last-seen age; a header with
totals, the connection state and the current sort. The stream carries percentages;
the capacities (cores, GiB, GPUs) come from ``GET /api/workers``, read again every
``TOTALS_INTERVAL`` seconds, and are shown next to the bars when known and when the
terminal is wide enough. Keys: ``c`` ``m`` ``g`` ``t`` ``i`` ``s`` sort, ``r`` reverses,
``h`` or ``?`` shows the help, ``q`` or Ctrl-C quits. Reconnects with capped back-off.

Everything but the terminal is pure and unit-tested: the state (``TopState``,
``apply_message``, ``apply_totals``), the keys (``TopView``, ``press``, ``keys_of``),
the order (``sort_workers``) and the frame (``render``). ``run_top`` is the thin
terminal layer (rich ``Live`` on the alternate screen, stdin in cbreak mode).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cloudai import views
from cloudai.backoff import Backoff
from cloudai.cli.api_client import ApiError, base_url
from cloudai.cli.watch import add_stream_credentials, stream_settings, stream_url
from cloudai.settings import DEFAULT_URL, SettingsError

SORT_KEYS = ("id", "cpu", "mem", "gpu", "tasks", "state")
"""``--sort`` values (add, never remove: scripts use them)."""

SORT_BY_KEY = {"c": "cpu", "m": "mem", "g": "gpu", "t": "tasks", "i": "id", "s": "state"}
"""The key that sorts by each order while ``top`` runs."""

TOTALS_INTERVAL = 10.0
"""Seconds between two reads of the capacities (``GET /api/workers``)."""

HELP = (
    ("c", "sort by CPU usage, highest first"),
    ("m", "sort by memory usage, highest first"),
    ("g", "sort by GPU usage, highest first"),
    ("t", "sort by running tasks, most first"),
    ("i", "sort by worker id, A to Z"),
    ("s", "sort by state: active first, then the most recent heartbeat"),
    ("r", "reverse the order (workers without figures stay last)"),
    ("h ?", "show or hide this help (Esc hides it too)"),
    ("q", "quit (Ctrl-C too)"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "top",
        help="live full-screen view of the cluster, like htop (h for help, q quits)",
        description="Show every worker's CPU, memory and GPU usage live, like htop; "
        "h shows the keys, q quits.",
    )
    p.add_argument(
        "--url", help=f"the master's HTTP address (env CLOUDAI_URL; default {DEFAULT_URL})"
    )
    add_stream_credentials(p)
    p.add_argument("--worker", metavar="WORKER_ID", help="only this worker")
    p.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default="id",
        help="initial row order (default id; keys c m g t i s change it while running)",
    )
    p.add_argument("--reverse", action="store_true", help="start with the order reversed (key r)")
    p.add_argument(
        "--once",
        action="store_true",
        help="print one frame once the snapshot arrives, then exit (the default when "
        "stdout is not a terminal)",
    )
    p.set_defaults(func=run)


# -- state (pure) -----------------------------------------------------------------------------


@dataclass
class TopState:
    url: str
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    connection: str = "connecting"  # connecting | connected | disconnected
    reason: str = ""  # why the last connection ended
    retry_at: float | None = None  # when the next attempt starts (disconnected)
    connected_at: float | None = None
    messages: int = 0
    snapshots: int = 0
    totals: dict[str, dict[str, float]] = field(default_factory=dict)
    """Capacities by worker id (``total_cpu``, ``total_memory``...), from the API."""
    totals_at: float | None = None  # when they were last read

    def connecting(self) -> None:
        self.connection, self.retry_at = "connecting", None

    def connected(self, now: float) -> None:
        self.connection, self.connected_at, self.reason = "connected", now, ""

    def disconnected(self, reason: str, retry_at: float) -> None:
        self.connection, self.reason, self.retry_at = "disconnected", reason, retry_at

    def worker(self, worker_id: str) -> dict[str, Any]:
        """A worker as the stream has it, with its capacities when they are known."""
        return {**self.totals.get(worker_id, {}), **self.workers[worker_id]}


def apply_message(state: TopState, message: Mapping[str, Any], snapshot: bool) -> None:
    """A stream message: the first after a connect is the full snapshot (replace), the
    others carry the workers that changed (merge)."""
    if snapshot:
        state.workers = {}
        state.snapshots += 1
    state.messages += 1
    for worker_id, worker in message.items():
        if isinstance(worker, dict):
            state.workers[str(worker_id)] = worker


_TOTAL_FIELDS = ("total_cpu", "total_memory", "total_storage", "total_gpu")


def apply_totals(state: TopState, payload: Any, now: float) -> bool:
    """The answer of ``GET /api/workers`` (a list of workers): keep their capacities.
    Anything else is ignored (False): the view then shows percentages alone."""
    if not isinstance(payload, list):
        return False
    totals: dict[str, dict[str, float]] = {}
    for worker in payload:
        if isinstance(worker, Mapping) and isinstance(worker.get("worker_id"), str):
            known = {name: views.finite(worker.get(name)) for name in _TOTAL_FIELDS}
            totals[worker["worker_id"]] = {k: v for k, v in known.items() if v is not None}
    state.totals, state.totals_at = totals, now
    return True


# -- keys (pure) ------------------------------------------------------------------------------


@dataclass
class TopView:
    """What the user chose with the keys: the order, the help overlay, quitting."""

    sort: str = "id"
    reverse: bool = False
    help: bool = False
    quit: bool = False


def keys_of(data: bytes) -> list[str]:
    """The keys in one read of the terminal. An escape sequence (an arrow or function
    key) is not a list of letters: it is ignored as a whole; a lone Esc is ``\\x1b``."""
    if data.startswith(b"\x1b") and len(data) > 1:
        return []
    return list(data.decode("utf-8", "replace"))


def press(view: TopView, key: str) -> bool:
    """Apply one key to ``view``; True when the frame must be redrawn."""
    key = key.lower()
    if key == "q":
        view.quit = True
    elif key in ("h", "?"):
        view.help = not view.help
    elif key == "\x1b":
        if not view.help:
            return False
        view.help = False
    elif key == "r":
        view.reverse = not view.reverse
    elif key in SORT_BY_KEY:
        view.sort, view.reverse = SORT_BY_KEY[key], False
    else:
        return False
    return True


# -- order (pure) -----------------------------------------------------------------------------

_USAGE_FIELD = {"cpu": "cpu_usage", "mem": "memory_usage", "gpu": "gpu_usage"}


def _number(value: Any) -> float:
    number = views.finite(value)
    return 0.0 if number is None else number


def _sort_value(worker: Mapping[str, Any], key: str) -> tuple[float, ...] | None:
    """What ``key`` orders by, highest first; None when not known (sorted last)."""
    if key in _USAGE_FIELD:
        usage = views.usage(worker, _USAGE_FIELD[key])
        return None if usage is None else (usage,)
    if key == "tasks":
        return (float(len(worker.get("running_tasks") or [])),)
    if key == "state":
        last = views.finite(worker.get("last_update"))
        return None if last is None else (float(bool(worker.get("is_active"))), last)
    return None


def sort_workers(
    workers: Mapping[str, Mapping[str, Any]], key: str, reverse: bool = False
) -> list[Mapping[str, Any]]:
    """``id``: A to Z; the others highest (busiest, most recent) first, ties by id.
    ``reverse`` flips the order; workers whose value is unknown stay last either way."""
    rows = [workers[k] for k in sorted(workers)]
    if key not in SORT_BY_KEY.values() or key == "id":
        return rows[::-1] if reverse else rows
    known = [(value, w) for w in rows if (value := _sort_value(w, key)) is not None]
    unknown = [w for w in rows if _sort_value(w, key) is None]
    known.sort(key=lambda pair: pair[0], reverse=not reverse)  # stable: ties stay by id
    return [w for _, w in known] + unknown


def describe_sort(view: TopView) -> str:
    """``cpu, highest first``: the order in words, for the header."""
    if view.sort == "id":
        return "id, Z to A" if view.reverse else "id, A to Z"
    if view.sort == "state":
        return "state, inactive first" if view.reverse else "state, active first"
    return f"{view.sort}, {'lowest' if view.reverse else 'highest'} first"


# -- rendering (pure) -------------------------------------------------------------------------

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(percent: Any, width: int) -> Text:
    """``████▌░░░  42.0%``: a bar of ``width`` cells, coloured by level, then the value;
    ``-`` and an empty bar when the value is not known (None)."""
    if percent is None:
        return Text.assemble((" " * width, "bright_black"), (f" {views.UNKNOWN:>6}", "dim"))
    value = min(100.0, max(0.0, _number(percent)))
    cells = value / 100.0 * width
    full = int(cells)
    partial = _EIGHTHS[int((cells - full) * 8)] if full < width else ""
    filled = "█" * full + (partial if partial.strip() else "")
    style = views.usage_style(value)
    text = Text()
    text.append(filled, style=style)
    text.append("░" * (width - len(filled)), style="bright_black")
    text.append(f" {_number(percent):5.1f}%", style=style)
    return text


# Room for the capacities next to the bars: " of 128" cores, " 1024/2048" GiB, " of 16"
# GPUs; each column's figures are padded to these widths so the rows line up.
_AMOUNT_WIDTH = {"cpu": 7, "memory": 10, "gpu": 6}
_AMOUNTS = sum(_AMOUNT_WIDTH.values())
# Fixed columns (state 8, tasks 6, seen 8) and the cell padding (2 x 6).
_FIXED = 8 + 6 + 8 + 12
_FIGURE = 7  # " 100.0%" after each bar
_MIN_ID = 10  # the worker column, at least


def _amount(worker: Mapping[str, Any], kind: str) -> str:
    capacity = views.total(worker, f"total_{kind}")
    if capacity is None:
        return ""
    if kind == "memory":
        percent = views.usage(worker, "memory_usage")
        if percent is not None:
            return f" {views.format_gib(capacity * percent / 100)}/{views.format_gib(capacity)}"
        return f" of {views.format_gib(capacity)}"
    return f" of {capacity:g}"


# Network, disk and load columns (the richer telemetry of Python workers): only on wide
# terminals, when some worker sends them; the bars keep at least _MIN_BAR_WITH_IO cells.
_IO_COLUMNS = {"NET in/out": 13, "DISK r/w": 13, "LOAD": 6}
_IO_WIDTH = sum(_IO_COLUMNS.values()) + 2 * len(_IO_COLUMNS)  # with the cell padding
_MIN_BAR_WITH_IO = 10
_IO_KEYS = ("net_rx_bytes_per_sec", "disk_read_bytes_per_sec", "load_avg")


def compact_rate(value: Any) -> str:
    """Bytes a second in at most 6 characters: ``512``, ``30K``, ``1.2M``, ``3.4G``; ``-``."""
    number = views.finite(value)
    if number is None or number < 0:
        return views.UNKNOWN
    for unit in ("", "K", "M", "G", "T"):
        if number < 1000 or unit == "T":
            if unit and number < 10:
                return f"{number:.1f}{unit}"
            return f"{number:.0f}{unit}"
        number /= 1024
    return views.UNKNOWN  # not reached


def io_cells(worker: Mapping[str, Any]) -> list[Text]:
    """NET in/out, DISK read/write and the 1-minute load; ``-`` for what is not known."""
    if not views.has_telemetry(worker):
        return [Text(views.UNKNOWN, style="dim")] * 3
    cells = []
    for first, second in (
        ("net_rx_bytes_per_sec", "net_tx_bytes_per_sec"),
        ("disk_read_bytes_per_sec", "disk_write_bytes_per_sec"),
    ):
        a, b = worker.get(first), worker.get(second)
        if a is None and b is None:
            cells.append(Text(views.UNKNOWN, style="dim"))
        else:
            cells.append(Text(f"{compact_rate(a)}/{compact_rate(b)}"))
    load = worker.get("load_avg")
    one = views.finite(load[0]) if isinstance(load, list) and load else None
    cells.append(Text(views.UNKNOWN, style="dim") if one is None else Text(f"{one:.2f}"))
    return cells


def usage_cell(worker: Mapping[str, Any], kind: str, bar_width: int, amounts: bool) -> Text:
    """A bar, the percentage and, with ``amounts``, the capacity (padded)."""
    if kind == "gpu" and views.total(worker, "total_gpu") == 0:
        return Text("none".rjust(bar_width + _FIGURE), style="dim")  # a machine without GPU
    cell = bar(views.usage(worker, f"{kind}_usage"), bar_width)
    if amounts:
        cell.append(_amount(worker, kind).ljust(_AMOUNT_WIDTH[kind]), style="dim")
    return cell


def _connection_text(state: TopState, now: float) -> Text:
    if state.connection == "connected":
        return Text("● connected", style="bold green")
    if state.connection == "connecting":
        return Text("○ connecting…", style="bold yellow")
    retry = max(0.0, (state.retry_at or now) - now)
    return Text(
        f"✕ disconnected: {state.reason or 'closed'}; retrying in {retry:.1f} s", style="bold red"
    )


def help_panel() -> RenderableType:
    """The keys, shown over the worker list by h or ?."""
    grid = Table.grid(padding=(0, 3))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for key, what in HELP:
        grid.add_row(key, what)
    grid.add_row("", "")
    grid.add_row("units", "memory in GiB (1024³ bytes); CPU in cores; - is not known yet")
    return Panel(grid, title="cloudai top: keys", title_align="left", expand=False)


def render(
    state: TopState,
    now: float,
    width: int = 100,
    sort: str = "id",
    view: TopView | None = None,
    full_ids: bool = False,
) -> RenderableType:
    """One frame, ``width`` columns wide. ``view`` (default: ``sort``, not reversed) is
    the order and the help overlay. ``full_ids`` (one-shot output, a pipe): worker ids
    are never cut; the table grows wider than ``width`` if it must."""
    view = view or TopView(sort=sort)
    merged = {worker_id: state.worker(worker_id) for worker_id in state.workers}
    workers = sort_workers(merged, view.sort, view.reverse)
    active = [w for w in workers if w.get("is_active")]
    tasks = sum(len(w.get("running_tasks") or []) for w in workers)

    def average(name: str) -> float:
        return sum(_number(w.get(name)) for w in active) / len(active) if active else 0.0

    header = Text.assemble(("cloudai top", "bold"), "  ", (state.url, "cyan"), "  ")
    connection = _connection_text(state, now)
    if header.cell_len + connection.cell_len <= width:
        header.append_text(connection)
        lines = [header]
    else:  # a long reason gets a line of its own rather than a broken one
        header.rstrip()
        lines = [header, connection]
    sort_words = Text.assemble("  ", ("sort: ", "bold"), describe_sort(view))
    if lines[-1].cell_len + sort_words.cell_len <= width:  # else the column's arrow says it
        lines[-1].append_text(sort_words)
    totals = Text.assemble(
        ("workers ", "bold"),
        f"{len(workers)} ",
        (f"({len(active)} active)", "green" if active else "dim"),
        ("   tasks ", "bold"),
        str(tasks),
        ("   avg cpu ", "bold"),
        f"{average('cpu_usage'):.1f}%",
        ("   mem ", "bold"),
        f"{average('memory_usage'):.1f}%",
        ("   gpu ", "bold"),
        f"{average('gpu_usage'):.1f}%",
    )
    cores = sum(_number(w.get("total_cpu")) for w in workers)
    memory = sum(_number(w.get("total_memory")) for w in workers)
    capacity = Text.assemble(
        ("   capacity ", "bold"), f"{cores:g} cores, {views.format_gib(memory)} GiB"
    )
    if (cores or memory) and totals.cell_len + capacity.cell_len <= width:
        totals.append_text(capacity)

    parts: list[RenderableType] = [*lines, totals, Text("")]
    if view.help:
        parts.append(help_panel())
    else:
        parts.append(_table(state, workers, now, width, full_ids, view))
        if not workers:
            waiting = state.connection == "connected" and state.snapshots
            parts.append(Text("no workers yet" if waiting else "waiting for data…", style="dim"))
    parts.append(Text(""))
    parts.append(
        Text(
            "q quit  h help  sort: c cpu  m mem  g gpu  t tasks  i id  s state  r reverse",
            style="dim",
        )
    )
    return Group(*parts)


def _table(
    state: TopState,
    workers: list[Mapping[str, Any]],
    now: float,
    width: int,
    full_ids: bool,
    view: TopView,
) -> Table:
    id_width = _MIN_ID
    if full_ids and workers:
        id_width = max(_MIN_ID, *(len(str(w.get("worker_id", "?"))) for w in workers))
    # Capacities when some are known and the bars keep at least 3 cells with them.
    known = any(views.total(w, f"total_{k}") is not None for w in workers for k in _AMOUNT_WIDTH)
    amounts = known and (width - _FIXED - id_width - 3 * _FIGURE - _AMOUNTS) // 3 >= 3
    room = width - _FIXED - id_width - 3 * _FIGURE - (_AMOUNTS if amounts else 0)
    io = (room - _IO_WIDTH) // 3 >= _MIN_BAR_WITH_IO and any(
        w.get(key) is not None for w in workers for key in _IO_KEYS
    )
    if io:
        room -= _IO_WIDTH
    # Below 3 cells a bar says nothing: narrow terminals get the figures only.
    bar_width = 0 if room // 3 < 3 else min(20, room // 3)
    if full_ids:  # never cut an id: grow past the width if it must
        width = max(width, _FIXED + id_width + 3 * (bar_width + _FIGURE) + (_IO_WIDTH if io else 0))
    table = Table(
        expand=True,
        width=width if full_ids else None,
        box=None,
        header_style="bold reverse",
        pad_edge=False,
        style="" if state.connection == "connected" else "dim",  # stale while disconnected
    )
    extra = _AMOUNT_WIDTH if amounts else dict.fromkeys(_AMOUNT_WIDTH, 0)
    # The sorted column's header carries the direction: ▼ highest (or A) first.
    descending = view.reverse if view.sort == "id" else not view.reverse
    arrow = "▼" if descending else "▲"

    def title(name: str, order: str) -> str:
        return f"{name}{arrow}" if view.sort == order else name

    table.add_column(
        title("WORKER", "id"),
        no_wrap=True,
        overflow="fold" if full_ids else "ellipsis",
        ratio=1,
        min_width=id_width if full_ids else 6,
    )
    table.add_column(title("STATE", "state"), no_wrap=True, width=8)
    table.add_column(title("CPU", "cpu"), no_wrap=True, width=bar_width + _FIGURE + extra["cpu"])
    mem = title("MEM GiB" if amounts else "MEM", "mem")
    table.add_column(mem, no_wrap=True, width=bar_width + _FIGURE + extra["memory"])
    table.add_column(title("GPU", "gpu"), no_wrap=True, width=bar_width + _FIGURE + extra["gpu"])
    if io:
        for name, column_width in _IO_COLUMNS.items():
            table.add_column(name, justify="right", no_wrap=True, width=column_width)
    table.add_column(title("TASKS", "tasks"), justify="right", no_wrap=True, width=6)
    table.add_column("SEEN", justify="right", no_wrap=True, width=8)
    for worker in workers:
        is_active = bool(worker.get("is_active"))
        last = views.finite(worker.get("last_update"))
        table.add_row(
            views.plain(worker.get("worker_id", "?")),
            Text("active", style="green") if is_active else Text("inactive", style="red"),
            usage_cell(worker, "cpu", bar_width, amounts),
            usage_cell(worker, "memory", bar_width, amounts),
            usage_cell(worker, "gpu", bar_width, amounts),
            *(io_cells(worker) if io else []),
            str(len(worker.get("running_tasks") or [])),
            views.UNKNOWN if last is None else views.format_age(now - last),
        )
    return table


# -- the stream -------------------------------------------------------------------------------


async def follow(
    state: TopState,
    url: str,
    changed: Callable[[], None],
    stop: asyncio.Event,
    backoff: Backoff | None = None,
    tls: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Keep ``state`` up to date from the stream; reconnect with back-off until ``stop``.
    ``tls``: aiohttp's ``ssl`` (the CA of a wss URL); ``headers``: the token's."""
    backoff = backoff or Backoff(initial=0.5, maximum=10.0)
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            state.connecting()
            changed()
            try:
                async with http.ws_connect(url, heartbeat=30, ssl=tls, headers=headers) as ws:
                    state.connected(time.time())
                    backoff.reset()
                    changed()
                    snapshot = True
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        message = orjson.loads(msg.data)
                        if isinstance(message, dict):
                            apply_message(state, message, snapshot)
                            snapshot = False
                            changed()
                code = ws.close_code
                reason = "the master is shutting down" if code == 1001 else f"closed ({code})"
            except aiohttp.ClientConnectorError as exc:
                refused = isinstance(exc.os_error, ConnectionRefusedError)
                why = "connection refused" if refused else exc.os_error.strerror or exc.os_error
                reason = f"cannot connect: {why}"
            except aiohttp.WSServerHandshakeError as exc:
                reason = f"refused: HTTP {exc.status} {exc.message}"
            except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
                reason = str(exc) or type(exc).__name__
            delay = backoff.next_delay()
            state.disconnected(reason, time.time() + delay)
            changed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


Fetch = Callable[[], Awaitable[Any]]


def workers_fetcher(
    http: aiohttp.ClientSession,
    api_url: str,
    timeout: float = 5.0,
    tls: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
) -> Fetch:
    """``GET {api_url}/api/workers`` as parsed JSON; None when the master says no."""

    async def fetch() -> Any:
        async with http.get(
            f"{api_url.rstrip('/')}/api/workers",
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"Accept": "application/json", **(headers or {})},
            ssl=tls,
        ) as response:
            if response.status != 200:
                return None
            return orjson.loads(await response.read())

    return fetch


async def fetch_totals(state: TopState, fetch: Fetch, now: Callable[[], float] = time.time) -> bool:
    """One read of the capacities; False (and the ones known before kept) on failure."""
    try:
        payload = await fetch()
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return False
    return apply_totals(state, payload, now())


async def poll_totals(
    state: TopState,
    fetch: Fetch,
    changed: Callable[[], None],
    stop: asyncio.Event,
    interval: float = TOTALS_INTERVAL,
) -> None:
    """Read the capacities now and every ``interval`` seconds until ``stop``."""
    while not stop.is_set():
        if await fetch_totals(state, fetch):
            changed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


# -- the terminal -----------------------------------------------------------------------------


@contextlib.contextmanager
def keys(on_key: Callable[[str], None]) -> Iterator[None]:
    """stdin in cbreak mode while the view runs; each key pressed goes to ``on_key``
    (the end of stdin reads as ``q``)."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        for key in keys_of(data) if data else ["q"]:
            on_key(key)

    tty.setcbreak(fd)
    loop.add_reader(fd, on_readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_top(
    url: str,
    sort: str = "id",
    console: Console | None = None,
    api_url: str | None = None,
    reverse: bool = False,
    tls: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
) -> int:
    from rich.live import Live

    console = console or Console(markup=False)
    state = TopState(url)
    view = TopView(sort=sort, reverse=reverse)
    stop = asyncio.Event()
    dirty = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    def on_key(key: str) -> None:
        if press(view, key):
            if view.quit:
                stop.set()
            dirty.set()

    def frame() -> RenderableType:
        return render(state, time.time(), console.width, view=view)

    async with aiohttp.ClientSession() as http:
        tasks = [loop.create_task(follow(state, url, dirty.set, stop, tls=tls, headers=headers))]
        if api_url:
            fetch = workers_fetcher(http, api_url, tls=tls, headers=headers)
            tasks.append(loop.create_task(poll_totals(state, fetch, dirty.set, stop)))
        try:
            with (
                keys(on_key),
                Live(frame(), console=console, screen=True, auto_refresh=False) as live,
            ):
                while not stop.is_set():
                    # Redraw on news (at most ~8 times a second) and at least once a second.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(dirty.wait(), 1.0)
                    dirty.clear()
                    live.update(frame(), refresh=True)
                    if stop.is_set():
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.125)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
    return 0


async def run_once(
    url: str,
    sort: str = "id",
    timeout: float = 10.0,
    api_url: str | None = None,
    reverse: bool = False,
    tls: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Connect, wait for the snapshot, print one frame (for scripts and pipes): ids whole,
    the capacities when the master gave them in time."""
    console = Console(markup=False)
    state = TopState(url)
    stop = asyncio.Event()

    def changed() -> None:
        if state.snapshots:
            stop.set()

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        totals = loop.create_task(
            fetch_totals(
                state, workers_fetcher(http, api_url, timeout=3.0, tls=tls, headers=headers)
            )
            if api_url
            else asyncio.sleep(0)
        )
        stream = loop.create_task(
            follow(
                state,
                url,
                changed,
                stop,
                Backoff(initial=0.2, maximum=1.0),
                tls=tls,
                headers=headers,
            )
        )
        try:
            await asyncio.wait_for(stop.wait(), timeout)
        except TimeoutError:
            sys.stderr.write(f"error: no data from {url} in {timeout:g} s: {state.reason}\n")
            return 3
        finally:
            stop.set()
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(totals, 5.0)
    view = TopView(sort=sort, reverse=reverse)
    console.print(render(state, time.time(), console.width, view=view, full_ids=True), crop=False)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        settings, tls, headers = stream_settings(args)
    except (SettingsError, ApiError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    api_url = base_url(settings.url)
    url = stream_url(api_url, args.worker)
    reverse = bool(getattr(args, "reverse", False))
    link: dict[str, Any] = {"api_url": api_url, "reverse": reverse, "tls": tls, "headers": headers}
    try:
        if args.once or not sys.stdout.isatty():  # a pipe gets one frame, not a screen
            return asyncio.run(run_once(url, args.sort, **link))
        return asyncio.run(run_top(url, args.sort, **link))
    except KeyboardInterrupt:
        return 0
