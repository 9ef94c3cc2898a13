"""`cloudai top`: a live full-screen view of the cluster, like htop, from the WebSocket
telemetry stream (``ws://HOST:PORT/ws/telemetry``).

Per worker: state, CPU/memory/GPU bars, running tasks, last-seen age; a header with
totals and the connection state. Reconnects with capped back-off; q or Ctrl-C quits.
The state and its rendering are pure (``TopState``, ``apply_message``, ``render``) and
unit-tested; ``run_top`` is the thin terminal layer (rich ``Live`` on the alternate
screen, stdin in cbreak mode for the q key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from cloudai import views
from cloudai.backoff import Backoff
from cloudai.cli.api_client import DEFAULT_URL, base_url
from cloudai.cli.watch import stream_url

SORT_KEYS = ("id", "cpu", "mem", "gpu", "tasks")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "top",
        help="live full-screen view of the cluster (q quits)",
        description="Live view of the cluster from the master's WebSocket telemetry stream.",
    )
    p.add_argument(
        "--url", help=f"the master's HTTP address (env CLOUDAI_URL; default {DEFAULT_URL})"
    )
    p.add_argument("--worker", metavar="WORKER_ID", help="only this worker")
    p.add_argument("--sort", choices=SORT_KEYS, default="id", help="row order (default id)")
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

    def connecting(self) -> None:
        self.connection, self.retry_at = "connecting", None

    def connected(self, now: float) -> None:
        self.connection, self.connected_at, self.reason = "connected", now, ""

    def disconnected(self, reason: str, retry_at: float) -> None:
        self.connection, self.reason, self.retry_at = "disconnected", reason, retry_at


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


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def sort_workers(workers: Mapping[str, Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    rows = [workers[k] for k in sorted(workers)]
    field_name = {"cpu": "cpu_usage", "mem": "memory_usage", "gpu": "gpu_usage"}.get(key)
    if field_name:
        rows.sort(key=lambda w: -_number(w.get(field_name)))
    elif key == "tasks":
        rows.sort(key=lambda w: -len(w.get("running_tasks") or []))
    return rows


# -- rendering (pure) -------------------------------------------------------------------------

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(percent: Any, width: int) -> Text:
    """``████▌░░░  42.0%``: a bar of ``width`` cells, coloured by level, then the value."""
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


def _connection_text(state: TopState, now: float) -> Text:
    if state.connection == "connected":
        return Text("● connected", style="bold green")
    if state.connection == "connecting":
        return Text("○ connecting…", style="bold yellow")
    retry = max(0.0, (state.retry_at or now) - now)
    return Text(
        f"✕ disconnected: {state.reason or 'closed'}; retrying in {retry:.1f} s", style="bold red"
    )


def render(state: TopState, now: float, width: int = 100, sort: str = "id") -> RenderableType:
    workers = sort_workers(state.workers, sort)
    active = [w for w in workers if w.get("is_active")]
    tasks = sum(len(w.get("running_tasks") or []) for w in workers)

    def average(name: str) -> float:
        return sum(_number(w.get(name)) for w in active) / len(active) if active else 0.0

    header = Text.assemble(
        ("cloudai top", "bold"), "  ", (state.url, "cyan"), "  ", _connection_text(state, now)
    )
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
    # Fixed columns (state 8, tasks 5, seen 8), cell padding (2 x 6), a worker id of at
    # least 10, and three bars with their " 100.0%" (7) share the width.
    # Below 3 cells a bar says nothing: narrow terminals get the figures only.
    bar_width = (width - 43 - 21) // 3
    bar_width = 0 if bar_width < 3 else min(20, bar_width)
    table = Table(
        expand=True,
        box=None,
        header_style="bold reverse",
        pad_edge=False,
        style="" if state.connection == "connected" else "dim",  # stale while disconnected
    )
    table.add_column("WORKER", no_wrap=True, overflow="ellipsis", ratio=1, min_width=6)
    table.add_column("STATE", no_wrap=True, width=8)
    table.add_column("CPU", no_wrap=True, width=bar_width + 7)
    table.add_column("MEM", no_wrap=True, width=bar_width + 7)
    table.add_column("GPU", no_wrap=True, width=bar_width + 7)
    table.add_column("TASKS", justify="right", no_wrap=True, width=5)
    table.add_column("SEEN", justify="right", no_wrap=True, width=8)
    for worker in workers:
        is_active = bool(worker.get("is_active"))
        last = worker.get("last_update")
        table.add_row(
            views.plain(worker.get("worker_id", "?")),
            Text("active", style="green") if is_active else Text("inactive", style="red"),
            bar(worker.get("cpu_usage"), bar_width),
            bar(worker.get("memory_usage"), bar_width),
            bar(worker.get("gpu_usage"), bar_width),
            str(len(worker.get("running_tasks") or [])),
            "-" if last is None else views.format_age(now - _number(last)),
        )
    parts: list[RenderableType] = [header, totals, Text(""), table]
    if not workers:
        waiting = state.connection == "connected" and state.snapshots
        parts.append(Text("no workers yet" if waiting else "waiting for data…", style="dim"))
    parts.append(Text(""))
    parts.append(Text("q quits   sort: " + sort, style="dim"))
    return Group(*parts)


# -- the stream -------------------------------------------------------------------------------


async def follow(
    state: TopState,
    url: str,
    changed: Callable[[], None],
    stop: asyncio.Event,
    backoff: Backoff | None = None,
) -> None:
    """Keep ``state`` up to date from the stream; reconnect with back-off until ``stop``."""
    backoff = backoff or Backoff(initial=0.5, maximum=10.0)
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            state.connecting()
            changed()
            try:
                async with http.ws_connect(url, heartbeat=30) as ws:
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


# -- the terminal -----------------------------------------------------------------------------


@contextlib.contextmanager
def keys(stop: asyncio.Event) -> Iterator[None]:
    """stdin in cbreak mode while the view runs; q or Q sets ``stop``."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data or b"q" in data.lower():
            stop.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_top(url: str, sort: str = "id", console: Console | None = None) -> int:
    from rich.live import Live

    console = console or Console(markup=False)
    state = TopState(url)
    stop = asyncio.Event()
    dirty = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    def frame() -> RenderableType:
        return render(state, time.time(), console.width, sort)

    stream = loop.create_task(follow(state, url, dirty.set, stop))
    try:
        with keys(stop), Live(frame(), console=console, screen=True, auto_refresh=False) as live:
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
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0


async def run_once(url: str, sort: str = "id", timeout: float = 10.0) -> int:
    """Connect, wait for the snapshot, print one frame (for scripts and pipes)."""
    console = Console(markup=False)
    state = TopState(url)
    stop = asyncio.Event()

    def changed() -> None:
        if state.snapshots:
            stop.set()

    stream = asyncio.get_running_loop().create_task(
        follow(state, url, changed, stop, Backoff(initial=0.2, maximum=1.0))
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
    console.print(render(state, time.time(), console.width, sort))
    return 0


def run(args: argparse.Namespace) -> int:
    url = stream_url(base_url(args.url), args.worker)
    try:
        if args.once or not sys.stdout.isatty():  # a pipe gets one frame, not a screen
            return asyncio.run(run_once(url, args.sort))
        return asyncio.run(run_top(url, args.sort))
    except KeyboardInterrupt:
        return 0
